//! The exactly-once ledger of one stream: which sequence numbers are stored,
//! as inclusive intervals.
//!
//! A device's outbox numbers its batches 1, 2, 3, ... and only skips numbers
//! when it drops data, so a stream's ledger is a handful of intervals however
//! many batches it holds. The writer keeps the ledgers of active streams in
//! memory and writes back only the intervals a transaction changed (see
//! [`SeqSet::take_changes`]), so the ledger costs a few rows per commit
//! instead of one index entry per batch.

use std::collections::{BTreeMap, BTreeSet};

/// The stored sequence numbers of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    /// Interval start -> inclusive end; intervals never touch or overlap.
    intervals: BTreeMap<u64, u64>,
    /// Starts of intervals created, changed or removed since the last
    /// [`SeqSet::take_changes`].
    dirty: BTreeSet<u64>,
}

/// What to write back for one interval start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalChange {
    /// The interval `[lo, hi]` exists (insert or replace it).
    Upsert {
        /// First sequence number.
        lo: u64,
        /// Last sequence number, inclusive.
        hi: u64,
    },
    /// No interval starts at `lo` any more.
    Remove {
        /// The start that went away.
        lo: u64,
    },
}

impl SeqSet {
    /// A ledger from stored intervals (in any order; they must not overlap).
    pub fn from_intervals(intervals: impl IntoIterator<Item = (u64, u64)>) -> SeqSet {
        SeqSet {
            intervals: intervals.into_iter().collect(),
            dirty: BTreeSet::new(),
        }
    }

    /// Whether `seq` is stored.
    pub fn contains(&self, seq: u64) -> bool {
        self.intervals
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &hi)| hi >= seq)
    }

    /// Records `seq`; false if it was already there (a duplicate).
    pub fn insert(&mut self, seq: u64) -> bool {
        let before = self
            .intervals
            .range(..=seq)
            .next_back()
            .map(|(&l, &h)| (l, h));
        if let Some((_, hi)) = before
            && hi >= seq
        {
            return false;
        }
        let joins_before = before.filter(|&(_, hi)| hi.checked_add(1) == Some(seq));
        let joins_after = seq
            .checked_add(1)
            .and_then(|next| self.intervals.get(&next).map(|&hi| (next, hi)));
        match (joins_before, joins_after) {
            (Some((lo, _)), Some((next_lo, next_hi))) => {
                self.intervals.remove(&next_lo);
                self.intervals.insert(lo, next_hi);
                self.dirty.extend([lo, next_lo]);
            }
            (Some((lo, _)), None) => {
                self.intervals.insert(lo, seq);
                self.dirty.insert(lo);
            }
            (None, Some((next_lo, next_hi))) => {
                self.intervals.remove(&next_lo);
                self.intervals.insert(seq, next_hi);
                self.dirty.extend([seq, next_lo]);
            }
            (None, None) => {
                self.intervals.insert(seq, seq);
                self.dirty.insert(seq);
            }
        }
        true
    }

    /// The intervals, in order.
    pub fn intervals(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.intervals.iter().map(|(&l, &h)| (l, h))
    }

    /// How many sequence numbers are stored.
    pub fn len(&self) -> u64 {
        self.intervals.iter().map(|(&l, &h)| h - l + 1).sum()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// The changes since the last call, one per interval start touched, and
    /// forgets them: what a transaction writes back.
    pub fn take_changes(&mut self) -> Vec<IntervalChange> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|lo| match self.intervals.get(&lo) {
                Some(&hi) => IntervalChange::Upsert { lo, hi },
                None => IntervalChange::Remove { lo },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Applies `changes` to a copy of stored rows, as the database does.
    fn apply(rows: &mut BTreeMap<u64, u64>, changes: &[IntervalChange]) {
        for c in changes {
            match *c {
                IntervalChange::Upsert { lo, hi } => {
                    rows.insert(lo, hi);
                }
                IntervalChange::Remove { lo } => {
                    rows.remove(&lo);
                }
            }
        }
    }

    #[test]
    fn intervals_grow_join_and_refuse_duplicates() {
        let mut s = SeqSet::default();
        assert!(s.insert(1) && s.insert(2) && s.insert(3));
        assert!(!s.insert(2), "duplicate");
        assert!(s.insert(5));
        assert_eq!(s.intervals().collect::<Vec<_>>(), [(1, 3), (5, 5)]);
        assert!(s.insert(4), "fills the gap");
        assert_eq!(s.intervals().collect::<Vec<_>>(), [(1, 5)]);
        assert!(s.insert(0), "extends downwards");
        assert_eq!(s.intervals().collect::<Vec<_>>(), [(0, 5)]);
        assert!(s.contains(3) && !s.contains(6));
        assert_eq!(s.len(), 6);
    }

    #[test]
    fn the_ends_of_the_number_range_do_not_overflow() {
        let mut s = SeqSet::default();
        assert!(s.insert(u64::MAX) && s.insert(u64::MAX - 1) && s.insert(0));
        assert!(!s.insert(u64::MAX));
        assert_eq!(
            s.intervals().collect::<Vec<_>>(),
            [(0, 0), (u64::MAX - 1, u64::MAX)]
        );
    }

    proptest! {
        #[test]
        fn matches_a_plain_set_and_its_changes_rebuild_it(
            rounds in prop::collection::vec(prop::collection::vec(0u64..200, 0..40), 1..8)
        ) {
            let mut s = SeqSet::default();
            let mut plain = std::collections::BTreeSet::new();
            let mut rows = BTreeMap::new();
            for round in rounds {
                for seq in round {
                    prop_assert_eq!(s.insert(seq), plain.insert(seq));
                }
                apply(&mut rows, &s.take_changes());
                // What was written back reloads to the same ledger.
                let reloaded = SeqSet::from_intervals(rows.clone());
                prop_assert_eq!(reloaded.intervals().collect::<Vec<_>>(), s.intervals().collect::<Vec<_>>());
            }
            for seq in 0..200 {
                prop_assert_eq!(s.contains(seq), plain.contains(&seq));
            }
            prop_assert_eq!(s.len(), plain.len() as u64);
            // Intervals never touch: each is maximal.
            let iv: Vec<_> = s.intervals().collect();
            for w in iv.windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0);
            }
        }
    }
}
