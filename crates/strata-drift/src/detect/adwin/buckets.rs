//! ADWIN's exponential histogram, kept as a tree of aligned blocks.
//!
//! River keeps rows of buckets: row i holds summaries of 2^i values, and
//! when a row reaches `max_buckets + 1` its two oldest buckets merge into
//! one of the next row. Buckets enter a row in order and always leave it
//! in pairs, oldest first, so the k-th bucket ever to reach row i holds
//! exactly values `k·2^i .. (k+1)·2^i` of the stream, and is the merge of
//! buckets 2k and 2k+1 of row i-1. Which buckets a row holds is therefore
//! a function of how many values have arrived ([`Buckets::rows`]), and a
//! bucket's sum and squared deviations can be computed as soon as its
//! values are in, with the same floats as river's merge, whenever river
//! would make it. Until a detection (after which the detector starts
//! afresh) nothing else changes the rows.
//!
//! So each level keeps the last few blocks in a ring, and values arrive
//! 32 at a time in one pass of plain array arithmetic that the compiler
//! vectorizes: pairs, then quads, up to the block of 32.

/// Values taken in one aligned pass by [`Buckets::push_block`].
pub(super) const BLOCK: usize = 32;

/// The bucket tree.
#[derive(Debug, Clone)]
pub(super) struct Buckets {
    /// Buckets a row holds at most, plus one (river's `max_buckets + 1`).
    cap: u64,
    /// Ring slots per level, a power of two.
    ring: usize,
    /// Values since the start.
    n: u64,
    /// Level i, block k at `i * ring + k % ring`: the sum of its 2^i values.
    totals: Vec<f64>,
    /// The same slots: each block's sum of squared deviations.
    variances: Vec<f64>,
}

/// One row as river holds it: the blocks `lo..hi` of its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Row {
    pub lo: u64,
    pub hi: u64,
}

impl Row {
    pub fn len(self) -> u64 {
        self.hi - self.lo
    }
}

/// River's merge of two neighbouring buckets of level `i` (their sums and
/// squared deviations), in river's order. Dividing by a power of two and
/// multiplying by its inverse round the same exact value.
#[inline(always)]
fn merge(n: f64, inv: f64, t0: f64, t1: f64, v0: f64, v1: f64) -> (f64, f64) {
    let (mu0, mu1) = (t0 * inv, t1 * inv);
    (t0 + t1, v0 + v1 + n * 0.5 * (mu0 - mu1) * (mu0 - mu1))
}

/// `2^i` and `2^-i`.
#[inline(always)]
fn scale(i: usize) -> (f64, f64) {
    let n = (1u64 << i) as f64;
    (n, 1.0 / n)
}

/// Merges neighbouring pairs of `t`/`v` (level `i`) into `mt`/`mv`.
#[inline(always)]
fn merge_pairs<const N: usize, const H: usize>(
    i: usize,
    t: &[f64; N],
    v: &[f64; N],
    mt: &mut [f64; H],
    mv: &mut [f64; H],
) {
    let (n, inv) = scale(i);
    for k in 0..H {
        (mt[k], mv[k]) = merge(n, inv, t[2 * k], t[2 * k + 1], v[2 * k], v[2 * k + 1]);
    }
}

impl Buckets {
    /// An empty tree for rows of at most `max_buckets` buckets.
    pub fn new(max_buckets: usize) -> Self {
        let cap = max_buckets.max(1) + 1;
        // A level needs its blocks from the oldest its row holds to the
        // newest complete one: fewer than `cap` in the row and fewer than
        // `cap` still spread over the rows below (they hold under
        // cap·2^i values). A whole block of 32 lands in level 0 at once.
        let ring = (2 * cap + 2).next_power_of_two().max(BLOCK);
        Buckets {
            cap: cap as u64,
            ring,
            n: 0,
            totals: Vec::new(),
            variances: Vec::new(),
        }
    }

    /// Values taken so far.
    pub fn count(&self) -> u64 {
        self.n
    }

    fn slot(&self, level: usize, block: u64) -> usize {
        level * self.ring + (block as usize & (self.ring - 1))
    }

    /// The sum and squared deviations of block `block` of level `level`.
    #[inline]
    pub fn get(&self, level: usize, block: u64) -> (f64, f64) {
        let s = self.slot(level, block);
        (self.totals[s], self.variances[s])
    }

    /// Level `level`'s ring of sums: block k at `k % len`.
    #[inline(always)]
    pub fn ring(&self, level: usize) -> &[f64] {
        &self.totals[level * self.ring..(level + 1) * self.ring]
    }

    #[inline]
    fn set(&mut self, level: usize, block: u64, total: f64, variance: f64) {
        if level * self.ring >= self.totals.len() {
            let len = (level + 1) * self.ring;
            self.totals.resize(len, 0.0);
            self.variances.resize(len, 0.0);
        }
        let s = self.slot(level, block);
        self.totals[s] = total;
        self.variances[s] = variance;
    }

    /// Completes the blocks that `block` of `level` ends, level by level.
    #[inline]
    fn carry(&mut self, mut level: usize, mut block: u64) {
        while block & 1 == 1 {
            let (t0, v0) = self.get(level, block - 1);
            let (t1, v1) = self.get(level, block);
            let (n, inv) = scale(level);
            let (t, v) = merge(n, inv, t0, t1, v0, v1);
            level += 1;
            block >>= 1;
            self.set(level, block, t, v);
        }
    }

    /// Takes one value.
    pub fn push(&mut self, x: f64) {
        let at = self.n;
        self.set(0, at, x, 0.0);
        self.carry(0, at);
        self.n += 1;
    }

    /// Takes 32 values at once; the count so far must be a multiple of 32.
    #[inline(always)]
    pub fn push_block(&mut self, x: &[f64; BLOCK]) {
        debug_assert_eq!(self.n % BLOCK as u64, 0);
        let zeros = [0.0; BLOCK];
        let (mut t1, mut v1) = ([0.0; 16], [0.0; 16]);
        merge_pairs(0, x, &zeros, &mut t1, &mut v1);
        let (mut t2, mut v2) = ([0.0; 8], [0.0; 8]);
        merge_pairs(1, &t1, &v1, &mut t2, &mut v2);
        let (mut t3, mut v3) = ([0.0; 4], [0.0; 4]);
        merge_pairs(2, &t2, &v2, &mut t3, &mut v3);
        let (mut t4, mut v4) = ([0.0; 2], [0.0; 2]);
        merge_pairs(3, &t3, &v3, &mut t4, &mut v4);
        let (mut t5, mut v5) = ([0.0; 1], [0.0; 1]);
        merge_pairs(4, &t4, &v4, &mut t5, &mut v5);
        let n = self.n;
        // Single values have no squared deviations: level 0's stay 0.
        self.set(0, n, x[0], 0.0);
        let s = self.slot(0, n);
        self.totals[s..s + BLOCK].copy_from_slice(x);
        self.store(1, n / 2, &t1, &v1);
        self.store(2, n / 4, &t2, &v2);
        self.store(3, n / 8, &t3, &v3);
        self.store(4, n / 16, &t4, &v4);
        self.set(5, n / 32, t5[0], v5[0]);
        self.carry(5, n / 32);
        self.n += BLOCK as u64;
    }

    /// Stores consecutive blocks of a level, starting at block `first`
    /// (a multiple of their number, so they sit side by side in the ring).
    #[inline(always)]
    fn store<const N: usize>(&mut self, level: usize, first: u64, t: &[f64; N], v: &[f64; N]) {
        self.set(level, first, t[0], v[0]);
        let s = self.slot(level, first);
        self.totals[s..s + N].copy_from_slice(t);
        self.variances[s..s + N].copy_from_slice(v);
    }

    /// How many blocks row `i` has received: `((n + c) >> i) - c`, with
    /// `c = cap - 2`. A row reaching `cap` buckets merges its oldest pair,
    /// so after `hi` arrivals it has passed `(hi - cap) / 2 + 1 =
    /// (hi - c) / 2` blocks up (none below `cap`); halving twice is
    /// halving by four, and so on, so each row's count follows from `n`
    /// alone.
    #[inline(always)]
    fn arrived(&self, i: usize) -> u64 {
        let c = self.cap - 2;
        ((self.n + c) >> i) - c
    }

    /// How many rows river holds: up to the first with fewer than `cap`
    /// arrivals, which has passed none up and is river's top row.
    #[inline(always)]
    pub fn row_count(&self) -> usize {
        let mut i = 0;
        while self.arrived(i) >= self.cap {
            i += 1;
        }
        i + 1
    }

    /// Row `i` of `top` rows, as river holds it: the blocks `lo..hi` of
    /// level i. The top row holds at least one bucket (unless no value
    /// has arrived).
    #[inline(always)]
    pub fn row(&self, i: usize, top: usize) -> Row {
        let lo = if i + 1 < top {
            2 * self.arrived(i + 1)
        } else {
            0
        };
        Row {
            lo,
            hi: self.arrived(i),
        }
    }

    /// The lowest row from which on, the number of rows being the same,
    /// the rows are as they were after `then` values: row i depends on
    /// `(n + c) >> i` only.
    #[inline(always)]
    pub fn first_unchanged_row(&self, then: u64) -> usize {
        let c = self.cap - 2;
        (u64::BITS - ((self.n + c) ^ (then + c)).leading_zeros()) as usize
    }

    /// The most buckets the rows can hold (an upper bound).
    pub fn most_splits(&self) -> usize {
        self.cap as usize * (u64::BITS as usize + 1)
    }

    /// River's rows after `self.count()` values, lowest (newest) first.
    pub fn rows(&self, out: &mut Vec<Row>) {
        let top = self.row_count();
        out.clear();
        out.extend((0..top).map(|i| self.row(i, top)));
    }

    /// The rows as river holds them: per row (lowest first), its
    /// buckets' sums and squared deviations, oldest first.
    pub fn materialize(&self) -> Vec<Vec<(f64, f64)>> {
        let mut rows = Vec::new();
        self.rows(&mut rows);
        rows.iter()
            .enumerate()
            .map(|(i, r)| (r.lo..r.hi).map(|k| self.get(i, k)).collect())
            .collect()
    }
}
