//! The durable local spool: every event the uplink stamps is appended here before it is sent,
//! and stays until the server acknowledges it as durable, across outages and sensor restarts.
//!
//! **Why segment files, not sled.** The spool must be bounded by bytes *on disk* and must keep
//! working when the disk fills. Append-only segment files make both exact: the bound counts the
//! bytes actually written (sled's log and page files are several times larger than the data,
//! and how sled behaves after `ENOSPC` is not documented), a failed append is rolled back with
//! `set_len`, and dropping the oldest observations is deleting one file. The access pattern is
//! a queue (append at the tail, delete from the head, read forward once per connection), which
//! needs no index, no compaction and no transactions.
//!
//! **Layout** under `--spool-dir`:
//! - `obs-<first seq>.v2.seg`, `dev-<first seq>.v2.seg`: observations and deviations, in two
//!   separate queues so that observations can be dropped first. A record is a magic, its
//!   length, its sequence and a CRC-32, then the protobuf `SensorEvent` exactly as it goes on
//!   the wire ([`record`]). A torn last record (a crash mid-write) is cut off when the spool
//!   opens. A damaged record (its checksum fails) is a counted loss: it is counted once
//!   (`procguard_sensor_spool_corrupt_records_total`, and as a drop), buried under a
//!   tombstone, and reading goes on with the next intact record. Segments of the previous
//!   format (`*.seg`, no checksum) are rewritten in this one when the spool opens, with a log
//!   line each.
//! - `state.json`: the sequence high-water mark (reserved in blocks, so sequence numbers keep
//!   increasing across restarts without an fsync per event) and the lifetime counters
//!   (appended, dropped), written atomically.
//! - `baselines.pb`, `health.pb`: the last baseline snapshot from the server and the last
//!   health report, each written atomically (see [`write_atomic`]).
//!
//! **Full.** When the next record would pass `--spool-bytes`, the oldest observation segment
//! is deleted; only when no observation is left does the oldest deviation segment go, and an
//! incoming observation never evicts a deviation (it is dropped itself). Every dropped event is
//! counted in the metrics and in `state.json`, so a restart does not forget it.
//!
//! **Durability.** Appends are `write(2)` calls (they survive the sensor being killed);
//! [`Spool::sync`] fsyncs them on the uplink's flush tick (every 50 ms) and at shutdown, so
//! a machine crash loses at most that window. The uplink runs these small blocking calls on its
//! own task; an append is one write to the page cache.

use crate::metrics::Metrics;
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub mod record;

use record::{Item, Reader};

/// Suffix of a segment in the current (checksummed) format.
const SEGMENT_SUFFIX: &str = ".v2.seg";
/// Suffix of a segment in the previous format, migrated when the spool opens.
const V1_SUFFIX: &str = ".seg";
/// Sequence numbers reserved per write of `state.json`.
const SEQ_BLOCK: u64 = 100_000;
/// Smallest `--spool-bytes`: a few segments of the smallest size.
pub const MIN_SPOOL_BYTES: u64 = 1024 * 1024;

/// A spool failure.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory or a file in it could not be used.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// `state.json` did not decode.
    #[error("spool state {path} is corrupt ({source}); move it away to start afresh")]
    State {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Which queue an event belongs to; observations are dropped first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A plain observation.
    Observation,
    /// A deviation from an enforced baseline.
    Deviation,
}

impl Class {
    fn prefix(self) -> &'static str {
        match self {
            Class::Observation => "obs-",
            Class::Deviation => "dev-",
        }
    }
}

/// What survives a restart besides the segments.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Sequence numbers up to this one may have been used; a restart continues above it.
    pub seq_reserved: u64,
    /// Highest sequence number counted in `appended`.
    pub last_seq: u64,
    /// Events ever appended to this spool.
    pub appended: u64,
    /// Highest sequence number the server acknowledged, as last saved.
    #[serde(default)]
    pub acked: u64,
    /// Events still unacknowledged when the sensor last stopped cleanly.
    #[serde(default)]
    pub unacked_at_exit: u64,
    /// Dropped while in flight: (sequence, is a deviation). The server may hold them; the next
    /// ack or Welcome decides whether they count as dropped.
    #[serde(default)]
    pub uncertain: Vec<(u64, bool)>,
    /// Observations dropped because the spool was full or the disk failed.
    pub dropped_observations: u64,
    /// Deviations dropped because the spool was full or the disk failed.
    pub dropped_deviations: u64,
    /// The same counters in executions: an event that is a summary stands for several
    /// (`SensorEvent.executions`). `None` in a state written before summaries, when every
    /// event was one execution: filled from the event counters at open.
    #[serde(default)]
    pub executions: Option<Executions>,
}

/// The spool's lifetime counters in executions, beside those in events: executions appended
/// = executions the server stored + executions dropped + executions still spooled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executions {
    /// Executions in the events ever appended.
    pub appended: u64,
    /// Executions in the events dropped (spool full, disk failed, damaged, given up). A
    /// damaged record counts one: how many it stood for cannot be read any more.
    pub dropped: u64,
    /// Executions in the events still unacknowledged when the sensor last stopped cleanly.
    pub unacked_at_exit: u64,
    /// Of the uncertain events (dropped in flight), those standing for more than one
    /// execution: sequence and executions.
    #[serde(default)]
    pub uncertain: std::collections::BTreeMap<u64, u64>,
}

/// How many executions one spooled record stands for: its `SensorEvent.executions` (field 10,
/// a varint; 0 or absent is one), read from the encoded bytes without decoding the event. A
/// payload that does not parse counts one.
pub fn executions_of(payload: &[u8]) -> u64 {
    fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*i)?;
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let (mut i, mut found) = (0usize, 0u64);
    while i < payload.len() {
        let Some(key) = varint(payload, &mut i) else {
            return 1;
        };
        let skip = match key & 7 {
            0 => match varint(payload, &mut i) {
                Some(v) if key >> 3 == 10 => {
                    found = v;
                    0
                }
                Some(_) => 0,
                None => return 1,
            },
            1 => 8,
            2 => match varint(payload, &mut i).and_then(|l| usize::try_from(l).ok()) {
                Some(l) => l,
                None => return 1,
            },
            5 => 4,
            _ => return 1,
        };
        i = match i.checked_add(skip) {
            Some(n) if n <= payload.len() => n,
            _ => return 1,
        };
    }
    found.max(1)
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    last_seq: u64,
    records: u64,
    bytes: u64,
    path: PathBuf,
}

#[derive(Debug)]
struct Reading {
    first_seq: u64,
    reader: Reader,
}

/// A damaged region found while reading, to be counted (once) by the spool.
#[derive(Debug)]
struct Damage {
    path: PathBuf,
    offset: u64,
    bytes: u64,
    /// Sequence of the intact record after it, if any: the damaged record's is below it.
    next_seq: Option<u64>,
}

#[derive(Debug)]
struct Queue {
    segments: VecDeque<Segment>,
    /// Append handle of the last segment, opened lazily.
    writer: Option<File>,
    /// Highest sequence handed out by [`Queue::take`] (or skipped by a rewind).
    cursor: u64,
    reading: Option<Reading>,
    peeked: Option<(u64, Vec<u8>)>,
    dirty: bool,
    /// Damaged regions met while reading, not yet counted by the spool.
    damage: Vec<Damage>,
}

/// A segment's intact records as (sequence, executions it stands for).
type Scanned = Vec<(u64, u64)>;

/// The sequence numbers of a segment's intact records with the executions each stands for,
/// and the damaged regions in it.
fn scan(path: &Path) -> io::Result<(Scanned, Vec<Damage>)> {
    let mut r = Reader::open(path)?;
    let (mut seqs, mut damage) = (Vec::new(), Vec::new());
    loop {
        let offset = r.offset();
        match r.next_item()? {
            Item::Record { seq, payload, .. } => seqs.push((seq, executions_of(&payload))),
            Item::Tombstone { .. } => {}
            Item::Damaged { bytes, next_seq } => damage.push(Damage {
                path: path.to_path_buf(),
                offset,
                bytes,
                next_seq,
            }),
            Item::Torn | Item::End => return Ok((seqs, damage)),
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content: a
/// temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Queue {
    fn new() -> Self {
        Self {
            segments: VecDeque::new(),
            writer: None,
            cursor: 0,
            reading: None,
            peeked: None,
            dirty: false,
            damage: Vec::new(),
        }
    }

    fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Next unread sequence number, reading ahead one record.
    fn peek(&mut self) -> io::Result<Option<u64>> {
        loop {
            if let Some((s, _)) = &self.peeked {
                return Ok(Some(*s));
            }
            if self.reading.is_none() {
                let Some(seg) = self
                    .segments
                    .iter()
                    .find(|s| s.records > 0 && s.last_seq > self.cursor)
                else {
                    return Ok(None);
                };
                self.reading = Some(Reading {
                    first_seq: seg.first_seq,
                    reader: Reader::open(&seg.path)?,
                });
            }
            let r = self.reading.as_mut().expect("opened above");
            let offset = r.reader.offset();
            match r.reader.next_item()? {
                Item::Record { seq, payload, .. } => {
                    if seq > self.cursor {
                        self.peeked = Some((seq, payload));
                    }
                }
                Item::Tombstone { .. } => {}
                Item::Damaged { bytes, next_seq } => {
                    let first_seq = r.first_seq;
                    if let Some(seg) = self.segments.iter().find(|s| s.first_seq == first_seq) {
                        self.damage.push(Damage {
                            path: seg.path.clone(),
                            offset,
                            bytes,
                            next_seq,
                        });
                    }
                }
                Item::Torn | Item::End => {
                    // End of this segment. The last segment may still grow: stay (the reader
                    // stays at the end), so a later read starts cleanly.
                    let is_last = self
                        .segments
                        .back()
                        .is_some_and(|s| s.first_seq == r.first_seq);
                    if is_last {
                        return Ok(None);
                    }
                    let done = r.first_seq;
                    self.reading = None;
                    // Move past this segment even if its records were all at or below the
                    // cursor.
                    if let Some(seg) = self.segments.iter().find(|s| s.first_seq == done) {
                        self.cursor = self.cursor.max(seg.last_seq);
                    }
                }
            }
        }
    }

    fn take(&mut self) -> Option<(u64, Vec<u8>)> {
        let (seq, payload) = self.peeked.take()?;
        self.cursor = seq;
        Some((seq, payload))
    }

    fn rewind(&mut self, after: u64) {
        self.cursor = after;
        self.reading = None;
        self.peeked = None;
    }

    /// Forgets the oldest segment and deletes its file; returns it.
    fn pop_front(&mut self) -> Option<Segment> {
        let seg = self.segments.pop_front()?;
        if self.segments.is_empty() {
            self.writer = None;
        }
        if self
            .reading
            .as_ref()
            .is_some_and(|r| r.first_seq == seg.first_seq)
        {
            self.reading = None;
        }
        if self
            .peeked
            .as_ref()
            .is_some_and(|(s, _)| *s <= seg.last_seq)
        {
            self.peeked = None;
        }
        self.cursor = self.cursor.max(seg.last_seq);
        if let Err(error) = std::fs::remove_file(&seg.path) {
            tracing::warn!(message = "Cannot delete a spool segment.", path = %seg.path.display(), %error);
        }
        Some(seg)
    }
}

/// The spool. One per sensor, owned by the uplink task.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    obs: Queue,
    dev: Queue,
    state: State,
    state_dirty: bool,
    next_seq: u64,
    acked: u64,
    metrics: Metrics,
    /// Damaged regions counted in this run, so one whose tombstone could not be written is
    /// not counted twice.
    damage_seen: HashSet<(PathBuf, u64)>,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, bounded by `max_bytes`, and recovers what a
    /// previous run left: segments (cutting a torn last record), counters and the sequence
    /// high-water mark.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Metrics) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        let state_path = dir.join("state.json");
        let mut state: State = match std::fs::read(&state_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| SpoolError::State {
                path: state_path.clone(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io_at(&state_path)(e)),
        };
        let mut obs = Queue::new();
        let mut dev = Queue::new();
        let mut found = Vec::new();
        let mut legacy = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
            let entry = entry.map_err(io_at(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let (stem, current) = if let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) {
                (stem, true)
            } else if let Some(stem) = name.strip_suffix(V1_SUFFIX) {
                (stem, false)
            } else {
                continue;
            };
            let (class, digits) = if let Some(d) = stem.strip_prefix("obs-") {
                (Class::Observation, d)
            } else if let Some(d) = stem.strip_prefix("dev-") {
                (Class::Deviation, d)
            } else {
                continue;
            };
            let Ok(first_seq) = digits.parse::<u64>() else {
                continue;
            };
            let path = dir.join(format!("{}{first_seq:020}{SEGMENT_SUFFIX}", class.prefix()));
            if current {
                found.push((class, first_seq, path));
            } else {
                legacy.push((class, first_seq, entry.path(), path));
            }
        }
        // Segments of the previous format are rewritten in the current one, once. A crash
        // after the new file was renamed into place but before the old one was removed leaves
        // both: the new one is whole (it was synced before the rename), so the old one goes.
        for (class, first_seq, old, new) in legacy {
            if found.iter().any(|(_, _, p)| *p == new) {
                std::fs::remove_file(&old).map_err(io_at(&old))?;
                continue;
            }
            let (records, unread) = record::migrate_v1(&old, &new).map_err(io_at(&old))?;
            tracing::info!(
                message = "Migrated a spool segment to the checksummed format.",
                from = %old.display(),
                to = %new.display(),
                records,
                torn_bytes_cut = unread
            );
            found.push((class, first_seq, new));
        }
        found.sort_by_key(|(_, s, _)| *s);
        let mut recovered_new = 0u64;
        let mut recovered_executions = 0u64;
        let mut max_seq = 0u64;
        let mut damaged = Vec::new();
        for (class, first_seq, path) in found {
            let mut r = Reader::open(&path).map_err(io_at(&path))?;
            let (mut records, mut last_seq) = (0u64, 0u64);
            loop {
                let offset = r.offset();
                match r.next_item().map_err(io_at(&path))? {
                    Item::Record { seq, payload, .. } => {
                        records += 1;
                        last_seq = seq;
                        if seq > state.last_seq {
                            recovered_new += 1;
                            recovered_executions += executions_of(&payload);
                        }
                    }
                    Item::Tombstone { .. } => {}
                    Item::Damaged { bytes, next_seq } => damaged.push((
                        class,
                        Damage {
                            path: path.clone(),
                            offset,
                            bytes,
                            next_seq,
                        },
                    )),
                    Item::Torn | Item::End => break,
                }
            }
            let valid = r.offset();
            let len = std::fs::metadata(&path).map_err(io_at(&path))?.len();
            if len > valid {
                tracing::warn!(message = "Cut a torn record off a spool segment.", path = %path.display(), bytes = len - valid);
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(valid))
                    .map_err(io_at(&path))?;
            }
            if records == 0 {
                // Nothing intact in it (any damage is counted below).
                let _ = std::fs::remove_file(&path);
                continue;
            }
            max_seq = max_seq.max(last_seq);
            let q = if class == Class::Observation {
                &mut obs
            } else {
                &mut dev
            };
            q.segments.push_back(Segment {
                first_seq,
                last_seq: last_seq.max(first_seq),
                records,
                bytes: valid,
                path,
            });
        }
        // A state from before summaries: every event was one execution.
        let executions = state.executions.get_or_insert_with(|| Executions {
            appended: state.appended,
            dropped: state.dropped_observations + state.dropped_deviations,
            unacked_at_exit: state.unacked_at_exit,
            uncertain: Default::default(),
        });
        // Events written after the last state save (the process was killed) are counted now.
        executions.appended += recovered_executions;
        state.appended += recovered_new;
        state.last_seq = state.last_seq.max(max_seq);
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        // Continue above everything that may have been handed out. The clock is a floor so
        // that a sensor whose spool was wiped still numbers above its previous life.
        let next_seq = state.seq_reserved.max(max_seq).max(now_us);
        let segment_bytes = (max_bytes / 16).clamp(64 * 1024, 8 * 1024 * 1024);
        metrics
            .buffer_drops
            .inc_by(state.dropped_observations + state.dropped_deviations);
        metrics
            .spool_dropped_deviations
            .inc_by(state.dropped_deviations);
        metrics.spool_appended.inc_by(state.appended);
        let acked = state.acked;
        let mut s = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes,
            obs,
            dev,
            state,
            state_dirty: true,
            next_seq,
            acked,
            metrics,
            damage_seen: HashSet::new(),
        };
        s.reserve(next_seq + 1)?;
        for (class, d) in damaged {
            s.count_damage(class, d, false);
        }
        s.gauges();
        tracing::info!(
            message = "Spool opened.",
            dir = %dir.display(),
            bytes = s.bytes(),
            max_bytes,
            next_sequence = next_seq + 1,
            recovered = recovered_new
        );
        Ok(s)
    }

    fn reserve(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq > self.state.seq_reserved {
            self.state.seq_reserved = seq + SEQ_BLOCK;
            self.save_state()?;
        }
        Ok(())
    }

    fn save_state(&mut self) -> Result<(), SpoolError> {
        let path = self.dir.join("state.json");
        let bytes = serde_json::to_vec_pretty(&self.state).expect("state serialises");
        write_atomic(&path, &bytes).map_err(io_at(&path))?;
        self.state_dirty = false;
        Ok(())
    }

    /// The counters as last persisted or updated.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Bytes held on disk.
    pub fn bytes(&self) -> u64 {
        self.obs.bytes() + self.dev.bytes()
    }

    /// Records held (acknowledged ones in a partly acknowledged segment included).
    pub fn records(&self) -> u64 {
        self.obs
            .segments
            .iter()
            .chain(self.dev.segments.iter())
            .map(|s| s.records)
            .sum()
    }

    /// Highest sequence number handed out.
    pub fn last_sequence(&self) -> u64 {
        self.next_seq
    }

    fn gauges(&self) {
        self.metrics.pending.set(self.records() as i64);
        self.metrics.spool_bytes.set(self.bytes() as i64);
    }

    /// Hands out the next sequence number; it is never reused, even after a restart.
    pub fn next_sequence(&mut self) -> u64 {
        self.next_seq += 1;
        if let Err(error) = self.reserve(self.next_seq) {
            // The number is still unique within this run; only a restart after this failure
            // could reuse it, and the clock floor in `open` makes that unlikely.
            tracing::warn!(message = "Cannot save the spool's sequence high-water mark.", %error);
        }
        self.next_seq
    }

    fn queue(&mut self, class: Class) -> &mut Queue {
        match class {
            Class::Observation => &mut self.obs,
            Class::Deviation => &mut self.dev,
        }
    }

    /// The execution counters (always set once the spool is open).
    fn executions(&mut self) -> &mut Executions {
        self.state.executions.get_or_insert_with(Default::default)
    }

    /// Counts `n` events of `class`, standing for `executions` executions, as dropped.
    fn count_drop(&mut self, class: Class, n: u64, executions: u64) {
        if n == 0 {
            return;
        }
        self.executions().dropped += executions;
        self.metrics.buffer_drops.inc_by(n);
        match class {
            Class::Observation => self.state.dropped_observations += n,
            Class::Deviation => {
                self.state.dropped_deviations += n;
                self.metrics.spool_dropped_deviations.inc_by(n);
            }
        }
        // Drops are rare and must survive a crash: save now.
        if let Err(error) = self.save_state() {
            self.state_dirty = true;
            tracing::warn!(message = "Cannot save spool counters.", %error);
        }
    }

    /// Counts `n` events of `class`, standing for `executions` executions, as lost (the
    /// uplink gave them up).
    pub fn count_lost(&mut self, class: Class, n: u64, executions: u64) {
        self.count_drop(class, n, executions);
    }

    /// A damaged record: a loss, counted once (as a drop, and in
    /// `procguard_sensor_spool_corrupt_records_total`) unless the server already acknowledged
    /// it (the intact record after it is at or below the acknowledged mark), then buried
    /// under a tombstone so that neither this run nor the next counts it again. `in_records`:
    /// the segment's record count still includes it (damage found while reading, not at open).
    fn count_damage(&mut self, class: Class, d: Damage, in_records: bool) {
        if !self.damage_seen.insert((d.path.clone(), d.offset)) {
            return;
        }
        if in_records {
            let q = self.queue(class);
            if let Some(seg) = q.segments.iter_mut().find(|s| s.path == d.path) {
                seg.records = seg.records.saturating_sub(1);
            }
        }
        // Its sequence is below the next intact record's; unknown when none follows.
        let acknowledged = d
            .next_seq
            .is_some_and(|n| n.saturating_sub(1) <= self.acked);
        match record::bury(&d.path, d.offset, d.bytes) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                self.metrics.spool_write_errors.inc();
                tracing::warn!(message = "Cannot mark a damaged spool record as counted; this run will not count it again, a restart may.", path = %d.path.display(), %error);
            }
        }
        if acknowledged {
            tracing::warn!(message = "Spool record damaged on disk; the server had already acknowledged it, so nothing is lost.", path = %d.path.display(), offset = d.offset, bytes = d.bytes);
            return;
        }
        self.metrics.spool_corrupt_records.inc();
        tracing::warn!(
            message = "Spool record damaged on disk (its checksum fails); counted as a lost event, and the records after it are sent.",
            class = ?class,
            path = %d.path.display(),
            offset = d.offset,
            bytes = d.bytes,
            next_sequence = d.next_seq.unwrap_or(0)
        );
        // How many executions it stood for cannot be read: counted as one.
        self.count_drop(class, 1, 1);
    }

    /// Counts the damaged regions the readers met.
    fn count_read_damage(&mut self) {
        for class in [Class::Observation, Class::Deviation] {
            let found = std::mem::take(&mut self.queue(class).damage);
            for d in found {
                self.count_damage(class, d, true);
            }
        }
    }

    /// Deletes the oldest segment of `class`, counting its unacknowledged events as dropped.
    fn drop_oldest(&mut self, class: Class) -> bool {
        let acked = self.acked;
        let q = self.queue(class);
        let Some(seg) = q.segments.front() else {
            return false;
        };
        // Records already handed to the uplink may be stored by the server whose ack has not
        // arrived: they are held as uncertain and settled by the next ack or Welcome, so a
        // drop is never counted for an event the server has.
        let sent_upto = q.cursor;
        let (mut dropped, mut uncertain) = (0u64, Vec::new());
        let mut dropped_executions = 0u64;
        // Read even when nothing of it was sent: the executions its records stand for are
        // counted (a drop is rare; a spool that is full is not being read anyway).
        {
            match scan(&seg.path) {
                Ok((seqs, damage)) => {
                    for (seq, executions) in seqs {
                        if seq <= acked {
                        } else if seq <= sent_upto {
                            uncertain.push((seq, class == Class::Deviation, executions));
                        } else {
                            dropped += 1;
                            dropped_executions += executions;
                        }
                    }
                    // Damage not met before is lost with the segment: counted with it.
                    let fresh: Vec<_> = damage
                        .into_iter()
                        .filter(|d| !self.damage_seen.contains(&(d.path.clone(), d.offset)))
                        .collect();
                    self.metrics
                        .spool_corrupt_records
                        .inc_by(fresh.len() as u64);
                    dropped += fresh.len() as u64;
                    dropped_executions += fresh.len() as u64;
                }
                Err(error) => {
                    tracing::warn!(message = "Cannot read a spool segment before dropping it; counting all of it, one execution each.", %error);
                    dropped = seg.records;
                    dropped_executions = seg.records;
                }
            }
        }
        self.queue(class).pop_front();
        tracing::warn!(
            message = "Spool full; dropped the oldest segment.",
            class = ?class,
            events = dropped,
            in_flight = uncertain.len(),
            max_bytes = self.max_bytes
        );
        for (seq, deviation, executions) in uncertain {
            self.state.uncertain.push((seq, deviation));
            if executions > 1 {
                self.executions().uncertain.insert(seq, executions);
            }
        }
        self.state_dirty = true;
        self.count_drop(class, dropped, dropped_executions);
        true
    }

    /// Events dropped while the server may already hold them, waiting for an ack or Welcome.
    pub fn uncertain(&self) -> usize {
        self.state.uncertain.len()
    }

    /// A new connection's Welcome says what the server holds: dropped events at or below
    /// `acked` were stored; the rest never will be, and are counted as dropped now.
    pub fn settle(&mut self, acked: u64) {
        self.ack(acked);
        let mark = self.acked.max(acked);
        self.state.uncertain.retain(|(s, _)| *s > mark);
        let rest = std::mem::take(&mut self.state.uncertain);
        let many = std::mem::take(&mut self.executions().uncertain);
        let executions = |deviation: bool| {
            rest.iter()
                .filter(|(_, d)| *d == deviation)
                .map(|(s, _)| many.get(s).copied().unwrap_or(1))
                .sum::<u64>()
        };
        let (dev_executions, obs_executions) = (executions(true), executions(false));
        let devs = rest.iter().filter(|(_, d)| *d).count() as u64;
        self.state_dirty = true;
        if devs > 0 {
            self.count_drop(Class::Deviation, devs, dev_executions);
        }
        self.count_drop(Class::Observation, rest.len() as u64 - devs, obs_executions);
        self.sync();
    }

    /// Frees room for `need` bytes: observations first, oldest first; deviations last; an
    /// incoming observation never evicts a deviation.
    fn make_room(&mut self, need: u64, incoming: Class) -> bool {
        while self.bytes() + need > self.max_bytes {
            if self.drop_oldest(Class::Observation) {
                continue;
            }
            if incoming == Class::Observation || !self.drop_oldest(Class::Deviation) {
                return false;
            }
        }
        true
    }

    fn write(&mut self, class: Class, seq: u64, record: &[u8]) -> io::Result<()> {
        let segment_bytes = self.segment_bytes;
        let dir = self.dir.clone();
        let q = self.queue(class);
        let rotate = q
            .segments
            .back()
            .is_none_or(|s| s.bytes + record.len() as u64 > segment_bytes && s.records > 0);
        if rotate || q.writer.is_none() {
            if rotate {
                let path = dir.join(format!("{}{seq:020}{SEGMENT_SUFFIX}", class.prefix()));
                let f = OpenOptions::new().create(true).append(true).open(&path)?;
                q.segments.push_back(Segment {
                    first_seq: seq,
                    last_seq: 0,
                    records: 0,
                    bytes: 0,
                    path,
                });
                // The previous segment's data is synced with the next `sync`.
                if let Some(old) = q.writer.replace(f) {
                    old.sync_data()?;
                }
            } else {
                let path = q.segments.back().expect("not rotating").path.clone();
                q.writer = Some(OpenOptions::new().append(true).open(&path)?);
            }
        }
        let seg = q.segments.back_mut().expect("segment exists");
        let w = q.writer.as_mut().expect("writer exists");
        if let Err(e) = w.write_all(record) {
            // Roll back a partial record so the segment stays readable.
            let _ = w.set_len(seg.bytes);
            if seg.records == 0 {
                let seg = q.segments.pop_back().expect("just pushed");
                q.writer = None;
                let _ = std::fs::remove_file(&seg.path);
            }
            return Err(e);
        }
        seg.bytes += record.len() as u64;
        seg.records += 1;
        seg.last_seq = seq;
        q.dirty = true;
        Ok(())
    }

    /// Appends one encoded event. Returns false when the event was dropped (and counted).
    pub fn append(&mut self, class: Class, seq: u64, payload: &[u8]) -> bool {
        let record = record::encode(seq, payload);
        let executions = executions_of(payload);
        self.state.appended += 1;
        self.executions().appended += executions;
        self.state.last_seq = seq;
        self.state_dirty = true;
        self.metrics.spool_appended.inc();
        let mut ok = self.make_room(record.len() as u64, class);
        if ok {
            if let Err(error) = self.write(class, seq, &record) {
                self.metrics.spool_write_errors.inc();
                // The disk is full or failing: give up the oldest observations and try once
                // more before dropping this event.
                // Counted in procguard_sensor_spool_write_errors_total; a failing disk fails
                // every write, so it is logged once a minute.
                static FAILED: procguard_runtime::repeated::Repeated =
                    procguard_runtime::repeated::Repeated::new(std::time::Duration::from_secs(60));
                if let Some(held_back) = FAILED.admit() {
                    tracing::warn!(message = "Spool write failed; freeing the oldest observations.", %error, held_back);
                }
                let freed = self.drop_oldest(Class::Observation);
                ok = freed && self.write(class, seq, &record).is_ok();
                if !ok {
                    self.metrics.spool_write_errors.inc();
                }
            }
        }
        if !ok {
            self.count_drop(class, 1, executions);
        }
        self.gauges();
        ok
    }

    /// Makes appended records durable and saves the counters.
    pub fn sync(&mut self) {
        for q in [&mut self.obs, &mut self.dev] {
            if q.dirty {
                if let Some(w) = &q.writer {
                    if let Err(error) = w.sync_data() {
                        self.metrics.spool_write_errors.inc();
                        tracing::warn!(message = "Spool fsync failed.", %error);
                    }
                }
                q.dirty = false;
            }
        }
        if self.state_dirty {
            if let Err(error) = self.save_state() {
                tracing::warn!(message = "Cannot save spool counters.", %error);
            }
        }
    }

    /// Events held that the server has not acknowledged.
    pub fn unacked(&self) -> u64 {
        let acked = self.acked;
        let mut n = 0;
        for seg in self.obs.segments.iter().chain(self.dev.segments.iter()) {
            if seg.first_seq > acked {
                n += seg.records;
            } else if seg.last_seq > acked {
                if let Ok((seqs, _)) = scan(&seg.path) {
                    n += seqs.iter().filter(|(s, _)| *s > acked).count() as u64;
                }
            }
        }
        n
    }

    /// Executions in the events held that the server has not acknowledged (reads them).
    pub fn unacked_executions(&self) -> u64 {
        let acked = self.acked;
        let mut n = 0;
        for seg in self.obs.segments.iter().chain(self.dev.segments.iter()) {
            if seg.last_seq <= acked {
                continue;
            }
            match scan(&seg.path) {
                Ok((seqs, _)) => {
                    n += seqs
                        .iter()
                        .filter(|(s, _)| *s > acked)
                        .map(|(_, e)| e)
                        .sum::<u64>()
                }
                // Unreadable: one execution per record, as counted elsewhere.
                Err(_) => n += seg.records,
            }
        }
        n
    }

    /// Syncs and records how many events stay unacknowledged, for the next run and for
    /// operators (`state.json`).
    pub fn close(&mut self) {
        self.state.unacked_at_exit = self.unacked();
        let executions = self.unacked_executions();
        self.executions().unacked_at_exit = executions;
        self.state_dirty = true;
        self.sync();
        tracing::info!(
            message = "Spool closed.",
            appended = self.state.appended,
            dropped = self.state.dropped_observations + self.state.dropped_deviations,
            unacknowledged = self.state.unacked_at_exit
        );
    }

    /// The server holds every event up to `seq`: delete segments that are wholly acknowledged.
    pub fn ack(&mut self, seq: u64) {
        if seq <= self.acked {
            return;
        }
        self.acked = seq;
        self.state.acked = seq;
        // Dropped while in flight, and the server has them: not a loss after all.
        self.state.uncertain.retain(|(s, _)| *s > seq);
        self.executions().uncertain.retain(|s, _| *s > seq);
        self.state_dirty = true;
        // Counters first: once a segment is gone its events can no longer be recounted.
        // A segment with no intact record left (all damaged, and counted) goes too.
        let done = |s: &Segment| s.records == 0 || s.last_seq <= seq;
        let deletes = [&self.obs, &self.dev]
            .iter()
            .any(|q| q.segments.front().is_some_and(done));
        if deletes {
            self.sync();
        }
        for class in [Class::Observation, Class::Deviation] {
            let q = self.queue(class);
            while q.segments.front().is_some_and(done) {
                q.pop_front();
            }
        }
        self.gauges();
    }

    /// Highest acknowledged sequence number seen.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Reading starts again after `after` (a new connection replays from the server's mark).
    pub fn rewind(&mut self, after: u64) {
        self.obs.rewind(after);
        self.dev.rewind(after);
    }

    /// Up to `max` records after the read position, in sequence order across both queues,
    /// whose `cost` (of each payload's length) adds up to at most `budget`; a first record
    /// over the budget alone is returned alone (the caller shrinks it).
    pub fn next_batch(
        &mut self,
        max: usize,
        budget: usize,
        cost: impl Fn(usize) -> usize,
    ) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut used = 0usize;
        while out.len() < max {
            let a = self.obs.peek().unwrap_or_else(|e| self.read_failed(e));
            let b = self.dev.peek().unwrap_or_else(|e| self.read_failed(e));
            let q = match (a, b) {
                (None, None) => break,
                (Some(_), None) => &mut self.obs,
                (None, Some(_)) => &mut self.dev,
                (Some(x), Some(y)) if x < y => &mut self.obs,
                _ => &mut self.dev,
            };
            let c = q.peeked.as_ref().map(|(_, p)| cost(p.len())).unwrap_or(0);
            if !out.is_empty() && used.saturating_add(c) > budget {
                break;
            }
            used = used.saturating_add(c);
            if let Some(r) = q.take() {
                out.push(r);
            }
        }
        self.count_read_damage();
        out
    }

    fn read_failed(&self, error: io::Error) -> Option<u64> {
        self.metrics.spool_write_errors.inc();
        tracing::warn!(message = "Cannot read the spool back; will retry.", %error);
        None
    }

    /// Saves a small side file (baselines, health) atomically under the spool directory.
    pub fn save_file(&self, name: &str, bytes: &[u8]) {
        let path = self.dir.join(name);
        if let Err(error) = write_atomic(&path, bytes) {
            tracing::warn!(message = "Cannot save a spool file.", path = %path.display(), %error);
        }
    }

    /// Reads a side file saved with [`Spool::save_file`].
    pub fn load_file(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(name)).ok()
    }

    /// Deletes a side file.
    pub fn remove_file(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, max: u64) -> Spool {
        Spool::open(dir, max, Metrics::default()).unwrap()
    }

    fn fill(s: &mut Spool, class: Class, n: usize, size: usize) -> Vec<u64> {
        (0..n)
            .map(|_| {
                let seq = s.next_sequence();
                s.append(class, seq, &vec![b'x'; size]);
                seq
            })
            .collect()
    }

    fn drain(s: &mut Spool) -> Vec<u64> {
        let mut all = Vec::new();
        loop {
            let b = s.next_batch(7, usize::MAX, |l| l);
            if b.is_empty() {
                return all;
            }
            all.extend(b.into_iter().map(|(q, _)| q));
        }
    }

    #[test]
    fn replays_in_sequence_order_across_queues_and_restarts() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path(), 10 * MIN_SPOOL_BYTES);
        let mut want = fill(&mut s, Class::Observation, 3, 10);
        want.extend(fill(&mut s, Class::Deviation, 2, 10));
        want.extend(fill(&mut s, Class::Observation, 2, 10));
        assert_eq!(drain(&mut s), want);
        // Nothing more until something is appended; then only the new one.
        want.extend(fill(&mut s, Class::Deviation, 1, 10));
        assert_eq!(drain(&mut s), want[7..].to_vec());
        s.ack(want[2]);
        s.rewind(want[2]);
        assert_eq!(drain(&mut s), want[3..].to_vec());
        let last = s.last_sequence();
        s.sync();
        drop(s);
        // A restart replays what was not acknowledged and numbers above everything before.
        let mut s = open(d.path(), 10 * MIN_SPOOL_BYTES);
        s.rewind(want[2]);
        assert_eq!(drain(&mut s), want[3..].to_vec());
        assert!(s.next_sequence() > last);
        assert_eq!(s.state().appended, 8);
    }

    #[test]
    fn when_full_observations_go_first_and_every_drop_is_counted() {
        let d = tempfile::tempdir().unwrap();
        let m = Metrics::default();
        let mut s = Spool::open(d.path(), MIN_SPOOL_BYTES, m.clone()).unwrap();
        let devs = fill(&mut s, Class::Deviation, 100, 1000);
        fill(&mut s, Class::Observation, 3000, 1000);
        assert!(s.bytes() <= MIN_SPOOL_BYTES);
        let kept = drain(&mut s);
        assert!(
            devs.iter().all(|d| kept.contains(d)),
            "a deviation was dropped"
        );
        let dropped = s.state().dropped_observations;
        assert!(dropped > 0);
        assert_eq!(kept.len() as u64 + dropped, 3100);
        assert_eq!(m.buffer_drops.get(), dropped);
        assert_eq!(s.state().dropped_deviations, 0);
        // Deviations alone past the bound: the oldest deviations go, counted.
        fill(&mut s, Class::Deviation, 2000, 1000);
        assert!(s.state().dropped_deviations > 0);
        assert!(s.bytes() <= MIN_SPOOL_BYTES);
    }

    #[test]
    fn a_torn_last_record_is_cut_and_counts_survive_a_kill() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path(), 10 * MIN_SPOOL_BYTES);
        let seqs = fill(&mut s, Class::Observation, 5, 100);
        // No sync: as if killed. Then a torn half record at the end.
        let seg = s.obs.segments[0].path.clone();
        drop(s);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[50, 0, 0, 0, 1, 2]).unwrap();
        let mut s = open(d.path(), 10 * MIN_SPOOL_BYTES);
        assert_eq!(drain(&mut s), seqs);
        assert_eq!(s.state().appended, 5);
    }

    #[test]
    fn events_dropped_in_flight_count_only_if_the_server_lacks_them() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path(), MIN_SPOOL_BYTES);
        let first = fill(&mut s, Class::Observation, 100, 1000);
        // Sent (read) but not acknowledged ...
        assert_eq!(drain(&mut s).len(), 100);
        // ... then the spool fills and drops the oldest segments.
        fill(&mut s, Class::Observation, 1000, 1000);
        let uncertain = s.uncertain() as u64;
        assert!(uncertain > 0);
        let counted = s.state().dropped_observations;
        // The server acknowledges the first half: those were stored, not lost.
        s.ack(first[49]);
        assert!((s.uncertain() as u64) < uncertain);
        // A new connection says nothing more arrived: the rest are lost, and counted.
        let left = s.uncertain() as u64;
        s.settle(first[49]);
        assert_eq!(s.uncertain(), 0);
        assert_eq!(s.state().dropped_observations, counted + left);
    }

    /// An encoded event standing for `executions` executions, padded to about `size` bytes.
    fn summary(executions: u64, size: usize) -> Vec<u8> {
        use prost::Message;
        procguard_proto::v1::SensorEvent {
            event_id: "x".repeat(size),
            executions,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn executions_are_read_from_the_encoded_event() {
        for n in [0u64, 1, 2, 127, 128, 1_000_000_000] {
            assert_eq!(executions_of(&summary(n, 10)), n.max(1), "{n}");
        }
        // Every other field kind before it is skipped.
        use prost::Message;
        let full = procguard_proto::v1::SensorEvent {
            event_id: "e".into(),
            sequence: u64::MAX,
            kind: 2,
            observed_at: Some(procguard_proto::convert::timestamp(SystemTime::now())),
            baseline_revision: 9,
            executions: 77,
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(executions_of(&full), 77);
        // What does not parse counts one, never zero and never a number it made up.
        for junk in [&b""[..], b"\xff", b"\x52\xff\xff", b"\x0f", &[0x50, 0x80]] {
            assert_eq!(executions_of(junk), 1, "{junk:?}");
        }
    }

    /// The lifetime invariant holds in executions as in events: appended = acknowledged +
    /// dropped + still spooled, through drops in flight settled by a Welcome, a kill before
    /// the counters were saved, and a clean stop.
    #[test]
    fn executions_are_accounted_for_like_events() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path(), MIN_SPOOL_BYTES);
        let append = |s: &mut Spool, class, n: u64| {
            let seq = s.next_sequence();
            s.append(class, seq, &summary(n, 900));
            (seq, n)
        };
        let mut all: Vec<(u64, u64)> = (0..300)
            .map(|i| append(&mut s, Class::Observation, 1 + i % 7))
            .collect();
        all.push(append(&mut s, Class::Deviation, 10_000));
        // Sent, not acknowledged; then the spool fills and drops the oldest in flight.
        drain(&mut s);
        all.extend((0..1500).map(|i| append(&mut s, Class::Observation, 1 + i % 3)));
        assert!(s.uncertain() > 0);
        // The server stored the first 40; a Welcome settles the rest as lost.
        let stored: u64 = all[..40].iter().map(|(_, n)| n).sum();
        s.settle(all[39].0);
        s.sync();
        let appended: u64 = all.iter().map(|(_, n)| n).sum();
        // Five more, then killed before the counters were saved: counted again at open.
        for _ in 0..5 {
            let seq = s.next_sequence();
            s.append(Class::Observation, seq, &summary(3, 900));
        }
        drop(s);
        let mut s = open(d.path(), MIN_SPOOL_BYTES);
        s.close();
        let e = s.state().executions.clone().unwrap();
        assert_eq!(e.appended, appended + 15);
        assert!(e.dropped > 0, "{e:?}");
        assert_eq!(e.appended, stored + e.dropped + e.unacked_at_exit, "{e:?}");
        assert!(e.uncertain.is_empty());
        // The deviation of 10,000 was kept (observations go first).
        assert!(e.unacked_at_exit >= 10_000, "{e:?}");
    }

    /// A state written before summaries counts every event as one execution.
    #[test]
    fn a_state_from_before_summaries_counts_events_as_executions() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path(), 10 * MIN_SPOOL_BYTES);
        fill(&mut s, Class::Observation, 4, 100);
        s.close();
        let path = d.path().join("state.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("executions");
        v["dropped_observations"] = 2.into();
        std::fs::write(&path, v.to_string()).unwrap();
        let s = open(d.path(), 10 * MIN_SPOOL_BYTES);
        let e = s.state().executions.clone().unwrap();
        assert_eq!((e.appended, e.dropped, e.unacked_at_exit), (4, 2, 4));
    }

    #[test]
    fn acknowledged_segments_are_deleted() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path(), MIN_SPOOL_BYTES);
        let seqs = fill(&mut s, Class::Observation, 500, 1000);
        let before = s.bytes();
        s.ack(*seqs.last().unwrap());
        assert!(s.bytes() < before);
        assert_eq!(s.records(), 0);
        assert_eq!(s.state().dropped_observations, 0);
    }

    /// Flips one byte inside the `n`th record of a segment (0-based).
    fn damage(path: &Path, n: usize) {
        let mut b = std::fs::read(path).unwrap();
        let mut at = 0usize;
        for _ in 0..n {
            let len = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
            at += if b[at..at + 4] == record::TOMB {
                len
            } else {
                record::HEADER as usize + len
            };
        }
        b[at + record::HEADER as usize + 2] ^= 0xff;
        std::fs::write(path, b).unwrap();
    }

    #[test]
    fn a_damaged_record_is_one_counted_loss_once_and_the_rest_is_replayed() {
        let d = tempfile::tempdir().unwrap();
        let m = Metrics::default();
        let mut s = Spool::open(d.path(), 10 * MIN_SPOOL_BYTES, m.clone()).unwrap();
        let seqs = fill(&mut s, Class::Observation, 10, 100);
        s.sync();
        let seg = s.obs.segments[0].path.clone();
        drop(s);
        damage(&seg, 4);
        // Found when the spool opens: counted once, the rest replays.
        let m = Metrics::default();
        let mut s = Spool::open(d.path(), 10 * MIN_SPOOL_BYTES, m.clone()).unwrap();
        let want: Vec<u64> = seqs.iter().copied().filter(|q| *q != seqs[4]).collect();
        assert_eq!(drain(&mut s), want);
        assert_eq!(s.state().dropped_observations, 1);
        assert_eq!(m.spool_corrupt_records.get(), 1);
        s.rewind(0);
        assert_eq!(drain(&mut s), want, "a replay skips it quietly");
        s.sync();
        drop(s);
        // Buried: a restart neither counts it again nor stops at it.
        let m = Metrics::default();
        let mut s = Spool::open(d.path(), 10 * MIN_SPOOL_BYTES, m.clone()).unwrap();
        assert_eq!(drain(&mut s), want);
        assert_eq!(s.state().dropped_observations, 1);
        assert_eq!(m.spool_corrupt_records.get(), 0);
        // Appended = still held + dropped.
        assert_eq!(s.state().appended, s.unacked() + 1);
        s.ack(*seqs.last().unwrap());
        assert_eq!(s.records(), 0);
    }

    #[test]
    fn damage_found_while_running_is_counted_once_and_never_stops_the_reader() {
        let d = tempfile::tempdir().unwrap();
        let m = Metrics::default();
        let mut s = Spool::open(d.path(), 10 * MIN_SPOOL_BYTES, m.clone()).unwrap();
        let seqs = fill(&mut s, Class::Deviation, 6, 50);
        damage(&s.dev.segments[0].path.clone(), 2);
        let want: Vec<u64> = seqs.iter().copied().filter(|q| *q != seqs[2]).collect();
        assert_eq!(drain(&mut s), want);
        s.rewind(0);
        assert_eq!(drain(&mut s), want);
        assert_eq!(s.state().dropped_deviations, 1);
        assert_eq!(m.spool_corrupt_records.get(), 1);
        assert_eq!(s.records(), 5);
        // A damaged record the server had acknowledged is no loss.
        let more = fill(&mut s, Class::Deviation, 3, 50);
        s.ack(more[1]);
        damage(&s.dev.segments[0].path.clone(), 6);
        s.rewind(more[1]);
        assert_eq!(drain(&mut s), vec![more[2]]);
        assert_eq!(s.state().dropped_deviations, 1);
    }

    #[test]
    fn a_spool_of_the_previous_format_is_migrated_and_replayed_whole() {
        let d = tempfile::tempdir().unwrap();
        let old = |name: &str, seqs: &[u64]| {
            let mut b = Vec::new();
            for seq in seqs {
                let p = format!("event {seq}");
                b.extend_from_slice(&(p.len() as u32).to_le_bytes());
                b.extend_from_slice(&seq.to_le_bytes());
                b.extend_from_slice(p.as_bytes());
            }
            std::fs::write(d.path().join(name), b).unwrap();
        };
        old("obs-00000000000000000011.seg", &[11, 12, 14]);
        old("dev-00000000000000000013.seg", &[13, 15]);
        let state = State {
            seq_reserved: 100,
            last_seq: 15,
            appended: 5,
            ..State::default()
        };
        std::fs::write(
            d.path().join("state.json"),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        let mut s = open(d.path(), 10 * MIN_SPOOL_BYTES);
        let mut got = Vec::new();
        loop {
            let b = s.next_batch(2, usize::MAX, |l| l);
            if b.is_empty() {
                break;
            }
            got.extend(b);
        }
        let want: Vec<(u64, Vec<u8>)> = [11u64, 12, 13, 14, 15]
            .iter()
            .map(|q| (*q, format!("event {q}").into_bytes()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(s.state().appended, 5, "nothing counted twice");
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".seg"))
            .collect();
        assert!(
            names.iter().all(|n| n.ends_with(SEGMENT_SUFFIX)),
            "{names:?}"
        );
    }
}
