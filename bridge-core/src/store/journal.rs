//! The write-ahead journal in front of a durable store ([`super::CombiningStore::open`]).
//!
//! sled 0.34 makes writes durable expensively: every applied batch writes out its IO buffer
//! twice and every flush once more, each write waking all seven of its IO threads: ~250 µs of
//! CPU per event acknowledged on its own on this project's 2-core machine, where appending the
//! same writes to a plain file and calling `fdatasync` costs ~80 µs (docs/benchmarks.md,
//! "## core"). With the journal:
//!
//! - every batch the combining store takes gets its sequence number (the combining store's
//!   batch number) and is encoded into an in-memory buffer in that order;
//! - a flush appends the buffer to the current journal file and `fdatasync`s it: the batches
//!   are durable though the backend has not seen them yet. The backend gets them only then,
//!   key by key ([`Store::apply_journaled`]), in combined chunks
//!   ([`super::combining::APPLY_AT_OPS`] journaled; when [`super::combining::DEFER_OPS`] or
//!   [`super::combining::DEFER_BYTES`] are pending or the oldest has waited
//!   [`super::combining::LINGER`], the applier makes the journal durable through them itself
//!   first), each chunk followed by the number of its last batch under
//!   [`SEQ_KEY`];
//! - when the file passes [`ROTATE_BYTES`] a new file is started; then, on the combining
//!   store's applier thread, every pending batch is applied, the backend flushed once (it then
//!   holds every record of the older files) and the older files deleted; a clean close does the
//!   same and deletes every file;
//! - opening replays, in order, every record of the files (not only those above the backend's
//!   [`SEQ_KEY`], which a power cut can keep while losing an earlier write: see
//!   [`replay_plan`]), flushes the backend and deletes the files.
//!
//! A record: `len` (u32 LE), `crc32(payload)` (u32 LE), payload = sequence (u64 LE), operation
//! count (u32 LE), then per operation the key (u32 LE length, bytes) and the value (u32 LE
//! length, bytes; length `u32::MAX` and no bytes for a removal). A record cut short or failing
//! its checksum at the end of the newest file is a write that never completed, so was never
//! acknowledged: ignored. Anywhere else, or a gap in the sequence, is damage: opening refuses.
//!
//! If writing the journal ever fails, it is no longer used: flushes apply everything pending
//! and flush the backend, as without a journal (which covers everything, journaled or not).

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::{Batch, Store, StoreError};

/// Where sled's state records the sequence number of the last batch it holds. Outside the
/// core's key space (every core key starts with [`super::keys::KEY_VERSION`]).
pub(crate) const SEQ_KEY: &[u8] = &[0, b'j'];

/// A journal file larger than this is retired at the next flush (sled flushed once, the file
/// deleted). Bounds the disk the journal takes and what a restart after a crash replays
/// (about 5,000 events' worth).
pub const ROTATE_BYTES: u64 = 4 * 1024 * 1024;

/// Encoded records kept in memory at most before they are written (not yet synced) to the
/// file, when writes come and no flush does.
const BUFFER_BYTES: usize = 1024 * 1024;

/// The records held in memory are kept in pieces of this size (a record larger than it in one
/// piece of its own size), each allocated once at its final size. One growing buffer of up to
/// [`BUFFER_BYTES`], freed at every write, raised glibc's `malloc` mmap threshold (it follows
/// the largest mapped block freed, up to 32 MB) so that later large blocks came from the heap
/// and kept it from shrinking: `bench mimi`'s RSS per hosted client went from ~14 to ~21 kB
/// with the journal (docs/benchmarks.md). Below glibc's initial threshold of 128 kB.
const PIECE_BYTES: usize = 64 * 1024;

/// The first piece's size when the records held in memory are fewer.
const MIN_PIECE_BYTES: usize = 4 * 1024;

const FILE_PREFIX: &str = "bridge-journal.";
const DELETE: u32 = u32::MAX;

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("journal: {what} {}: {e}", path.display()))
}

/// One operation of a journal record.
pub(crate) type RecordOp<'a> = (&'a [u8], Option<&'a [u8]>);

/// The size of the record [`encode`] makes of `ops`.
pub(crate) fn encoded_len<'a>(ops: impl Iterator<Item = RecordOp<'a>>) -> usize {
    // Length and checksum, sequence, count; per operation two lengths and the bytes.
    ops.fold(8 + 8 + 4, |n, (key, value)| {
        n + 8 + key.len() + value.map_or(0, <[u8]>::len)
    })
}

/// Appends one record (`seq` and its operations) to `out`.
pub(crate) fn encode<'a>(out: &mut Vec<u8>, seq: u64, ops: impl Iterator<Item = RecordOp<'a>>) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&seq.to_le_bytes());
    let count_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut count = 0u32;
    for (key, value) in ops {
        count += 1;
        put_bytes(out, key);
        match value {
            Some(value) => put_bytes(out, value),
            None => out.extend_from_slice(&DELETE.to_le_bytes()),
        }
    }
    out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
    let payload = &out[start + 8..];
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are far below 4 GiB (the core's largest value is an event's JSON).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX - 1);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A decoded record.
#[derive(Debug, PartialEq)]
pub(crate) struct Record {
    pub seq: u64,
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Decodes the records of one file; the second value is the offset of an incomplete or
/// damaged record, if one stopped the reading.
#[cfg(test)]
pub(crate) fn decode(bytes: &[u8]) -> (Vec<Record>, Option<usize>) {
    read_records(bytes).unwrap_or_default()
}

/// Reads the records of one file from `input` as [`decode`] does, one record at a time: a
/// journal file (up to [`ROTATE_BYTES`] and more) is never held whole, which would leave
/// glibc's `malloc` with a raised mmap threshold for the rest of the process (see
/// [`PIECE_BYTES`]). Fails only when reading fails.
pub(crate) fn read_records(
    input: impl std::io::Read,
) -> std::io::Result<(Vec<Record>, Option<usize>)> {
    use std::io::Read as _;
    let mut input = std::io::BufReader::with_capacity(PIECE_BYTES, input);
    let mut records = Vec::new();
    let mut at = 0;
    loop {
        let mut header = [0; 8];
        match read_up_to(&mut input, &mut header)? {
            0 => return Ok((records, None)),
            8 => {}
            _ => return Ok((records, Some(at))),
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        // Grows only as bytes arrive: a damaged length claiming gigabytes allocates nothing.
        let mut payload = Vec::new();
        (&mut input).take(len as u64).read_to_end(&mut payload)?;
        if payload.len() < len || crc32fast::hash(&payload) != crc {
            return Ok((records, Some(at)));
        }
        let Some(record) = decode_payload(&payload) else {
            return Ok((records, Some(at)));
        };
        records.push(record);
        at += 8 + len;
    }
}

/// Fills `buf` from `input` as far as it goes; the number of bytes read.
fn read_up_to(input: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A record's payload (its checksum already checked).
fn decode_payload(payload: &[u8]) -> Option<Record> {
    let mut r = Reader(payload);
    let seq = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let count = r.u32()?;
    let mut ops = Vec::with_capacity(count.min(4096) as usize);
    for _ in 0..count {
        let key_len = r.u32()?;
        let key = r.take(key_len as usize)?.to_vec();
        let value = match r.u32()? {
            DELETE => None,
            n => Some(r.take(n as usize)?.to_vec()),
        };
        ops.push((key, value));
    }
    if !r.0.is_empty() {
        return None;
    }
    Some(Record { seq, ops })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

/// The journal files in `dir`, oldest first, with their generation numbers.
pub(crate) fn files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io("cannot list", dir, e))?;
        let name = entry.file_name();
        let Some(generation) = name
            .to_str()
            .and_then(|n| n.strip_prefix(FILE_PREFIX))
            .and_then(|g| g.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((generation, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// The journal's records to replay over a backend whose mark says it holds the batches up to
/// `applied`: every record of `files`, in order, checked (see the module docs for what is
/// refused), unless the backend's mark is above them all.
///
/// Not only those above the mark: the backend's state since its last flush is trusted for
/// nothing. After its process is killed it holds a prefix of what it was given, but after a
/// power cut it may hold its mark and miss an earlier write (sled 0.34 recovers what survived
/// of its log, not a prefix of it). Every record in the files came after the last flush that
/// retired a file (or after the start), and the backend never gets a batch before the journal
/// holds it durably; so replaying them all, in order, leaves every key they write as the last
/// of them wrote it, whatever the backend kept. A mark above every record comes from batches
/// applied without the journal (it broke, or an older version wrote them): the backend is
/// then ahead of the files, and they are skipped.
pub(crate) fn replay_plan(
    files: &[(u64, PathBuf)],
    applied: u64,
) -> Result<(Vec<Record>, Vec<String>), StoreError> {
    let mut plan: Vec<Record> = Vec::new();
    let mut notes = Vec::new();
    for (i, (_, path)) in files.iter().enumerate() {
        let file = File::open(path).map_err(|e| io("cannot read", path, e))?;
        let size = file
            .metadata()
            .map_err(|e| io("cannot read", path, e))?
            .len();
        let (records, stopped) = read_records(file).map_err(|e| io("cannot read", path, e))?;
        if let Some(at) = stopped {
            if i + 1 < files.len() {
                return Err(StoreError::Backend(format!(
                    "journal {} is damaged at byte {at} and newer journal files follow it; \
                     move the journal files away to open the store without them (the writes \
                     they hold would be lost)",
                    path.display()
                )));
            }
            notes.push(format!(
                "journal {}: ignored an incomplete last record ({} bytes at byte {at}): a write \
                 that was never acknowledged",
                path.display(),
                size.saturating_sub(at as u64)
            ));
        }
        for record in records {
            // The first record may come right after the backend's mark or below it; each of
            // the others right after the one before.
            let follows = plan.last().map_or(applied, |r| r.seq);
            if record.seq > follows + 1 || (!plan.is_empty() && record.seq <= follows) {
                return Err(StoreError::Backend(format!(
                    "journal {}: record {} follows {follows}: records are missing; move the \
                     journal files away to open the store without them",
                    path.display(),
                    record.seq
                )));
            }
            plan.push(record);
        }
    }
    if plan.last().is_some_and(|r| r.seq < applied) {
        plan.clear();
    }
    Ok((plan, notes))
}

/// Removes every journal file of `dir` up to generation `through`.
pub(crate) fn remove_through(dir: &Path, through: u64) -> Result<(), StoreError> {
    for (generation, path) in files(dir)? {
        if generation <= through {
            match std::fs::remove_file(&path) {
                // Removed meanwhile by a retirement of a later file (the applier's and a
                // writer's may overlap).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other.map_err(|e| io("cannot remove", &path, e))?,
            }
        }
    }
    Ok(())
}

/// The file being appended.
struct Current {
    file: File,
    path: PathBuf,
    generation: u64,
    len: u64,
    /// How much of it is known to be on stable storage.
    synced: u64,
    /// The number of the last record written to it (0: none).
    last_seq: u64,
}

impl Current {
    fn create(dir: &Path, generation: u64) -> Result<Self, StoreError> {
        let path = dir.join(format!("{FILE_PREFIX}{generation}"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io("cannot create", &path, e))?;
        // The new name must survive a crash as well as what is written to it.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("cannot sync the directory of", &path, e))?;
        Ok(Self {
            file,
            path,
            generation,
            len: 0,
            synced: 0,
            last_seq: 0,
        })
    }

    fn append(&mut self, records: Unwritten) -> Result<(), StoreError> {
        if records.len == 0 {
            return Ok(());
        }
        for piece in &records.pieces {
            self.file
                .write_all(piece)
                .map_err(|e| io("cannot write", &self.path, e))?;
        }
        self.len += records.len as u64;
        self.last_seq = records.last_seq;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if self.synced == self.len {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| io("cannot sync", &self.path, e))?;
        self.synced = self.len;
        Ok(())
    }
}

/// What a flush must do after the journal's part.
pub(crate) enum Flushed {
    /// Everything applied is durable.
    Done,
    /// The file is full: flush the backend, then call [`Journal::retire`] with this.
    Rotated(u64),
    /// The journal cannot be used: flush the backend instead.
    Unavailable,
}

/// Encoded records taken and not yet written to the file.
#[derive(Default)]
struct Unwritten {
    /// The records, in order, in pieces of about [`PIECE_BYTES`].
    pieces: Vec<Vec<u8>>,
    /// Their bytes in all.
    len: usize,
    /// The number of the last of them.
    last_seq: u64,
}

/// The journal of one store.
pub(crate) struct Journal {
    dir: PathBuf,
    unwritten: Mutex<Unwritten>,
    /// The file, one writer at a time.
    current: Mutex<Option<Current>>,
    /// Set for good when a write failed: flushes go to the backend from then on.
    broken: AtomicBool,
    /// Every record up to this number is on stable storage (until the journal breaks).
    durable: AtomicU64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("broken", &self.broken.load(Ordering::Relaxed))
            .finish()
    }
}

impl Journal {
    /// Starts a journal in `dir`, in a file of a generation above every existing one.
    fn start(dir: &Path, generation: u64) -> Result<Self, StoreError> {
        Ok(Self {
            dir: dir.to_path_buf(),
            unwritten: Mutex::new(Unwritten::default()),
            current: Mutex::new(Some(Current::create(dir, generation)?)),
            broken: AtomicBool::new(false),
            durable: AtomicU64::new(0),
        })
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Gives the journal up for good. Called with the file's lock held.
    fn fail(&self, e: &StoreError) {
        if !self.broken.swap(true, Ordering::AcqRel) {
            tracing::error!(error = %e, "the store's journal failed; flushes go to the store itself from now on");
        }
        *self.unwritten.lock() = Unwritten::default();
    }

    /// Breaks the journal as a failed write would.
    #[cfg(test)]
    pub(crate) fn break_for_test(&self) {
        let _file = self.current.lock();
        self.fail(&StoreError::Backend("a test broke it".into()));
    }

    /// The number below which (inclusive) every record is on stable storage; 0 once the
    /// journal is broken (it may then lack records: nothing counts as journaled).
    pub(crate) fn durable_through(&self) -> u64 {
        if self.is_broken() {
            return 0;
        }
        self.durable.load(Ordering::Acquire)
    }

    /// Takes the record of batch `seq` (called in sequence order); true when the records held
    /// in memory should be handed to the file now ([`Journal::write_out`]), nobody having
    /// flushed for a while.
    pub(crate) fn push<'a>(
        &self,
        seq: u64,
        ops: impl Iterator<Item = RecordOp<'a>> + Clone,
    ) -> bool {
        if self.is_broken() {
            return false;
        }
        let size = encoded_len(ops.clone());
        let mut unwritten = self.unwritten.lock();
        let fits = unwritten
            .pieces
            .last()
            .is_some_and(|piece| piece.capacity() - piece.len() >= size);
        if !fits {
            // As large as what is held already (a quiet flush holds a record or two), up to a
            // piece's size; the record always fits.
            let capacity = unwritten.len.clamp(MIN_PIECE_BYTES, PIECE_BYTES).max(size);
            unwritten.pieces.push(Vec::with_capacity(capacity));
        }
        if let Some(piece) = unwritten.pieces.last_mut() {
            let before = piece.len();
            encode(piece, seq, ops);
            debug_assert_eq!(piece.len() - before, size, "encoded_len is encode's size");
        }
        unwritten.len += size;
        unwritten.last_seq = seq;
        unwritten.len >= BUFFER_BYTES
    }

    /// Writes the records held in memory to the file, not synced (the next flush syncs them).
    pub(crate) fn write_out(&self) {
        let mut current = self.current.lock();
        // Checked under the file's lock, which `fail` is called with: a record pushed while
        // the journal broke must not reach the file after the gap the failure left.
        if self.is_broken() {
            return;
        }
        let records = std::mem::take(&mut *self.unwritten.lock());
        if let Some(file) = current.as_mut()
            && let Err(e) = file.append(records)
        {
            self.fail(&e);
        }
    }

    /// Makes every record pushed so far durable.
    pub(crate) fn flush(&self) -> Flushed {
        self.flush_through(u64::MAX)
    }

    /// Makes the records up to `seq` durable: nothing more to do when a flush that was under
    /// way when this was called covered them (under load the group-commit flusher's usually
    /// has, and a second `fdatasync` right after it would only hold up the next one);
    /// otherwise every record pushed so far, as [`Journal::flush`].
    pub(crate) fn flush_through(&self, seq: u64) -> Flushed {
        let mut guard = self.current.lock();
        // Under the file's lock, as in `write_out`.
        if self.is_broken() {
            return Flushed::Unavailable;
        }
        if self.durable.load(Ordering::Acquire) >= seq {
            return Flushed::Done;
        }
        let Some(current) = guard.as_mut() else {
            return Flushed::Unavailable;
        };
        let records = std::mem::take(&mut *self.unwritten.lock());
        if let Err(e) = current.append(records) {
            self.fail(&e);
            return Flushed::Unavailable;
        }
        if let Err(e) = current.sync() {
            self.fail(&e);
            return Flushed::Unavailable;
        }
        self.durable.fetch_max(current.last_seq, Ordering::AcqRel);
        if current.len < ROTATE_BYTES {
            return Flushed::Done;
        }
        // Full: later records go to a new file; the caller flushes the backend, which then
        // holds every record of this one.
        let old = current.generation;
        match Current::create(&self.dir, old + 1) {
            Ok(next) => {
                *current = next;
                Flushed::Rotated(old)
            }
            Err(e) => {
                self.fail(&e);
                Flushed::Unavailable
            }
        }
    }

    /// Deletes the files up to `generation`, now that the backend holds what they hold.
    pub(crate) fn retire(&self, generation: u64) {
        if let Err(e) = remove_through(&self.dir, generation) {
            // Harmless: the next retirement removes it too (a restart would replay it).
            tracing::warn!(error = %e, "an old journal file was not removed");
        }
    }

    /// At close, once the backend is flushed: deletes every file.
    pub(crate) fn close(&self) {
        let mut current = self.current.lock();
        if let Some(file) = current.take() {
            drop(file.file);
            self.retire(file.generation);
        }
    }
}

/// Opens the journal of a backend whose files are in `dir`: replays the records into the
/// backend (all of them, see [`replay_plan`]), flushes it, deletes the files and starts a new
/// one. Returns the journal and the number of the last batch the backend holds.
pub(crate) fn open(backend: &dyn Store, dir: &Path) -> Result<(Journal, u64), StoreError> {
    let applied = backend
        .get(SEQ_KEY)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_be_bytes);
    let files = files(dir)?;
    let mut last = applied;
    let mut newest = 0;
    if let Some(&(generation, _)) = files.last() {
        newest = generation;
        let (records, notes) = replay_plan(&files, applied)?;
        for note in notes {
            tracing::warn!("{note}");
        }
        let replayed = records.len();
        let mut batch = Batch::new();
        for record in records {
            for (key, value) in record.ops {
                match value {
                    Some(value) => batch.put(key, value),
                    None => batch.delete(key),
                }
            }
            last = record.seq;
            if batch.len() >= REPLAY_OPS {
                batch.put(SEQ_KEY.to_vec(), last.to_be_bytes().to_vec());
                backend.apply(std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            batch.put(SEQ_KEY.to_vec(), last.to_be_bytes().to_vec());
            backend.apply(batch)?;
        }
        backend.flush()?;
        if replayed > 0 {
            tracing::info!(
                batches = replayed,
                through = last,
                "replayed the store's journal: writes acknowledged before the last stop"
            );
        }
        remove_through(dir, newest)?;
    }
    Ok((Journal::start(dir, newest + 1)?, last))
}

/// The most journal operations replayed into the backend as one batch.
const REPLAY_OPS: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, ops: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, seq, ops.iter().copied());
        out
    }

    #[test]
    fn records_round_trip_and_a_cut_or_damaged_tail_stops_the_reading() {
        let mut bytes = record(7, &[(b"a", Some(b"one")), (b"b", None), (b"", Some(b""))]);
        bytes.extend(record(8, &[]));
        let (records, stopped) = decode(&bytes);
        assert_eq!(stopped, None);
        assert_eq!(
            records,
            vec![
                Record {
                    seq: 7,
                    ops: vec![
                        (b"a".to_vec(), Some(b"one".to_vec())),
                        (b"b".to_vec(), None),
                        (vec![], Some(vec![])),
                    ],
                },
                Record {
                    seq: 8,
                    ops: vec![]
                },
            ]
        );
        let whole = bytes.len();
        let third = record(9, &[(b"c", Some(b"three"))]);
        // Every way a third record can be cut short, and a flipped bit, leave the first two.
        for cut in 0..third.len() {
            let mut torn = bytes.clone();
            torn.extend_from_slice(&third[..cut]);
            let (records, stopped) = decode(&torn);
            assert_eq!(records.len(), 2, "cut at {cut}");
            assert_eq!(stopped, (cut > 0).then_some(whole), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped.extend_from_slice(&third);
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(decode(&flipped).1, Some(whole));
        // A length that claims more than there is does not panic or allocate it.
        let mut huge = bytes;
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 12]);
        assert_eq!(decode(&huge).1, Some(whole));
    }

    #[test]
    fn records_are_held_in_pieces_allocated_once_and_written_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::start(dir.path(), 1).expect("start");
        let small = vec![7u8; 1000];
        let big = vec![9u8; 3 * PIECE_BYTES];
        let mut expected = Vec::new();
        for seq in 1..=300u64 {
            let value = if seq == 150 { &big } else { &small };
            let key = seq.to_be_bytes();
            let ops = [(&key[..], Some(&value[..])), (&b"gone"[..], None)];
            assert!(
                !journal.push(seq, ops.iter().copied()),
                "below BUFFER_BYTES"
            );
            expected.push(record(seq, &ops));
        }
        {
            let unwritten = journal.unwritten.lock();
            assert_eq!(unwritten.len, expected.iter().map(Vec::len).sum::<usize>());
            assert!(
                unwritten.pieces.len() > 2,
                "{} pieces",
                unwritten.pieces.len()
            );
            for piece in &unwritten.pieces {
                // Never grown past what it was made for: a piece, or the one large record.
                assert!(
                    piece.capacity() <= PIECE_BYTES || piece.len() == piece.capacity(),
                    "a piece of {} bytes holding {}",
                    piece.capacity(),
                    piece.len()
                );
            }
        }
        assert!(matches!(journal.flush(), Flushed::Done));
        assert_eq!(journal.durable_through(), 300);
        let written = std::fs::read(dir.path().join(format!("{FILE_PREFIX}1"))).expect("read");
        assert_eq!(written, expected.concat());
        assert_eq!(journal.unwritten.lock().pieces.len(), 0);
    }

    #[test]
    fn a_flush_through_what_is_durable_already_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::start(dir.path(), 1).expect("start");
        let path = dir.path().join(format!("{FILE_PREFIX}1"));
        let size = || std::fs::metadata(&path).expect("meta").len();
        let ops = [(&b"k"[..], Some(&b"v"[..]))];
        journal.push(1, ops.iter().copied());
        journal.push(2, ops.iter().copied());
        assert!(matches!(journal.flush(), Flushed::Done));
        let flushed = size();
        journal.push(3, ops.iter().copied());
        assert!(matches!(journal.flush_through(2), Flushed::Done));
        assert_eq!(size(), flushed, "record 3 waits for a flush that needs it");
        assert_eq!(journal.durable_through(), 2);
        assert!(matches!(journal.flush_through(3), Flushed::Done));
        assert!(size() > flushed);
        assert_eq!(journal.durable_through(), 3);
    }

    fn write(dir: &Path, generation: u64, records: &[Vec<u8>]) -> (u64, PathBuf) {
        let path = dir.join(format!("{FILE_PREFIX}{generation}"));
        std::fs::write(&path, records.concat()).expect("write");
        (generation, path)
    }

    #[test]
    fn the_plan_is_every_record_unless_the_backend_is_ahead_and_damage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = |seq| record(seq, &[(b"k", Some(&[seq as u8][..]))]);
        let a = write(dir.path(), 1, &[one(1), one(2), one(3)]);
        let b = write(dir.path(), 2, &[one(4), one(5)]);
        let seqs = |files: &[(u64, PathBuf)], applied| {
            let (plan, notes) = replay_plan(files, applied).expect("plan");
            assert!(notes.is_empty(), "{notes:?}");
            plan.iter().map(|r| r.seq).collect::<Vec<_>>()
        };
        assert_eq!(seqs(&[a.clone(), b.clone()], 0), vec![1, 2, 3, 4, 5]);
        // The backend's mark is not trusted for what it says it holds (a power cut can keep
        // it and lose an earlier write): everything is replayed, also at the very last record.
        assert_eq!(seqs(&[a.clone(), b.clone()], 3), vec![1, 2, 3, 4, 5]);
        assert_eq!(seqs(&[a.clone(), b.clone()], 5), vec![1, 2, 3, 4, 5]);
        // A mark above every record: the backend got batches without the journal.
        assert_eq!(seqs(&[a.clone(), b.clone()], 9), Vec::<u64>::new());
        // Files that start above the mark's next batch: the backend lacks what no file holds.
        let err = replay_plan(std::slice::from_ref(&b), 2).expect_err("gap");
        assert!(err.to_string().contains("record 4 follows 2"), "{err}");
        assert_eq!(seqs(std::slice::from_ref(&b), 3), vec![4, 5]);
        assert_eq!(
            files(dir.path()).expect("files"),
            vec![a.clone(), b.clone()]
        );

        // A torn last record of the newest file: what came before it is replayed.
        let mut torn = [one(4), one(5)].concat();
        torn.extend_from_slice(&one(6)[..5]);
        std::fs::write(&b.1, &torn).expect("write");
        let (plan, notes) = replay_plan(&[a.clone(), b.clone()], 0).expect("plan");
        assert_eq!(plan.len(), 5);
        assert!(notes[0].contains("incomplete last record"), "{notes:?}");

        // The same damage in an older file, or a record missing, is refused.
        let c = write(dir.path(), 3, &[one(6)]);
        let err = replay_plan(&[a.clone(), b, c], 0).expect_err("damaged");
        assert!(err.to_string().contains("is damaged at byte"), "{err}");
        let gap = write(dir.path(), 4, &[one(5)]);
        let err = replay_plan(&[a, gap], 0).expect_err("gap");
        assert!(err.to_string().contains("record 5 follows 3"), "{err}");
        remove_through(dir.path(), 3).expect("remove");
        assert_eq!(files(dir.path()).expect("files").len(), 1);
    }
}
