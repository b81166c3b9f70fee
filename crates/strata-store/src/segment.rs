//! Telemetry blocks on disk beside the database: append-only segment files.
//!
//! A block (the batches of one stream that one commit stored, see
//! [`crate::block`]) is most of what ingest writes. Kept as a blob in
//! SQLite it is written twice (to the WAL, then by the checkpoint into the
//! database file) and in 4 KiB pages with a header and a checksum each.
//! Here the blocks of a commit go to the end of the current segment file
//! in one write, once; the `blocks` row in SQLite keeps the block's place
//! (segment number, offset, length) instead of its bytes.
//!
//! Order makes it crash-safe without recovery work: the writer appends a
//! commit's blocks and syncs the segment *before* the SQLite transaction
//! that points at them commits. A row therefore only ever points at bytes
//! already on disk; a crash in between leaves bytes no row points at
//! (their batches were not acknowledged, so the devices send them again),
//! and opening the store cuts them off the end of the segment.
//!
//! More than one process may open a data directory (the hub, and a tool
//! beside it). Appending and committing happen under an exclusive lock on
//! `telemetry/LOCK` ([`Segments::lock`]), which also re-reads where the
//! newest segment ends; opening takes it too, so it only ever cuts bytes
//! whose commit is not coming.
//!
//! File `{n:08}.seg` in `telemetry/` of the data directory; a new one is
//! started when the current one passes [`SEGMENT_BYTES`]. A record is a
//! 4-byte little-endian length, the CRC-32 of the block, then the block.
//! Retention deletes rows, then the older segments no row points at any
//! more ([`Appender::remove_unused`]): space comes back a segment at a
//! time.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// A segment grows to about this size before the next one starts.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Bytes of a record before its block: length and CRC-32.
const HEADER: u64 = 8;

/// Where a block is: its segment and the offset and length of its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Segment number.
    pub segment: u32,
    /// Offset of the record in the segment.
    pub offset: u64,
    /// Length of the record (header and block).
    pub length: u64,
}

/// The segment files of a store.
#[derive(Debug)]
pub struct Segments {
    dir: PathBuf,
    /// Sync appended records before returning from [`Appender::sync`].
    durable: bool,
    /// The segment appends go to; its mutex also holds the lock file,
    /// locked across processes while an [`Appender`] lives.
    active: Mutex<Active>,
    lock_file: File,
    /// Files open for reading, by number.
    open: Mutex<HashMap<u32, Arc<File>>>,
    /// A segment grows to about this size ([`SEGMENT_BYTES`]; less in tests).
    segment_bytes: u64,
}

/// The right to append, held from before a commit's blocks are written
/// until its transaction has committed (this process's writers and other
/// processes' wait).
pub struct Appender<'a> {
    segments: &'a Segments,
    active: std::sync::MutexGuard<'a, Active>,
}

#[derive(Debug)]
struct Active {
    number: u32,
    file: File,
    len: u64,
    /// Appended since the last sync.
    dirty: bool,
    /// A segment started since the last sync: its directory entry must be
    /// synced too.
    new_file: bool,
    /// The last append's bytes, kept for the next one's: a commit's
    /// records run to megabytes, and memory freed and taken again costs
    /// the kernel a fresh zeroed page each time.
    buf: Vec<u8>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

fn segment_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("{number:08}.seg"))
}

impl Segments {
    /// Opens the segments in `dir` (creating it). `end_of` tells, for a
    /// segment, where the last record a row points at ends: anything
    /// after it in the newest segment was appended by a commit that never
    /// happened, and is cut off. It is asked under the lock, so no commit
    /// is under way.
    pub fn open(dir: &Path, durable: bool, end_of: impl Fn(u32) -> Result<u64>) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(format!(
            "cannot create the segment directory {}",
            dir.display()
        )))?;
        let lock_path = dir.join("LOCK");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(format!("cannot open {}", lock_path.display())))?;
        lock_file
            .lock()
            .map_err(io(format!("cannot lock {}", lock_path.display())))?;
        let opened = Self::open_locked(dir, end_of);
        let _ = lock_file.unlock();
        let active = opened?;
        Ok(Segments {
            dir: dir.to_owned(),
            durable,
            active: Mutex::new(active),
            lock_file,
            open: Mutex::new(HashMap::new()),
            segment_bytes: SEGMENT_BYTES,
        })
    }

    /// Starts new segments at `bytes` instead (tests that need several).
    #[cfg(test)]
    pub(crate) fn set_segment_bytes(&mut self, bytes: u64) {
        self.segment_bytes = bytes;
    }

    fn open_locked(dir: &Path, end_of: impl Fn(u32) -> Result<u64>) -> Result<Active> {
        let newest = newest_segment(dir)?;
        let number = newest.unwrap_or(0);
        let path = segment_path(dir, number);
        let file = open_segment(&path, false)?;
        let on_disk = file
            .metadata()
            .map_err(io(format!("cannot read {}", path.display())))?
            .len();
        let end = end_of(number)?;
        if on_disk > end {
            tracing::info!(
                segment = %path.display(),
                bytes = on_disk - end,
                "dropping telemetry a commit appended but never recorded (a crash)"
            );
            file.set_len(end)
                .and_then(|()| file.sync_all())
                .map_err(io(format!("cannot truncate {}", path.display())))?;
        } else if on_disk < end {
            tracing::warn!(
                segment = %path.display(),
                "telemetry segment is shorter than the database says; \
                 blocks past its end cannot be read (was power lost without fsync durability?)"
            );
        }
        Ok(Active {
            number,
            file,
            len: on_disk.min(end),
            dirty: false,
            new_file: newest.is_none(),
            buf: Vec::new(),
        })
    }

    /// Takes the right to append (waiting for a commit under way here or
    /// in another process), and finds where the newest segment ends now.
    pub fn lock(&self) -> Result<Appender<'_>> {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        self.lock_file.lock().map_err(io(format!(
            "cannot lock {}",
            self.dir.join("LOCK").display()
        )))?;
        let mut appender = Appender {
            segments: self,
            active,
        };
        appender.refresh()?;
        Ok(appender)
    }

    /// The segment files and their sizes, oldest first.
    pub fn files(&self) -> Result<Vec<(u32, u64)>> {
        let mut numbers = segment_numbers(&self.dir)?;
        numbers.sort_unstable();
        Ok(numbers
            .into_iter()
            .filter_map(|n| {
                let len = std::fs::metadata(segment_path(&self.dir, n)).ok()?.len();
                Some((n, len))
            })
            .collect())
    }

    /// Reads the block at `place`, checking its length and CRC.
    pub fn read(&self, place: Place) -> Result<Vec<u8>> {
        let file = self.file(place.segment)?;
        let path = || segment_path(&self.dir, place.segment).display().to_string();
        let corrupt = |what: &str| {
            Error::Corrupt(format!(
                "telemetry block at {}:{}: {what}",
                path(),
                place.offset
            ))
        };
        // Checked against the file before anything is allocated: a
        // damaged row must not ask for more memory than the file holds.
        let size = file
            .metadata()
            .map_err(|e| corrupt(&format!("cannot read it: {e}")))?
            .len();
        let length = usize::try_from(place.length)
            .ok()
            .filter(|&l| l as u64 >= HEADER)
            .filter(|_| {
                place
                    .offset
                    .checked_add(place.length)
                    .is_some_and(|end| end <= size)
            })
            .ok_or_else(|| corrupt("impossible length"))?;
        let mut record = vec![0; length];
        file.read_exact_at(&mut record, place.offset)
            .map_err(|e| corrupt(&format!("cannot read it: {e}")))?;
        let (head, block) = record.split_at(HEADER as usize);
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len as usize != block.len() {
            return Err(corrupt("its length does not match its row"));
        }
        if crc32fast::hash(block) != crc {
            return Err(corrupt("its checksum does not match"));
        }
        record.drain(..HEADER as usize);
        Ok(record)
    }

    fn file(&self, number: u32) -> Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = open.get(&number) {
            return Ok(Arc::clone(f));
        }
        let path = segment_path(&self.dir, number);
        let file =
            Arc::new(File::open(&path).map_err(io(format!("cannot open {}", path.display())))?);
        open.insert(number, Arc::clone(&file));
        Ok(file)
    }
}

fn newest_segment(dir: &Path) -> Result<Option<u32>> {
    Ok(segment_numbers(dir)?.into_iter().max())
}

/// The numbers of the segment files in `dir`.
fn segment_numbers(dir: &Path) -> Result<Vec<u32>> {
    Ok(std::fs::read_dir(dir)
        .map_err(io(format!("cannot list {}", dir.display())))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse::<u32>().ok()
        })
        .collect())
}

fn open_segment(path: &Path, truncate: bool) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(truncate)
        .open(path)
        .map_err(io(format!("cannot open {}", path.display())))
}

impl Appender<'_> {
    /// Another process may have appended, or started the next segment,
    /// since this one last held the lock.
    fn refresh(&mut self) -> Result<()> {
        let dir = &self.segments.dir;
        let read = |file: &File, number: u32| {
            file.metadata().map_err(io(format!(
                "cannot read {}",
                segment_path(dir, number).display()
            )))
        };
        let mut meta = read(&self.active.file, self.active.number)?;
        // Another process started the next segment, or its retention
        // removed this one (no longer the newest: its file has no name).
        if meta.nlink() == 0 || segment_path(dir, self.active.number + 1).exists() {
            let number = newest_segment(dir)?.unwrap_or(self.active.number + 1);
            self.active.file = open_segment(&segment_path(dir, number), false)?;
            self.active.number = number;
            self.active.dirty = false;
            meta = read(&self.active.file, number)?;
        }
        self.active.len = meta.len();
        Ok(())
    }

    /// Appends `blocks` to the current segment in one write; returns where
    /// each went. Not durable before [`Appender::sync`].
    pub fn append(&mut self, blocks: &[&[u8]]) -> Result<Vec<Place>> {
        if self.active.len >= self.segments.segment_bytes {
            self.start_next()?;
        }
        let size: usize = blocks.iter().map(|b| b.len() + HEADER as usize).sum();
        let mut buf = std::mem::take(&mut self.active.buf);
        buf.clear();
        buf.reserve(size);
        let mut places = Vec::with_capacity(blocks.len());
        for block in blocks {
            let len = u32::try_from(block.len())
                .map_err(|_| Error::Corrupt("a telemetry block over 4 GiB".into()))?;
            places.push(Place {
                segment: self.active.number,
                offset: self.active.len + buf.len() as u64,
                length: HEADER + u64::from(len),
            });
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(block).to_le_bytes());
            buf.extend_from_slice(block);
        }
        let at = self.active.len;
        let path = segment_path(&self.segments.dir, self.active.number);
        let written = self.active.file.write_all_at(&buf, at);
        let len = buf.len() as u64;
        self.active.buf = buf;
        written.map_err(io(format!("cannot append to {}", path.display())))?;
        self.active.len += len;
        self.active.dirty = true;
        Ok(places)
    }

    /// Makes every appended record durable (with fsync durability).
    pub fn sync(&mut self) -> Result<()> {
        if !self.segments.durable || !self.active.dirty {
            return Ok(());
        }
        let path = segment_path(&self.segments.dir, self.active.number);
        self.active
            .file
            .sync_data()
            .map_err(io(format!("cannot sync {}", path.display())))?;
        if self.active.new_file {
            let dir = &self.segments.dir;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(format!("cannot sync {}", dir.display())))?;
            self.active.new_file = false;
        }
        self.active.dirty = false;
        Ok(())
    }

    /// Where appends go now: what [`Appender::cut_back`] returns to.
    pub fn mark(&self) -> (u32, u64) {
        (self.active.number, self.active.len)
    }

    /// Drops what was appended since `mark` (a commit whose transaction
    /// failed: no row will ever point at it), so the next commit's records
    /// take its place instead of leaving dead bytes in the segment.
    pub fn cut_back(&mut self, mark: (u32, u64)) -> Result<()> {
        let (number, len) = mark;
        // A segment started since holds nothing else.
        let keep = if self.active.number == number { len } else { 0 };
        if self.active.len == keep {
            return Ok(());
        }
        let path = segment_path(&self.segments.dir, self.active.number);
        self.active
            .file
            .set_len(keep)
            .map_err(io(format!("cannot truncate {}", path.display())))?;
        self.active.len = keep;
        Ok(())
    }

    /// Removes the segment files older than the one appends go to that
    /// `in_use` says no block needs any more (retention); returns how many
    /// files and bytes went. Only the newest segment is ever appended to,
    /// so an older one that no row points at never will be again.
    pub fn remove_unused(&mut self, in_use: impl Fn(u32) -> Result<bool>) -> Result<(u64, u64)> {
        let dir = &self.segments.dir;
        let mut older: Vec<u32> = segment_numbers(dir)?
            .into_iter()
            .filter(|&n| n < self.active.number)
            .collect();
        older.sort_unstable();
        let (mut files, mut bytes) = (0, 0);
        for number in older {
            if in_use(number)? {
                continue;
            }
            let path = segment_path(dir, number);
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path).map_err(io(format!("cannot remove {}", path.display())))?;
            self.segments
                .open
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&number);
            files += 1;
            bytes += len;
        }
        if files > 0 && self.segments.durable {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(format!("cannot sync {}", dir.display())))?;
        }
        Ok((files, bytes))
    }

    /// Closes the full segment (synced) and starts the next one.
    fn start_next(&mut self) -> Result<()> {
        self.sync()?;
        let number = self.active.number + 1;
        let file = open_segment(&segment_path(&self.segments.dir, number), true)?;
        let buf = std::mem::take(&mut self.active.buf);
        *self.active = Active {
            number,
            file,
            len: 0,
            dirty: false,
            new_file: true,
            buf,
        };
        Ok(())
    }
}

impl Drop for Appender<'_> {
    fn drop(&mut self) {
        let _ = self.segments.lock_file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_read_back_and_damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let segs = Segments::open(dir.path(), true, |_| Ok(0)).unwrap();
        let places = {
            let mut a = segs.lock().unwrap();
            let places = a.append(&[b"first block", b"", b"third"]).unwrap();
            a.sync().unwrap();
            places
        };
        assert_eq!(places[0].offset, 0);
        assert_eq!(places[1].offset, 8 + 11);
        assert_eq!(segs.read(places[0]).unwrap(), b"first block");
        assert_eq!(segs.read(places[1]).unwrap(), b"");
        assert_eq!(segs.read(places[2]).unwrap(), b"third");
        // A flipped byte fails the checksum; a wrong length the header.
        let path = segment_path(dir.path(), 0);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(segs.read(places[0]).is_err());
        let wrong = Place {
            length: places[2].length + 1,
            ..places[2]
        };
        assert!(segs.read(wrong).is_err());
        // A row whose length is damaged (a negative one read as u64, or
        // merely huge) is refused before anything is allocated for it.
        for length in [u64::MAX, (-8i64) as u64, 1 << 40] {
            let damaged = Place {
                length,
                ..places[0]
            };
            let err = segs.read(damaged).unwrap_err().to_string();
            assert!(err.contains("impossible length"), "{err}");
        }
    }

    #[test]
    fn opening_cuts_what_no_row_points_at() {
        let dir = tempfile::tempdir().unwrap();
        let kept = {
            let segs = Segments::open(dir.path(), true, |_| Ok(0)).unwrap();
            let mut a = segs.lock().unwrap();
            let kept = a.append(&[b"recorded"]).unwrap()[0];
            a.append(&[b"appended, then a crash before the commit"])
                .unwrap();
            kept
        };
        let end = kept.offset + kept.length;
        let segs = Segments::open(dir.path(), true, |n| Ok(if n == 0 { end } else { 0 })).unwrap();
        assert_eq!(
            std::fs::metadata(segment_path(dir.path(), 0))
                .unwrap()
                .len(),
            end
        );
        assert_eq!(segs.read(kept).unwrap(), b"recorded");
        let next = segs.lock().unwrap().append(&[b"after"]).unwrap()[0];
        assert_eq!(next.offset, end);
    }

    #[test]
    fn a_failed_commit_leaves_no_dead_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let segs = Segments::open(dir.path(), true, |_| Ok(0)).unwrap();
        let mut a = segs.lock().unwrap();
        let kept = a.append(&[b"committed"]).unwrap()[0];
        let mark = a.mark();
        a.append(&[b"a commit that failed", b"twice"]).unwrap();
        a.cut_back(mark).unwrap();
        let next = a.append(&[b"the next commit"]).unwrap()[0];
        assert_eq!(next.offset, kept.offset + kept.length);
        a.sync().unwrap();
        drop(a);
        assert_eq!(segs.read(next).unwrap(), b"the next commit");
        assert_eq!(
            std::fs::metadata(segment_path(dir.path(), 0))
                .unwrap()
                .len(),
            next.offset + next.length
        );
    }

    #[test]
    fn a_full_segment_is_followed_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let segs = Segments::open(dir.path(), false, |_| Ok(0)).unwrap();
        let big = vec![7u8; SEGMENT_BYTES as usize];
        let first = segs.lock().unwrap().append(&[&big]).unwrap()[0];
        let second = segs.lock().unwrap().append(&[b"next"]).unwrap()[0];
        assert_eq!((first.segment, second.segment, second.offset), (0, 1, 0));
        assert_eq!(segs.read(second).unwrap(), b"next");
        assert_eq!(segs.read(first).unwrap().len(), big.len());
        drop(segs);
        // Reopened: appends go on in the newest segment.
        let segs = Segments::open(dir.path(), false, |n| Ok(if n == 1 { 12 } else { 0 })).unwrap();
        assert_eq!(
            segs.lock().unwrap().append(&[b"more"]).unwrap()[0].segment,
            1
        );
    }

    #[test]
    fn retention_removes_unused_older_segments_only() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Segments::open(dir.path(), false, |_| Ok(0)).unwrap();
        let tool = Segments::open(dir.path(), false, |_| Ok(0)).unwrap();
        let big = vec![1u8; SEGMENT_BYTES as usize];
        // Segments 0, 1 and 2 (the active one); the tool last appended to 0.
        let kept = tool.lock().unwrap().append(&[b"still used"]).unwrap()[0];
        hub.lock().unwrap().append(&[&big]).unwrap();
        hub.lock().unwrap().append(&[&big]).unwrap();
        let active = hub.lock().unwrap().append(&[b"newest"]).unwrap()[0];
        assert_eq!((kept.segment, active.segment), (0, 2));
        // Nothing points at segment 1; segment 0 is in use; 2 is active
        // and is never removed, whatever `in_use` says.
        let (files, bytes) = hub.lock().unwrap().remove_unused(|n| Ok(n == 0)).unwrap();
        assert_eq!((files, bytes), (1, SEGMENT_BYTES + 8));
        assert!(!segment_path(dir.path(), 1).exists());
        assert_eq!(hub.read(kept).unwrap(), b"still used");
        assert_eq!(hub.read(active).unwrap(), b"newest");
        // Then segment 0 goes too: the tool, which last appended there,
        // finds the newest segment and appends after the hub.
        hub.lock().unwrap().remove_unused(|_| Ok(false)).unwrap();
        assert!(!segment_path(dir.path(), 0).exists());
        let next = tool.lock().unwrap().append(&[b"from the tool"]).unwrap()[0];
        assert_eq!(
            (next.segment, next.offset),
            (2, active.offset + active.length)
        );
        assert_eq!(hub.read(next).unwrap(), b"from the tool");
    }

    #[test]
    fn two_openers_append_one_after_the_other() {
        // The hub and a tool on the same data directory: each appends
        // under the lock, where the other left the segment.
        let dir = tempfile::tempdir().unwrap();
        let hub = Segments::open(dir.path(), true, |_| Ok(0)).unwrap();
        let tool = Segments::open(dir.path(), true, |_| Ok(0)).unwrap();
        let a = hub.lock().unwrap().append(&[b"from the hub"]).unwrap()[0];
        let b = tool.lock().unwrap().append(&[b"from the tool"]).unwrap()[0];
        let c = hub.lock().unwrap().append(&[b"hub again"]).unwrap()[0];
        assert_eq!(b.offset, a.offset + a.length);
        assert_eq!(c.offset, b.offset + b.length);
        for (place, bytes) in [
            (a, &b"from the hub"[..]),
            (b, b"from the tool"),
            (c, b"hub again"),
        ] {
            assert_eq!(hub.read(place).unwrap(), bytes);
            assert_eq!(tool.read(place).unwrap(), bytes);
        }
    }
}
