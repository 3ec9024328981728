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
//! - `obs-<first seq>.seg`, `dev-<first seq>.seg`: observations and deviations, in two
//!   separate queues so that observations can be dropped first. A record is `u32` LE payload
//!   length, `u64` LE sequence, then the protobuf `SensorEvent`. A torn last record (a crash
//!   mid-write) is cut off when the spool opens.
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
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Record header: payload length (u32) and sequence number (u64).
const HEADER: u64 = 12;
/// Largest record accepted when reading back; anything larger is corruption.
const MAX_RECORD: u32 = 4 * 1024 * 1024;
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
    /// Observations dropped because the spool was full or the disk failed.
    pub dropped_observations: u64,
    /// Deviations dropped because the spool was full or the disk failed.
    pub dropped_deviations: u64,
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
    offset: u64,
    file: BufReader<File>,
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
}

/// Reads one record; `Ok(None)` at a clean or torn end.
fn read_record(r: &mut impl Read) -> io::Result<Option<(u64, Vec<u8>)>> {
    let mut h = [0u8; HEADER as usize];
    match r.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(h[..4].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(h[4..].try_into().expect("8 bytes"));
    if len > MAX_RECORD || seq == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("record of {len} bytes with sequence {seq}"),
        ));
    }
    let mut payload = vec![0u8; len as usize];
    match r.read_exact(&mut payload) {
        Ok(()) => Ok(Some((seq, payload))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
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
                let file = File::open(&seg.path)?;
                self.reading = Some(Reading {
                    first_seq: seg.first_seq,
                    offset: 0,
                    file: BufReader::new(file),
                });
            }
            let r = self.reading.as_mut().expect("opened above");
            match read_record(&mut r.file)? {
                Some((seq, payload)) => {
                    r.offset += HEADER + payload.len() as u64;
                    if seq > self.cursor {
                        self.peeked = Some((seq, payload));
                    }
                }
                None => {
                    // End of this segment. The last segment may still grow: stay, and seek
                    // back to the last whole record so a later read starts cleanly.
                    let is_last = self
                        .segments
                        .back()
                        .is_some_and(|s| s.first_seq == r.first_seq);
                    if is_last {
                        r.file.seek(SeekFrom::Start(r.offset))?;
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
        for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
            let entry = entry.map_err(io_at(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".seg") else {
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
            found.push((class, first_seq, entry.path()));
        }
        found.sort_by_key(|(_, s, _)| *s);
        let mut recovered_new = 0u64;
        let mut max_seq = 0u64;
        for (class, first_seq, path) in found {
            let mut r = BufReader::new(File::open(&path).map_err(io_at(&path))?);
            let (mut records, mut valid, mut last_seq) = (0u64, 0u64, 0u64);
            loop {
                match read_record(&mut r) {
                    Ok(Some((seq, payload))) => {
                        records += 1;
                        valid += HEADER + payload.len() as u64;
                        last_seq = seq;
                        if seq > state.last_seq {
                            recovered_new += 1;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(message = "Spool segment has a corrupt record; cutting it there.", path = %path.display(), %error);
                        break;
                    }
                }
            }
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
                last_seq,
                records,
                bytes: valid,
                path,
            });
        }
        // Events written after the last state save (the process was killed) are counted now.
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
        };
        s.reserve(next_seq + 1)?;
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

    fn count_drop(&mut self, class: Class, n: u64) {
        if n == 0 {
            return;
        }
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

    /// Deletes the oldest segment of `class`, counting its unacknowledged events as dropped.
    fn drop_oldest(&mut self, class: Class) -> bool {
        let acked = self.acked;
        let Some(seg) = self.queue(class).pop_front() else {
            return false;
        };
        let unacked = if seg.first_seq > acked {
            seg.records
        } else {
            // Partly acknowledged: count what was not.
            let mut n = 0;
            if let Ok(f) = File::open(&seg.path) {
                let mut r = BufReader::new(f);
                while let Ok(Some((seq, _))) = read_record(&mut r) {
                    n += u64::from(seq > acked);
                }
            } else {
                n = seg.records;
            }
            n
        };
        tracing::warn!(
            message = "Spool full; dropped the oldest segment.",
            class = ?class,
            events = unacked,
            max_bytes = self.max_bytes
        );
        self.count_drop(class, unacked);
        true
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
                let path = dir.join(format!("{}{seq:020}.seg", class.prefix()));
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
        let mut record = Vec::with_capacity(HEADER as usize + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(payload);
        self.state.appended += 1;
        self.state.last_seq = seq;
        self.state_dirty = true;
        self.metrics.spool_appended.inc();
        let mut ok = self.make_room(record.len() as u64, class);
        if ok {
            if let Err(error) = self.write(class, seq, &record) {
                self.metrics.spool_write_errors.inc();
                // The disk is full or failing: give up the oldest observations and try once
                // more before dropping this event.
                tracing::warn!(message = "Spool write failed; freeing the oldest observations.", %error);
                let freed = self.drop_oldest(Class::Observation);
                ok = freed && self.write(class, seq, &record).is_ok();
                if !ok {
                    self.metrics.spool_write_errors.inc();
                }
            }
        }
        if !ok {
            self.count_drop(class, 1);
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
                if let Ok(f) = File::open(&seg.path) {
                    let mut r = BufReader::new(f);
                    while let Ok(Some((seq, _))) = read_record(&mut r) {
                        n += u64::from(seq > acked);
                    }
                }
            }
        }
        n
    }

    /// Syncs and records how many events stay unacknowledged, for the next run and for
    /// operators (`state.json`).
    pub fn close(&mut self) {
        self.state.unacked_at_exit = self.unacked();
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
        self.state_dirty = true;
        // Counters first: once a segment is gone its events can no longer be recounted.
        let deletes = [&self.obs, &self.dev].iter().any(|q| {
            q.segments
                .front()
                .is_some_and(|s| s.records > 0 && s.last_seq <= seq)
        });
        if deletes {
            self.sync();
        }
        for class in [Class::Observation, Class::Deviation] {
            let q = self.queue(class);
            while q
                .segments
                .front()
                .is_some_and(|s| s.records > 0 && s.last_seq <= seq)
            {
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

    /// Up to `max` records after the read position, in sequence order across both queues.
    pub fn next_batch(&mut self, max: usize) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
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
            if let Some(r) = q.take() {
                out.push(r);
            }
        }
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
            let b = s.next_batch(7);
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
}
