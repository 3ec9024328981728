//! The spool's record formats, and reading a segment record by record.
//!
//! **Current format** (segments named `*.v2.seg`): each record is
//! `magic "PGr2" | u32 LE payload length | u64 LE sequence | u32 LE CRC-32 | payload`, where
//! the CRC-32 (IEEE, `crc32fast`) covers the length, the sequence and the payload. The magic
//! lets a reader find the next record after a damaged one (the length itself may be what was
//! damaged), and the checksum says that a record is the one written, so one bad record is a
//! counted loss, never a reason to stop reading (or to send the server bytes it will refuse
//! for ever). A damaged region, once counted, is overwritten in place by a **tombstone**
//! (`magic "PGx2" | u32 LE length of the region`), so it is skipped without being counted
//! again, also after a restart.
//!
//! **Previous format** (segments named `*.seg`, written before checksums):
//! `u32 LE payload length | u64 LE sequence | payload`. Such segments are rewritten into the
//! current format when the spool opens ([`migrate_v1`]); nothing else reads them.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

/// Start of every record.
pub const MAGIC: [u8; 4] = *b"PGr2";
/// Start of a damaged region that was counted and is to be skipped.
pub const TOMB: [u8; 4] = *b"PGx2";
/// Record header: magic, length, sequence, checksum.
pub const HEADER: u64 = 20;
/// Tombstone header: magic, length of the region.
const TOMB_HEADER: u64 = 8;
/// Header of a record in the previous format: length, sequence.
const V1_HEADER: u64 = 12;
/// Largest payload accepted when reading back; a longer length is damage.
pub const MAX_RECORD: u32 = 4 * 1024 * 1024;

fn checksum(len: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// One record in the current format, ready to append.
pub fn encode(seq: u64, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(HEADER as usize + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&checksum(len, seq, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// What the next bytes of a segment are.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// A whole record whose checksum holds; `bytes` is its length on disk.
    Record {
        /// Its sequence number.
        seq: u64,
        /// The encoded `SensorEvent`.
        payload: Vec<u8>,
        /// Bytes on disk, header included.
        bytes: u64,
    },
    /// A region already counted as damaged; `bytes` long.
    Tombstone {
        /// Bytes on disk.
        bytes: u64,
    },
    /// A region that is not a whole, intact record, followed by a record (or by the end of
    /// the segment, when `next_seq` is `None`).
    Damaged {
        /// Bytes on disk up to the next intact record or tombstone (or the end).
        bytes: u64,
        /// Sequence number of the intact record that follows, if any.
        next_seq: Option<u64>,
    },
    /// A record cut short by the end of the file with nothing intact after it: a write the
    /// process did not finish (or one still to come). Not a loss the reader can count.
    Torn,
    /// The clean end of the segment.
    End,
}

/// Reads exactly `buf.len()` bytes, or reports how many there were before the end.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads a segment in the current format forward from an offset.
#[derive(Debug)]
pub struct Reader {
    file: BufReader<File>,
    offset: u64,
}

impl Reader {
    /// Opens `path` at its start.
    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        Ok(Self {
            file: BufReader::new(File::open(path)?),
            offset: 0,
        })
    }

    /// Offset of the next item.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Moves to `offset` (the start of an item).
    pub fn seek(&mut self, offset: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        self.offset = offset;
        Ok(())
    }

    /// The next item. After `Torn` or `End` the reader stays where that item starts, so a
    /// later call reads what was appended meanwhile.
    pub fn next_item(&mut self) -> io::Result<Item> {
        let start = self.offset;
        let mut h = [0u8; HEADER as usize];
        let got = read_full(&mut self.file, &mut h[..TOMB_HEADER as usize])?;
        if got == 0 {
            self.seek(start)?;
            return Ok(Item::End);
        }
        if got < TOMB_HEADER as usize {
            return self.damaged_or_torn(start);
        }
        let len = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
        if h[..4] == TOMB && u64::from(len) >= TOMB_HEADER {
            self.seek(start + u64::from(len))?;
            return Ok(Item::Tombstone {
                bytes: u64::from(len),
            });
        }
        if h[..4] != MAGIC || len > MAX_RECORD {
            return self.damaged_or_torn(start);
        }
        if read_full(&mut self.file, &mut h[8..])? < (HEADER - TOMB_HEADER) as usize {
            return self.damaged_or_torn(start);
        }
        let seq = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
        let mut payload = vec![0u8; len as usize];
        if read_full(&mut self.file, &mut payload)? < payload.len() {
            return self.damaged_or_torn(start);
        }
        if seq == 0 || checksum(len, seq, &payload) != crc {
            return self.damaged_or_torn(start);
        }
        let bytes = HEADER + u64::from(len);
        self.offset = start + bytes;
        Ok(Item::Record {
            seq,
            payload,
            bytes,
        })
    }

    /// Something at `start` is not an intact record: the next intact record (or tombstone)
    /// after it decides between damage (there is one) and a torn end (there is none, and the
    /// bytes stop short of a whole record).
    fn damaged_or_torn(&mut self, start: u64) -> io::Result<Item> {
        self.file.seek(SeekFrom::Start(start))?;
        let mut rest = Vec::new();
        self.file.read_to_end(&mut rest)?;
        match next_intact(&rest, 1) {
            Some((at, next_seq)) => {
                self.seek(start + at as u64)?;
                Ok(Item::Damaged {
                    bytes: at as u64,
                    next_seq,
                })
            }
            None if cut_short(&rest) => {
                self.seek(start)?;
                Ok(Item::Torn)
            }
            None => {
                self.seek(start + rest.len() as u64)?;
                Ok(Item::Damaged {
                    bytes: rest.len() as u64,
                    next_seq: None,
                })
            }
        }
    }
}

/// Whether `rest` is the beginning of a record that the end of the file cut short: its
/// header (as far as it goes) is plausible and it claims more bytes than there are.
fn cut_short(rest: &[u8]) -> bool {
    let n = rest.len().min(4);
    if rest[..n] != MAGIC[..n] {
        return false;
    }
    if rest.len() < 8 {
        return true;
    }
    let len = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    len <= MAX_RECORD && (rest.len() as u64) < HEADER + u64::from(len)
}

/// The first offset at or after `from` in `buf` where an intact record (with its sequence)
/// or a tombstone starts.
fn next_intact(buf: &[u8], from: usize) -> Option<(usize, Option<u64>)> {
    let mut at = from;
    while at + TOMB_HEADER as usize <= buf.len() {
        let w = &buf[at..];
        let len = u32::from_le_bytes(w[4..8].try_into().expect("4 bytes"));
        if w[..4] == TOMB && u64::from(len) >= TOMB_HEADER && at + len as usize <= buf.len() {
            return Some((at, None));
        }
        if w[..4] == MAGIC && len <= MAX_RECORD && w.len() as u64 >= HEADER + u64::from(len) {
            let seq = u64::from_le_bytes(w[8..16].try_into().expect("8 bytes"));
            let crc = u32::from_le_bytes(w[16..20].try_into().expect("4 bytes"));
            let payload = &w[HEADER as usize..HEADER as usize + len as usize];
            if seq != 0 && checksum(len, seq, payload) == crc {
                return Some((at, Some(seq)));
            }
        }
        at += 1;
    }
    None
}

/// Overwrites the start of a counted damaged region with a tombstone, so it is skipped, not
/// counted again. A region shorter than a tombstone header is left as it is.
pub fn bury(path: &std::path::Path, offset: u64, bytes: u64) -> io::Result<bool> {
    if bytes < TOMB_HEADER || bytes > u64::from(u32::MAX) {
        return Ok(false);
    }
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut t = [0u8; TOMB_HEADER as usize];
    t[..4].copy_from_slice(&TOMB);
    t[4..].copy_from_slice(&(bytes as u32).to_le_bytes());
    f.write_all(&t)?;
    f.sync_data()?;
    Ok(true)
}

/// Records as (sequence, payload).
type Records = Vec<(u64, Vec<u8>)>;

/// Every whole record of a segment in the previous format, in order, up to the first one
/// that is torn or implausible (the previous reader's rule: the rest is cut), and the bytes
/// after them.
fn read_v1(path: &std::path::Path) -> io::Result<(Records, u64)> {
    let mut r = BufReader::new(File::open(path)?);
    let mut out = Vec::new();
    let mut cut = 0u64;
    loop {
        let mut h = [0u8; V1_HEADER as usize];
        if read_full(&mut r, &mut h)? < h.len() {
            break;
        }
        let len = u32::from_le_bytes(h[..4].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(h[4..].try_into().expect("8 bytes"));
        if len > MAX_RECORD || seq == 0 {
            break;
        }
        let mut payload = vec![0u8; len as usize];
        if read_full(&mut r, &mut payload)? < payload.len() {
            break;
        }
        cut += V1_HEADER + u64::from(len);
        out.push((seq, payload));
    }
    let len = std::fs::metadata(path)?.len();
    Ok((out, len - cut))
}

/// Rewrites a segment of the previous format as `to`, in the current format: written to a
/// temporary file, synced, renamed over `to`, then the old file is removed. Returns the
/// records carried over and the bytes of the old file that were not a whole record (a torn
/// end, as the previous reader would have cut).
pub fn migrate_v1(from: &std::path::Path, to: &std::path::Path) -> io::Result<(u64, u64)> {
    let (records, unread) = read_v1(from)?;
    let tmp = to.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        let mut w = io::BufWriter::new(&mut f);
        for (seq, payload) in &records {
            w.write_all(&encode(*seq, payload))?;
        }
        w.flush()?;
        drop(w);
        f.sync_all()?;
    }
    std::fs::rename(&tmp, to)?;
    if let Some(dir) = to.parent() {
        File::open(dir)?.sync_all()?;
    }
    std::fs::remove_file(from)?;
    Ok((records.len() as u64, unread))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &std::path::Path, records: &[(u64, &[u8])]) -> Vec<u64> {
        let mut f = File::create(path).unwrap();
        let mut offsets = Vec::new();
        let mut at = 0;
        for (seq, p) in records {
            offsets.push(at);
            let r = encode(*seq, p);
            at += r.len() as u64;
            f.write_all(&r).unwrap();
        }
        offsets
    }

    fn items(path: &std::path::Path) -> Vec<Item> {
        let mut r = Reader::open(path).unwrap();
        let mut out = Vec::new();
        loop {
            let i = r.next_item().unwrap();
            let stop = matches!(i, Item::End | Item::Torn);
            out.push(i);
            if stop {
                return out;
            }
        }
    }

    fn flip(path: &std::path::Path, at: u64) {
        let mut b = std::fs::read(path).unwrap();
        b[at as usize] ^= 0x5a;
        std::fs::write(path, b).unwrap();
    }

    fn record(seq: u64, payload: &[u8]) -> Item {
        Item::Record {
            seq,
            payload: payload.to_vec(),
            bytes: HEADER + payload.len() as u64,
        }
    }

    #[test]
    fn a_damaged_payload_length_or_sequence_is_one_region_and_the_rest_is_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        // Damage in the payload, in the length (which then points anywhere), in the sequence.
        for damage in [HEADER + 3, 5, 9] {
            let offs = write(&p, &[(1, b"one"), (2, b"two two"), (3, b"three")]);
            flip(&p, offs[1] + damage);
            assert_eq!(
                items(&p),
                vec![
                    record(1, b"one"),
                    Item::Damaged {
                        bytes: HEADER + 7,
                        next_seq: Some(3)
                    },
                    record(3, b"three"),
                    Item::End
                ],
                "damage at +{damage}"
            );
            // Buried, it is skipped quietly from then on.
            assert!(bury(&p, offs[1], HEADER + 7).unwrap());
            assert_eq!(
                items(&p),
                vec![
                    record(1, b"one"),
                    Item::Tombstone { bytes: HEADER + 7 },
                    record(3, b"three"),
                    Item::End
                ]
            );
        }
    }

    #[test]
    fn a_short_end_is_torn_but_a_damaged_last_record_is_damage() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        write(&p, &[(1, b"one"), (2, b"two")]);
        let whole = std::fs::read(&p).unwrap();
        for cut in 1..(HEADER as usize + 3) {
            std::fs::write(&p, &whole[..whole.len() - cut]).unwrap();
            assert_eq!(items(&p), vec![record(1, b"one"), Item::Torn], "cut {cut}");
        }
        std::fs::write(&p, &whole).unwrap();
        flip(&p, whole.len() as u64 - 1);
        assert_eq!(
            items(&p),
            vec![
                record(1, b"one"),
                Item::Damaged {
                    bytes: HEADER + 3,
                    next_seq: None
                },
                Item::End
            ]
        );
    }

    #[test]
    fn a_previous_format_segment_migrates_whole_and_its_torn_end_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let old = d.path().join("obs-1.seg");
        let mut bytes = Vec::new();
        for (seq, p) in [(1u64, &b"a"[..]), (2, b"bb"), (3, b"ccc")] {
            bytes.extend_from_slice(&(p.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&seq.to_le_bytes());
            bytes.extend_from_slice(p);
        }
        bytes.extend_from_slice(&[9, 0, 0, 0, 4]);
        std::fs::write(&old, &bytes).unwrap();
        let new = d.path().join("obs-1.v2.seg");
        assert_eq!(migrate_v1(&old, &new).unwrap(), (3, 5));
        assert!(!old.exists());
        assert_eq!(
            items(&new),
            vec![
                record(1, b"a"),
                record(2, b"bb"),
                record(3, b"ccc"),
                Item::End
            ]
        );
    }
}
