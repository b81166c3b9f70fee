//! A sample of one numeric feature, sorted, with its non-finite values
//! counted and left out.

/// The finite values of one feature, sorted ascending.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    sorted: Vec<f64>,
    dropped: usize,
}

impl Sample {
    /// Keeps the finite values of `values` (NaN and ±inf are counted in
    /// [`Sample::dropped`]) and sorts them.
    pub fn new(values: impl IntoIterator<Item = f64>) -> Self {
        let mut dropped = 0;
        let mut sorted: Vec<f64> = values
            .into_iter()
            .filter(|v| {
                let keep = v.is_finite();
                dropped += usize::from(!keep);
                keep
            })
            .collect();
        sorted.sort_unstable_by(f64::total_cmp);
        Sample { sorted, dropped }
    }

    /// The finite values, ascending.
    pub fn values(&self) -> &[f64] {
        &self.sorted
    }

    /// How many finite values there are.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// True when no finite value is left.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// How many values were NaN or infinite.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The smallest and largest value (None when empty).
    pub fn range(&self) -> Option<(f64, f64)> {
        Some((*self.sorted.first()?, *self.sorted.last()?))
    }

    /// How many values are `<= x` (`side="right"` in NumPy's terms).
    pub fn count_le(&self, x: f64) -> usize {
        self.sorted.partition_point(|&v| v <= x)
    }

    /// How many values are `< x` (`side="left"`).
    pub fn count_lt(&self, x: f64) -> usize {
        self.sorted.partition_point(|&v| v < x)
    }

    /// How many distinct values there are.
    pub fn distinct(&self) -> usize {
        let mut n = 0;
        let mut last = None;
        for &v in &self.sorted {
            if last != Some(v) {
                n += 1;
                last = Some(v);
            }
        }
        n
    }

    /// Population standard deviation (`np.std`, ddof 0).
    pub fn std(&self) -> f64 {
        let n = self.sorted.len() as f64;
        let mean = self.sorted.iter().sum::<f64>() / n;
        let ss: f64 = self.sorted.iter().map(|v| (v - mean) * (v - mean)).sum();
        (ss / n).sqrt()
    }
}
