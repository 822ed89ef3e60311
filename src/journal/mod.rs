//! The journal: formwright's append-only event log, its source of truth and
//! its audit trail.
//!
//! Events live in one sled tree, keyed by a big-endian `u64` sequence number
//! so that sled's key order is the order of events. Appending hands out the
//! next sequence number under a lock, so sequence order is append order. An
//! event that carries a promise (`submitted`, every outcome) is flushed to
//! disk before `append` returns; the rest ride on sled's periodic flush and
//! on the next durable append, which flushes everything before it too.
//!
//! Reading never panics: a value that does not decode is reported with its
//! sequence number and the reader moves on to the next one.

pub mod codec;
pub mod event;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use thiserror::Error;

pub use event::{Event, FailureKind, JobEvent, JobId, Level, Millis, Record, SessionEvent};
pub use event::{RecordRef, Subject, Trigger};

const EVENTS_TREE: &str = "events";

/// Everything that can go wrong with the journal, each naming where.
#[derive(Debug, Error)]
pub enum JournalError {
    #[error("journal at {path} is in use by another formwright process")]
    Locked { path: PathBuf },
    #[error("cannot open the journal at {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("there is no journal at {path}: {reason}")]
    Missing { path: PathBuf, reason: &'static str },
    #[error("journal write failed at sequence {seq}: {reason}")]
    Write { seq: u64, reason: String },
    #[error("cannot encode the event for sequence {seq}: {reason}")]
    Encode { seq: u64, reason: String },
    #[error("journal event at sequence {seq} is corrupt: {reason}")]
    Corrupt { seq: u64, reason: String },
    #[error("journal event at sequence {seq} has format version {version}, this build reads versions 1 to {}", codec::FORMAT_VERSION)]
    UnknownVersion { seq: u64, version: u8 },
    #[error("journal key {key:02x?} is not an 8-byte sequence number")]
    BadKey { key: Vec<u8> },
    #[error("journal read failed: {reason}")]
    Read { reason: String },
}

impl JournalError {
    /// The sequence number at fault, when there is one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            JournalError::Write { seq, .. }
            | JournalError::Encode { seq, .. }
            | JournalError::Corrupt { seq, .. }
            | JournalError::UnknownVersion { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

/// An open journal. One process at a time: sled holds a lock on the folder.
pub struct Journal {
    path: PathBuf,
    db: sled::Db,
    events: sled::Tree,
    /// The next sequence number; the lock also orders appends.
    next_seq: Mutex<u64>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`. The folder is made readable
    /// by its owner only: it holds customers' personal data.
    pub fn open(dir: impl AsRef<Path>) -> Result<Journal, JournalError> {
        let path = dir.as_ref().to_path_buf();
        let open_err = |reason: String| JournalError::Open {
            path: path.clone(),
            reason,
        };
        crate::owner_only::create_dir_all(&path).map_err(|e| open_err(e.to_string()))?;
        crate::owner_only::restrict(&path).map_err(|e| open_err(e.to_string()))?;

        let db = open_sled(&path)?;
        restrict_sled_files(&path).map_err(|e| open_err(e.to_string()))?;
        let events = db
            .open_tree(EVENTS_TREE)
            .map_err(|e| open_err(e.to_string()))?;

        let next_seq = match events.last().map_err(|e| open_err(e.to_string()))? {
            Some((key, _)) => decode_key(&key)? + 1,
            None => 1,
        };
        Ok(Journal {
            path,
            db,
            events,
            next_seq: Mutex::new(next_seq),
        })
    }

    /// Opens a journal that must already exist: for tools that read one,
    /// where a mistyped folder must be an error, not a new empty journal.
    pub fn open_existing(dir: impl AsRef<Path>) -> Result<Journal, JournalError> {
        let path = dir.as_ref();
        let missing = |reason| JournalError::Missing {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_dir() {
            return Err(missing("the folder does not exist"));
        }
        // sled keeps its data in a file named `db` beside `conf`.
        if !path.join("db").is_file() || !path.join("conf").is_file() {
            return Err(missing("the folder holds no sled database"));
        }
        Journal::open(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event stamped `at` and returns its sequence number. When
    /// the event is durable (see [`Event::is_durable`]) it, and everything
    /// appended before it, is on disk when this returns.
    pub fn append(
        &self,
        subject: &Subject,
        event: &Event,
        at: Millis,
    ) -> Result<u64, JournalError> {
        let durable = event.is_durable();
        let seq = {
            // A poisoned lock only means another append panicked; the
            // counter itself is always consistent.
            let mut next = self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
            let seq = *next;
            let bytes = codec::encode(&RecordRef {
                seq,
                at,
                subject,
                event,
            })?;
            self.events
                .insert(seq.to_be_bytes(), bytes)
                .map_err(|e| JournalError::Write {
                    seq,
                    reason: sled_reason(&e),
                })?;
            *next = seq + 1;
            seq
        };
        if durable {
            self.flush_at(seq)?;
        }
        Ok(seq)
    }

    /// Forces everything appended so far to disk.
    pub fn flush(&self) -> Result<(), JournalError> {
        let seq = self.last_seq();
        self.flush_at(seq)
    }

    fn flush_at(&self, seq: u64) -> Result<(), JournalError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| JournalError::Write {
                seq,
                reason: format!("flushing to disk: {}", sled_reason(&e)),
            })
    }

    /// The sequence number of the last event, 0 when empty.
    pub fn last_seq(&self) -> u64 {
        *self.next_seq.lock().unwrap_or_else(|p| p.into_inner()) - 1
    }

    /// Every event in order. A value that cannot be read is an `Err` naming
    /// its sequence number; iteration goes on past it.
    pub fn iter(&self) -> impl Iterator<Item = Result<Record, JournalError>> + '_ {
        self.events.iter().map(decode_item)
    }

    /// Every event in order, like [`Journal::iter`], handed to `each`; long
    /// journals are read and decoded on every core. Contiguous ranges of
    /// sequence numbers are read side by side and handed over strictly in
    /// order, with at most a few ranges held ahead of the one being handed
    /// over, so memory stays bounded whatever the journal's length.
    pub fn scan(&self, each: impl FnMut(Result<Record, JournalError>)) {
        let readers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        self.scan_with(readers, SCAN_RANGE, each);
    }

    fn scan_with(
        &self,
        readers: usize,
        range_len: u64,
        mut each: impl FnMut(Result<Record, JournalError>),
    ) {
        let last = self.last_seq();
        if readers < 2 || last < 2 * range_len {
            self.iter().for_each(each);
            return;
        }
        let ranges = last.div_ceil(range_len);
        let plan = Mutex::new(ScanPlan {
            next: 0,
            handed_over: 0,
            stop: false,
        });
        let turn = std::sync::Condvar::new();
        let (send, receive) =
            std::sync::mpsc::channel::<(u64, Vec<Result<Record, JournalError>>)>();
        std::thread::scope(|scope| {
            for _ in 0..readers {
                let (plan, turn, send) = (&plan, &turn, send.clone());
                scope.spawn(move || loop {
                    let range = {
                        let mut p = lock(plan);
                        while !p.stop && p.next < ranges && p.next >= p.handed_over + SCAN_AHEAD {
                            p = turn.wait(p).unwrap_or_else(|e| e.into_inner());
                        }
                        if p.stop || p.next >= ranges {
                            return;
                        }
                        p.next += 1;
                        p.next - 1
                    };
                    let from = (range * range_len + 1).to_be_bytes();
                    let items = if range + 1 == ranges {
                        // The last range is open-ended: nothing past the
                        // last sequence number known at open is skipped.
                        self.decode_all(self.events.range(from..))
                    } else {
                        let to = ((range + 1) * range_len + 1).to_be_bytes();
                        self.decode_all(self.events.range(from..to))
                    };
                    if send.send((range, items)).is_err() {
                        return;
                    }
                });
            }
            drop(send);
            let mut early = std::collections::BTreeMap::new();
            let mut wanted = 0;
            // Ranges arrive in any order; each is handed over in its turn.
            // Should a reader die, its range never comes and the channel
            // closes: the rest is then read here, in order.
            for (range, items) in receive.iter() {
                early.insert(range, items);
                while let Some(items) = early.remove(&wanted) {
                    items.into_iter().for_each(&mut each);
                    wanted += 1;
                    lock(&plan).handed_over = wanted;
                    turn.notify_all();
                }
            }
            lock(&plan).stop = true;
            turn.notify_all();
            if wanted < ranges {
                let from = (wanted * range_len + 1).to_be_bytes();
                for item in self.decode_all(self.events.range(from..)) {
                    each(item);
                }
            }
        });
    }

    fn decode_all(
        &self,
        items: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    ) -> Vec<Result<Record, JournalError>> {
        items.map(decode_item).collect()
    }

    /// The raw bytes stored under `seq`, for tools and tests.
    pub fn raw(&self, seq: u64) -> Result<Option<Vec<u8>>, JournalError> {
        self.events
            .get(seq.to_be_bytes())
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| JournalError::Read {
                reason: e.to_string(),
            })
    }

    /// Overwrites the bytes under `seq`. Only for tests that prove corrupt
    /// values are caught; the daemon never rewrites history.
    #[doc(hidden)]
    pub fn overwrite_raw(&self, seq: u64, bytes: &[u8]) -> Result<(), JournalError> {
        self.events
            .insert(seq.to_be_bytes(), bytes)
            .map(|_| ())
            .map_err(|e| JournalError::Write {
                seq,
                reason: e.to_string(),
            })?;
        self.flush_at(seq)
    }

    /// Bytes on disk taken by keys and values, for size reports.
    pub fn stored_bytes(&self) -> u64 {
        self.events
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }
}

/// How long `open` waits for another holder of the journal to let go. A
/// journal dropped a moment ago (a restart in the same process, or a daemon
/// that is still exiting) keeps its lock until sled's background threads let
/// go of it, which takes milliseconds.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn open_sled(path: &Path) -> Result<sled::Db, JournalError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(200))
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(JournalError::Locked {
                        path: path.to_path_buf(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(other) => {
                return Err(JournalError::Open {
                    path: path.to_path_buf(),
                    reason: other.to_string(),
                })
            }
        }
    }
}

/// Sequence numbers per range when [`Journal::scan`] reads side by side.
const SCAN_RANGE: u64 = 16_384;
/// Ranges read ahead of the one being handed over.
const SCAN_AHEAD: u64 = 8;

struct ScanPlan {
    /// The next range a reader takes.
    next: u64,
    /// Ranges handed over so far.
    handed_over: u64,
    /// Set when the hand-over ends early.
    stop: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn decode_item(item: sled::Result<(sled::IVec, sled::IVec)>) -> Result<Record, JournalError> {
    let (key, value) = item.map_err(|e| JournalError::Read {
        reason: e.to_string(),
    })?;
    let seq = decode_key(&key)?;
    codec::decode(seq, &value)
}

/// sled's error in words. sled wraps an I/O error's debug form in a new
/// one; its kind says the same plainly ("no storage space").
fn sled_reason(e: &sled::Error) -> String {
    match e {
        sled::Error::Io(io) if io.kind() != std::io::ErrorKind::Other => {
            format!("I/O error: {}", io.kind())
        }
        other => other.to_string(),
    }
}

fn decode_key(key: &[u8]) -> Result<u64, JournalError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| JournalError::BadKey { key: key.to_vec() })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Narrows sled's own files (`conf`, `db`, `blobs/`, `snap.*`) to the
/// owner: they follow the process's umask, which a library user may not
/// have narrowed. Nothing else in the folder is touched.
fn restrict_sled_files(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if matches!(name.as_ref(), "conf" | "db" | "blobs") || name.starts_with("snap.") {
            crate::owner_only::restrict_tree(&entry.path())?;
        }
    }
    Ok(())
}

/// The wall clock in journal units.
pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_in_order_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(dir.path()).unwrap();
            for attempt in 1..=3 {
                let seq = journal
                    .append(
                        &Subject::Job("A".into()),
                        &Event::Job(JobEvent::AttemptStarted { attempt }),
                        10,
                    )
                    .unwrap();
                assert_eq!(seq, u64::from(attempt));
            }
            journal.flush().unwrap();
        }
        let journal = Journal::open(dir.path()).unwrap();
        let seqs: Vec<u64> = journal.iter().map(|r| r.unwrap().seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(journal.last_seq(), 3);
    }

    #[test]
    fn scan_hands_over_what_iter_reads_in_the_same_order() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        for n in 0..1_000u32 {
            let subject = Subject::Job(JobId(format!("J{}", n % 37)));
            let event = Event::Job(JobEvent::AttemptStarted { attempt: n });
            journal.append(&subject, &event, i64::from(n)).unwrap();
        }
        let mut damaged = journal.raw(500).unwrap().unwrap();
        damaged[3] ^= 0x40;
        journal.overwrite_raw(500, &damaged).unwrap();
        let outline = |item: Result<Record, JournalError>| match item {
            Ok(r) => format!("{} {} {}", r.seq, r.subject, r.at),
            Err(e) => format!("error at {:?}", e.seq()),
        };
        let read: Vec<String> = journal.iter().map(outline).collect();
        assert_eq!(read.len(), 1_000);
        assert_eq!(read[499], "error at Some(500)");
        for (readers, range_len) in [(3, 7), (2, 64), (4, 499), (2, 1_000)] {
            let mut scanned = Vec::new();
            journal.scan_with(readers, range_len, |item| scanned.push(outline(item)));
            assert_eq!(scanned, read, "{readers} readers, ranges of {range_len}");
        }
    }

    #[test]
    fn second_opener_gets_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Journal::open(dir.path()).unwrap();
        let err = Journal::open(dir.path())
            .err()
            .expect("second open must fail");
        assert!(matches!(err, JournalError::Locked { .. }), "{err}");
    }
}
