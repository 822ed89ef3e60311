//! The byte layout of one journal value (see `journal-format.md`):
//!
//! ```text
//! [format version: u8][postcard(Record)][crc32 of everything before: u32 LE]
//! ```
//!
//! The checksum is ours, not sled's: sled guards its own log, but a value
//! that was written wrong, or changed by a tool, would otherwise decode into
//! a plausible and wrong event.

use super::event::{Record, RecordRef};
use super::JournalError;

/// The newest format this build reads and writes. Readers refuse any
/// newer one.
///
/// A value is written with the oldest version that can hold its event
/// (version 1 for everything but `requeued`, 2, and
/// `artifact_upload_failed`, 3), so journals without the
/// newer events stay readable by older builds, and an older build meeting a
/// `requeued` refuses it by its version instead of misreading it.
pub const FORMAT_VERSION: u8 = 3;

/// Bytes around the postcard body: the version byte and the checksum.
const OVERHEAD: usize = 1 + 4;

pub fn encode(record: &RecordRef<'_>) -> Result<Vec<u8>, JournalError> {
    let out = vec![record.event.format_version()];
    let mut out = postcard::to_extend(record, out).map_err(|e| JournalError::Encode {
        seq: record.seq,
        reason: e.to_string(),
    })?;
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes the value stored under `seq`, checking the version, the checksum
/// and that the record names the sequence number it is stored under.
pub fn decode(seq: u64, bytes: &[u8]) -> Result<Record, JournalError> {
    let corrupt = |reason: String| JournalError::Corrupt { seq, reason };

    if bytes.len() < OVERHEAD + 1 {
        return Err(corrupt(format!(
            "value is {} bytes, too short",
            bytes.len()
        )));
    }
    let version = bytes[0];
    if version == 0 || version > FORMAT_VERSION {
        return Err(JournalError::UnknownVersion { seq, version });
    }

    let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
    let actual = crc32fast::hash(body);
    if stored != actual {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        )));
    }

    let (record, rest): (Record, &[u8]) =
        postcard::take_from_bytes(&body[1..]).map_err(|e| corrupt(e.to_string()))?;
    if !rest.is_empty() {
        return Err(corrupt(format!(
            "{} trailing bytes after the event",
            rest.len()
        )));
    }
    if record.seq != seq {
        return Err(corrupt(format!(
            "record says sequence {} but is stored under {seq}",
            record.seq
        )));
    }
    if record.event.format_version() > version {
        return Err(corrupt(format!(
            "{} needs format version {}, the value says {version}",
            record.event.name(),
            record.event.format_version()
        )));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::event::{Event, JobEvent, Subject};

    fn record() -> Record {
        Record {
            seq: 7,
            at: 1_764_000_000_000,
            subject: Subject::Job("POL-1".into()),
            event: Event::Job(JobEvent::Submitted { attempt: 2 }),
        }
    }

    fn as_ref(r: &Record) -> RecordRef<'_> {
        RecordRef {
            seq: r.seq,
            at: r.at,
            subject: &r.subject,
            event: &r.event,
        }
    }

    #[test]
    fn round_trips() {
        let r = record();
        let bytes = encode(&as_ref(&r)).unwrap();
        assert_eq!(decode(7, &bytes).unwrap(), r);
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let bytes = encode(&as_ref(&record())).unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            let err = decode(7, &bad).unwrap_err();
            assert!(err.to_string().contains("sequence 7"), "byte {i}: {err}");
        }
    }

    #[test]
    fn unknown_version_names_it() {
        let mut bytes = encode(&as_ref(&record())).unwrap();
        bytes[0] = 9;
        let err = decode(7, &bytes).unwrap_err();
        assert!(matches!(
            err,
            JournalError::UnknownVersion { seq: 7, version: 9 }
        ));
    }

    /// The events that need a newer version than 1, with that version.
    fn newer_events() -> [(JobEvent, u8); 2] {
        [
            (
                JobEvent::Requeued {
                    reason: "portal fixed".into(),
                    confirmed_post_submission: false,
                },
                2,
            ),
            (
                JobEvent::ArtifactUploadFailed {
                    key: "POL-1/1-save-20260101T000000.000Z.png".into(),
                    error: "connection refused".into(),
                },
                3,
            ),
        ]
    }

    fn job_record(event: JobEvent) -> Record {
        Record {
            seq: 9,
            at: 5,
            subject: Subject::Job("POL-1".into()),
            event: Event::Job(event),
        }
    }

    #[test]
    fn newer_events_are_written_under_their_version_and_read_back() {
        for (event, version) in newer_events() {
            let r = job_record(event);
            let bytes = encode(&as_ref(&r)).unwrap();
            assert_eq!(bytes[0], version, "{}", r.event.name());
            assert_eq!(decode(9, &bytes).unwrap(), r);
        }
        // Older events keep version 1, so old readers still read them.
        assert_eq!(encode(&as_ref(&record())).unwrap()[0], 1);
    }

    #[test]
    fn a_newer_event_under_an_older_version_is_corrupt() {
        for (event, version) in newer_events() {
            let mut bytes = encode(&as_ref(&job_record(event))).unwrap();
            bytes[0] = version - 1;
            let n = bytes.len() - 4;
            let crc = crc32fast::hash(&bytes[..n]);
            bytes[n..].copy_from_slice(&crc.to_le_bytes());
            let err = decode(9, &bytes).unwrap_err();
            assert!(matches!(err, JournalError::Corrupt { seq: 9, .. }), "{err}");
        }
    }

    #[test]
    fn misplaced_record_is_refused() {
        let bytes = encode(&as_ref(&record())).unwrap();
        assert!(decode(8, &bytes).is_err());
    }
}

#[cfg(test)]
mod golden {
    //! The worked example of `journal-format.md`, byte for byte. If this
    //! fails, the on-disk format changed: bump FORMAT_VERSION and document.
    use super::*;
    use crate::journal::event::{Event, JobEvent, Subject};

    #[test]
    fn submitted_event_bytes() {
        let subject = Subject::Job("POL-1".into());
        let event = Event::Job(JobEvent::Submitted { attempt: 2 });
        let bytes = encode(&RecordRef {
            seq: 7,
            at: 1_764_000_000_000,
            subject: &subject,
            event: &event,
        })
        .unwrap();
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex.join(" "), GOLDEN);
    }

    const GOLDEN: &str = "01 07 80 a0 bf e9 d6 66 00 05 50 4f 4c 2d 31 00 02 02 91 0e 2f 16";
}
