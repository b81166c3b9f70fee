//! The block format: the batches of one stream that one commit stored, in
//! one row.
//!
//! Under load a commit takes hundreds of batches from a few dozen streams;
//! writing one row per stream instead of one per batch is what keeps the
//! database's work per commit (and its page writes) small. At low load a
//! block holds a single batch, which is as cheap as a row per batch was.
//!
//! Layout: 1 byte version (1), then entries until the end, each: varint seq,
//! zigzag varint first timestamp, varint (last - first timestamp), varint
//! reading count, varint length + the packed batch ([`crate::blob`]).

use crate::chunk::{get_varint, put_varint, unzigzag, zigzag};
use crate::{Error, Result};

const VERSION: u8 = 1;

/// One batch inside a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEntry<'a> {
    /// Sequence number in its stream.
    pub seq: u64,
    /// Earliest timestamp (0 when the batch has no readings).
    pub t_min: i64,
    /// Latest timestamp.
    pub t_max: i64,
    /// Number of readings.
    pub readings: u64,
    /// The packed batch.
    pub data: &'a [u8],
}

/// Builds a block, batch by batch.
#[derive(Debug, Clone)]
pub struct BlockBuilder {
    data: Vec<u8>,
    batches: u64,
    readings: u64,
    t_min: i64,
    t_max: i64,
}

impl Default for BlockBuilder {
    fn default() -> Self {
        BlockBuilder {
            data: vec![VERSION],
            batches: 0,
            readings: 0,
            t_min: i64::MAX,
            t_max: i64::MIN,
        }
    }
}

impl BlockBuilder {
    /// Appends a batch.
    pub fn push(&mut self, e: BlockEntry<'_>) {
        // Room for this entry and, as a guess, as many again: blocks under
        // load hold hundreds of batches of about the same size.
        self.data.reserve(2 * (e.data.len() + 40));
        put_varint(&mut self.data, e.seq);
        put_varint(&mut self.data, zigzag(e.t_min));
        put_varint(&mut self.data, e.t_max.wrapping_sub(e.t_min) as u64);
        put_varint(&mut self.data, e.readings);
        put_varint(&mut self.data, e.data.len() as u64);
        self.data.extend_from_slice(e.data);
        self.batches += 1;
        if e.readings > 0 {
            self.readings = self.readings.saturating_add(e.readings);
            self.t_min = self.t_min.min(e.t_min);
            self.t_max = self.t_max.max(e.t_max);
        }
    }

    /// Batches so far.
    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// Readings so far.
    pub fn readings(&self) -> u64 {
        self.readings
    }

    /// Earliest and latest timestamp of the readings, (0, 0) without any.
    pub fn time_range(&self) -> (i64, i64) {
        if self.readings == 0 {
            (0, 0)
        } else {
            (self.t_min, self.t_max)
        }
    }

    /// The packed block.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

/// Calls `each` for every batch of a block, in stored order.
pub fn for_each_entry(
    block: &[u8],
    mut each: impl FnMut(BlockEntry<'_>) -> Result<()>,
) -> Result<()> {
    if block.first() != Some(&VERSION) {
        return Err(Error::Corrupt("block has an unknown version".into()));
    }
    let mut pos = 1;
    while pos < block.len() {
        let seq = get_varint(block, &mut pos)?;
        let t_min = unzigzag(get_varint(block, &mut pos)?);
        let t_max = t_min.wrapping_add(get_varint(block, &mut pos)? as i64);
        let readings = get_varint(block, &mut pos)?;
        let len = get_varint(block, &mut pos)? as usize;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= block.len())
            .ok_or_else(|| Error::Corrupt("block entry runs past its end".into()))?;
        each(BlockEntry {
            seq,
            t_min,
            t_max,
            readings,
            data: &block[pos..end],
        })?;
        pos = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fixture() {
        let mut b = BlockBuilder::default();
        b.push(BlockEntry {
            seq: 3,
            t_min: -1,
            t_max: 4,
            readings: 2,
            data: &[0xaa, 0xbb],
        });
        assert_eq!(b.data(), [1, 3, 1, 5, 2, 2, 0xaa, 0xbb]);
        assert_eq!((b.batches(), b.readings(), b.time_range()), (1, 2, (-1, 4)));
    }

    #[test]
    fn empty_batches_do_not_widen_the_time_range() {
        let mut b = BlockBuilder::default();
        b.push(BlockEntry {
            seq: 1,
            t_min: 0,
            t_max: 0,
            readings: 0,
            data: &[],
        });
        assert_eq!(b.time_range(), (0, 0));
        b.push(BlockEntry {
            seq: 2,
            t_min: 50,
            t_max: 60,
            readings: 1,
            data: &[1],
        });
        assert_eq!((b.batches(), b.time_range()), (2, (50, 60)));
    }

    #[test]
    fn truncated_blocks_are_errors() {
        let mut b = BlockBuilder::default();
        b.push(BlockEntry {
            seq: 300,
            t_min: 1 << 40,
            t_max: (1 << 40) + 7,
            readings: 9,
            data: &[1, 2, 3, 4],
        });
        let data = b.data();
        for cut in 2..data.len() {
            assert!(
                for_each_entry(&data[..cut], |_| Ok(())).is_err(),
                "cut at {cut}"
            );
        }
        assert!(for_each_entry(&[], |_| Ok(())).is_err());
    }

    proptest! {
        #[test]
        fn entries_read_back(entries in prop::collection::vec(
            (any::<u64>(), any::<i64>(), any::<i64>(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..40)), 0..20)
        ) {
            let mut b = BlockBuilder::default();
            for (seq, t_min, t_max, readings, data) in &entries {
                b.push(BlockEntry { seq: *seq, t_min: *t_min, t_max: *t_max, readings: *readings, data });
            }
            let mut back = Vec::new();
            for_each_entry(b.data(), |e| {
                back.push((e.seq, e.t_min, e.t_max, e.readings, e.data.to_vec()));
                Ok(())
            }).unwrap();
            prop_assert_eq!(back, entries);
        }
    }
}
