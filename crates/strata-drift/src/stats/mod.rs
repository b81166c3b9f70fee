//! Two-sample drift statistics between a reference sample and a current
//! window, with Evidently's definitions, binning and thresholds, so a
//! result here can be compared with an Evidently report on the same data.
//!
//! | test | value | drift when | default threshold |
//! | --- | --- | --- | --- |
//! | `ks` | two-sided p-value (`scipy.stats.ks_2samp`) | value <= threshold | 0.05 |
//! | `wasserstein` | W1 / max(std(reference), 0.001) | value >= threshold | 0.1 |
//! | `jensenshannon` | JS distance over Evidently's bins | value >= threshold | 0.1 |
//! | `psi` | PSI over Evidently's bins, empty bins filled | value >= threshold | 0.1 |
//! | `chisquare` | p-value of the category counts | value < threshold | 0.05 |
//!
//! The KS p-value is exact up to 10,000 values per sample and asymptotic
//! above, with SciPy's methods in both ranges.

mod binning;
mod chisquare;
mod divergence;
mod kolmogorov;
mod ks;
mod wasserstein;

use std::hash::Hash;

use serde::{Deserialize, Serialize};

pub(crate) use binning::fill as fill_zeroes;
pub use binning::{Binned, bin_categories, bin_numeric, histogram, sturges_edges};
pub use chisquare::{ChiSquareResult, chi_square};
pub use divergence::{jensen_shannon, psi};
pub use ks::{KsResult, ks_2samp};
pub use wasserstein::{wasserstein_distance, wasserstein_normed};

use crate::{DriftError, Sample};

/// A drift statistic, by Evidently's name for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatTest {
    /// Kolmogorov-Smirnov p-value.
    Ks,
    /// Wasserstein distance normed by the reference's standard deviation.
    Wasserstein,
    /// Jensen-Shannon distance.
    #[serde(rename = "jensenshannon")]
    JensenShannon,
    /// Population stability index.
    Psi,
    /// Chi-squared p-value (categories).
    #[serde(rename = "chisquare")]
    ChiSquare,
}

impl StatTest {
    /// Every test.
    pub const ALL: [StatTest; 5] = [
        StatTest::Ks,
        StatTest::Wasserstein,
        StatTest::JensenShannon,
        StatTest::Psi,
        StatTest::ChiSquare,
    ];

    /// Evidently's name (`ks`, `wasserstein`, `jensenshannon`, `psi`,
    /// `chisquare`).
    pub fn name(self) -> &'static str {
        match self {
            StatTest::Ks => "ks",
            StatTest::Wasserstein => "wasserstein",
            StatTest::JensenShannon => "jensenshannon",
            StatTest::Psi => "psi",
            StatTest::ChiSquare => "chisquare",
        }
    }

    /// The test named `name`, if any.
    pub fn from_name(name: &str) -> Option<StatTest> {
        StatTest::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Evidently's default threshold.
    pub fn default_threshold(self) -> f64 {
        match self {
            StatTest::Ks | StatTest::ChiSquare => 0.05,
            StatTest::Wasserstein | StatTest::JensenShannon | StatTest::Psi => 0.1,
        }
    }

    /// Whether `value` means drift at `threshold` (p-values drift when
    /// small, distances when large; the comparisons are Evidently's).
    pub fn is_drift(self, value: f64, threshold: f64) -> bool {
        match self {
            StatTest::Ks => value <= threshold,
            StatTest::ChiSquare => value < threshold,
            StatTest::Wasserstein | StatTest::JensenShannon | StatTest::Psi => value >= threshold,
        }
    }

    /// Evidently's choice for a numeric feature when none is set: small
    /// references (<= 1,000 values) get KS, or chi-squared with five
    /// distinct values or fewer; larger ones Wasserstein, or Jensen-Shannon
    /// with five or fewer. (For two distinct values or fewer Evidently uses
    /// a z-test of proportions; this gives chi-squared there.)
    pub fn default_for_numeric(reference: &Sample, current: &Sample) -> StatTest {
        let distinct =
            Sample::new(reference.values().iter().chain(current.values()).copied()).distinct();
        match (reference.len() <= 1000, distinct <= 5) {
            (true, true) => StatTest::ChiSquare,
            (true, false) => StatTest::Ks,
            (false, true) => StatTest::JensenShannon,
            (false, false) => StatTest::Wasserstein,
        }
    }
}

/// One drift statistic on one feature.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DriftScore {
    /// Which statistic.
    pub test: StatTest,
    /// Its value (a p-value or a distance, see [`StatTest`]).
    pub value: f64,
    /// The threshold it was judged against.
    pub threshold: f64,
    /// Whether it means drift.
    pub drifted: bool,
}

impl DriftScore {
    fn new(test: StatTest, value: f64, threshold: Option<f64>) -> DriftScore {
        let threshold = threshold.unwrap_or(test.default_threshold());
        DriftScore {
            test,
            value,
            threshold,
            drifted: test.is_drift(value, threshold),
        }
    }
}

/// Runs `test` on a numeric feature (chi-squared counts each distinct
/// value as a category). `threshold` None takes the test's default.
pub fn numeric_drift(
    test: StatTest,
    reference: &Sample,
    current: &Sample,
    threshold: Option<f64>,
) -> Result<DriftScore, DriftError> {
    if reference.is_empty() {
        return Err(DriftError::Empty("reference"));
    }
    if current.is_empty() {
        return Err(DriftError::Empty("current"));
    }
    let value = match test {
        StatTest::Ks => ks_2samp(reference, current).p_value,
        StatTest::Wasserstein => wasserstein_normed(reference, current),
        StatTest::JensenShannon => {
            let b = bin_numeric(reference, current, false);
            jensen_shannon(&b.reference, &b.current)
        }
        StatTest::Psi => {
            let b = bin_numeric(reference, current, true);
            psi(&b.reference, &b.current)
        }
        StatTest::ChiSquare => {
            let (r, c) = binning::count_keys(
                reference.values().iter().map(|v| binning::OrdF64(*v)),
                current.values().iter().map(|v| binning::OrdF64(*v)),
            );
            chi_square(&r, &c).p_value
        }
    };
    Ok(DriftScore::new(test, value, threshold))
}

/// Runs `test` on a categorical feature. KS and Wasserstein need numbers
/// and are refused.
pub fn categorical_drift<K: Ord + Hash + Clone>(
    test: StatTest,
    reference: &[K],
    current: &[K],
    threshold: Option<f64>,
) -> Result<DriftScore, DriftError> {
    if reference.is_empty() {
        return Err(DriftError::Empty("reference"));
    }
    if current.is_empty() {
        return Err(DriftError::Empty("current"));
    }
    let value = match test {
        StatTest::Ks | StatTest::Wasserstein => {
            return Err(DriftError::NotCategorical(test.name()));
        }
        StatTest::JensenShannon => {
            let b = bin_categories(reference, current, false);
            jensen_shannon(&b.reference, &b.current)
        }
        StatTest::Psi => {
            let b = bin_categories(reference, current, true);
            psi(&b.reference, &b.current)
        }
        StatTest::ChiSquare => {
            let (r, c) = binning::count_keys(reference.iter(), current.iter());
            chi_square(&r, &c).p_value
        }
    };
    Ok(DriftScore::new(test, value, threshold))
}
