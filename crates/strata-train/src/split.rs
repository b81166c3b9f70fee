//! Hold-out splits that do not leak. Telemetry rows come in time order and
//! neighbouring rows are nearly copies of each other, so a random split
//! would score a model on rows it has all but seen: the default hold-out is
//! the last rows in time. When rows come from several devices, holding out
//! whole devices tells how a model does on a machine it never saw.

use std::collections::BTreeSet;

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// A training table and its hold-out, both keeping the original row order.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Rows to train on.
    pub train: Dataset,
    /// Rows to evaluate on.
    pub holdout: Dataset,
    /// Indices, in the original table, of the hold-out rows.
    pub holdout_rows: Vec<usize>,
}

fn check_fraction(holdout_fraction: f64) -> Result<()> {
    if holdout_fraction.is_finite() && holdout_fraction > 0.0 && holdout_fraction < 1.0 {
        Ok(())
    } else {
        Err(Error::Split(format!(
            "holdout_fraction must be between 0 and 1 (exclusive), got {holdout_fraction}"
        )))
    }
}

/// How many of `n` things go to the hold-out: the nearest to
/// `n * fraction`, but at least one and never all.
fn holdout_count(n: usize, fraction: f64) -> usize {
    ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
}

fn split_rows(data: &Dataset, holdout: &[bool]) -> Split {
    let (mut train_rows, mut holdout_rows) = (Vec::new(), Vec::new());
    for (i, &h) in holdout.iter().enumerate() {
        if h {
            holdout_rows.push(i);
        } else {
            train_rows.push(i);
        }
    }
    Split {
        train: data.select_rows(&train_rows),
        holdout: data.select_rows(&holdout_rows),
        holdout_rows,
    }
}

/// Holds out the last `holdout_fraction` of the rows (rows are in time
/// order); at least one row on each side.
pub fn time_holdout(data: &Dataset, holdout_fraction: f64) -> Result<Split> {
    check_fraction(holdout_fraction)?;
    let n = data.n_rows();
    if n < 2 {
        return Err(Error::Split(format!("{n} row(s): need at least 2")));
    }
    let first = n - holdout_count(n, holdout_fraction);
    let mask: Vec<bool> = (0..n).map(|i| i >= first).collect();
    Ok(split_rows(data, &mask))
}

/// Holds out whole groups (e.g. devices): `groups[i]` is row `i`'s group.
/// The distinct groups are shuffled with `seed` and the first
/// `holdout_fraction` of them (at least one, never all) are held out.
pub fn group_holdout<G: Ord>(
    data: &Dataset,
    groups: &[G],
    holdout_fraction: f64,
    seed: u64,
) -> Result<Split> {
    check_fraction(holdout_fraction)?;
    if groups.len() != data.n_rows() {
        return Err(Error::Split(format!(
            "{} group ids for {} rows",
            groups.len(),
            data.n_rows()
        )));
    }
    let mut distinct: Vec<&G> = groups.iter().collect::<BTreeSet<_>>().into_iter().collect();
    if distinct.len() < 2 {
        return Err(Error::Split(
            "all rows are in one group; holding out a group needs at least 2".into(),
        ));
    }
    Rng::new(seed, 0x5EED_5917).shuffle(&mut distinct);
    let held: BTreeSet<&G> = distinct[..holdout_count(distinct.len(), holdout_fraction)]
        .iter()
        .copied()
        .collect();
    let mask: Vec<bool> = groups.iter().map(|g| held.contains(g)).collect();
    Ok(split_rows(data, &mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: usize) -> Dataset {
        Dataset::new(
            vec!["x".into()],
            (0..n).map(|i| i as f32).collect(),
            (0..n).map(|i| 10.0 * i as f32).collect(),
        )
        .unwrap()
    }

    #[test]
    fn time_holdout_takes_the_last_rows() {
        let s = time_holdout(&table(10), 0.25).unwrap();
        // 2.5 rounds to 3 (away from zero).
        assert_eq!(s.holdout_rows, vec![7, 8, 9]);
        assert_eq!(s.holdout.features(), &[7.0, 8.0, 9.0]);
        assert_eq!(s.train.n_rows(), 7);
        assert_eq!(s.train.target()[6], 60.0);
    }

    #[test]
    fn time_holdout_keeps_a_row_on_each_side() {
        assert_eq!(time_holdout(&table(3), 0.01).unwrap().holdout_rows, vec![2]);
        assert_eq!(time_holdout(&table(3), 0.99).unwrap().train.n_rows(), 1);
        assert!(time_holdout(&table(1), 0.5).is_err());
        assert!(time_holdout(&table(5), 0.0).is_err());
        assert!(time_holdout(&table(5), 1.0).is_err());
        assert!(time_holdout(&table(5), f64::NAN).is_err());
    }

    #[test]
    fn group_holdout_keeps_groups_whole_and_is_seeded() {
        let data = table(12);
        let groups: Vec<&str> = (0..12).map(|i| ["a", "b", "c", "d"][i % 4]).collect();
        let s = group_holdout(&data, &groups, 0.5, 42).unwrap();
        assert_eq!(s.holdout.n_rows(), 6);
        let held: BTreeSet<&str> = s.holdout_rows.iter().map(|&i| groups[i]).collect();
        assert_eq!(held.len(), 2);
        for (i, g) in groups.iter().enumerate() {
            assert_eq!(s.holdout_rows.contains(&i), held.contains(g));
        }
        assert_eq!(s, group_holdout(&data, &groups, 0.5, 42).unwrap());
        // Some other seed picks other groups.
        assert!((0..20).any(|seed| {
            group_holdout(&data, &groups, 0.5, seed)
                .unwrap()
                .holdout_rows
                != s.holdout_rows
        }));
    }

    #[test]
    fn group_holdout_refuses_one_group_and_bad_lengths() {
        let data = table(4);
        assert!(group_holdout(&data, &[1, 1, 1, 1], 0.5, 0).is_err());
        assert!(group_holdout(&data, &[1, 2], 0.5, 0).is_err());
    }
}
