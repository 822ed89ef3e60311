//! The promises formwright keeps, checked over a journal without trusting
//! the state machines: a machine with a bug would write a journal that this
//! checker still reads with fresh eyes.
//!
//! - `no-attempt-after-submit`: once a job has a `submitted` event, no
//!   `attempt_started` of it follows, unless an operator's `requeued` with
//!   `confirmed_post_submission` came in between: the rule is scoped to the
//!   time since the last confirmed requeue.
//! - `requeue-after-failure`: a `requeued` follows only a job's failed end,
//!   and one after `submitted` is confirmed.
//! - `attempts-within-max`: attempt numbers run 1, 2, … and never pass the
//!   job's `max_attempts`.
//! - `one-outcome`: a job ends at most once, and nothing follows its end.
//! - `ladder-in-order`: a recovery tries soft 1..3, hard 1..2, nuclear 1,
//!   in that order, skipping and repeating nothing, and a second recovery
//!   never starts while one runs.
//! - `known-job`: every job event follows that job's `accepted`.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use crate::journal::{Event, JobEvent, JobId, Level, Record, SessionEvent, Subject};

/// A broken promise, with the sequence number that broke it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub seq: u64,
    pub rule: &'static str,
    pub subject: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sequence {}: {} broken by {}: {}",
            self.seq, self.rule, self.subject, self.message
        )
    }
}

#[derive(Default)]
struct JobTrack {
    max_attempts: u32,
    last_attempt: u32,
    submitted_at_seq: Option<u64>,
    ended_at_seq: Option<u64>,
    /// Whether an attempt is running (started, not yet failed or submitted).
    running: bool,
    /// Whether the end at `ended_at_seq` was `completed`.
    completed: bool,
}

/// The ladder, rung by rung.
const LADDER: [(Level, u32); 6] = [
    (Level::Soft, 1),
    (Level::Soft, 2),
    (Level::Soft, 3),
    (Level::Hard, 1),
    (Level::Hard, 2),
    (Level::Nuclear, 1),
];

#[derive(Default)]
struct SessionTrack {
    /// `Some(i)` while a recovery runs: the index in [`LADDER`] of the next
    /// rung it may try. `LADDER.len()` means every rung failed (down).
    next_rung: Option<usize>,
}

/// Feeds on records in sequence order and reports each broken promise.
#[derive(Default)]
pub struct Checker {
    jobs: HashMap<JobId, JobTrack>,
    session: SessionTrack,
    violations: Vec<Violation>,
}

impl Checker {
    pub fn new() -> Checker {
        Checker::default()
    }

    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    pub fn into_violations(self) -> Vec<Violation> {
        self.violations
    }

    /// Checks a whole sequence of records.
    pub fn check_all<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<Violation> {
        let mut checker = Checker::new();
        for record in records {
            checker.observe(record);
        }
        checker.into_violations()
    }

    pub fn observe(&mut self, record: &Record) {
        match (&record.subject, &record.event) {
            (Subject::Job(id), Event::Job(event)) => self.observe_job(record.seq, id, event),
            (Subject::MasterSession, Event::Session(event)) => {
                self.observe_session(record.seq, event)
            }
            (subject, event) => self.flag(
                record.seq,
                "subject-matches-event",
                subject.to_string(),
                format!("{} does not belong to {subject}", event.name()),
            ),
        }
    }

    fn flag(&mut self, seq: u64, rule: &'static str, subject: String, message: String) {
        self.violations.push(Violation {
            seq,
            rule,
            subject,
            message,
        });
    }

    fn observe_job(&mut self, seq: u64, id: &JobId, event: &JobEvent) {
        let subject = format!("job {id}");
        if let JobEvent::Accepted { max_attempts, .. } = event {
            if self.jobs.contains_key(id) {
                self.flag(seq, "one-accept", subject, "accepted twice".into());
                return;
            }
            self.jobs.insert(
                id.clone(),
                JobTrack {
                    max_attempts: *max_attempts,
                    ..JobTrack::default()
                },
            );
            return;
        }
        let Some(track) = self.jobs.get_mut(id) else {
            let message = format!("{} before accepted", event.name());
            self.flag(seq, "known-job", subject, message);
            return;
        };

        // A failed evidence upload says nothing about the lifecycle and may
        // follow the outcome.
        if let JobEvent::ArtifactUploadFailed { .. } = event {
            return;
        }
        let mut found: Vec<(&'static str, String)> = Vec::new();
        let requeue = matches!(event, JobEvent::Requeued { .. });
        if let (Some(end), false) = (track.ended_at_seq, requeue) {
            found.push((
                "one-outcome",
                format!("{} after the job ended at sequence {end}", event.name()),
            ));
        }
        match event {
            JobEvent::Accepted { .. } | JobEvent::ArtifactUploadFailed { .. } => {}
            JobEvent::AttemptStarted { attempt } => {
                if let Some(sub) = track.submitted_at_seq {
                    found.push((
                        "no-attempt-after-submit",
                        format!("attempt {attempt} started after submitted at sequence {sub}"),
                    ));
                }
                if *attempt > track.max_attempts {
                    found.push((
                        "attempts-within-max",
                        format!(
                            "attempt {attempt} exceeds max_attempts {}",
                            track.max_attempts
                        ),
                    ));
                }
                if *attempt != track.last_attempt + 1 {
                    found.push((
                        "attempts-within-max",
                        format!("attempt {attempt} follows attempt {}", track.last_attempt),
                    ));
                }
                if track.running {
                    found.push((
                        "attempts-within-max",
                        format!("attempt {attempt} started while one was running"),
                    ));
                }
                track.last_attempt = *attempt;
                track.running = true;
            }
            JobEvent::Submitted { attempt } => {
                if !track.running || *attempt != track.last_attempt {
                    found.push((
                        "no-attempt-after-submit",
                        format!("submitted for attempt {attempt}, which is not running"),
                    ));
                }
                if let Some(sub) = track.submitted_at_seq {
                    found.push((
                        "no-attempt-after-submit",
                        format!("submitted again (first at sequence {sub})"),
                    ));
                }
                track.submitted_at_seq = Some(seq);
                track.running = false;
            }
            JobEvent::AttemptFailed { attempt, .. } => {
                if let Some(sub) = track.submitted_at_seq {
                    found.push((
                        "no-attempt-after-submit",
                        format!("attempt {attempt} failed before the click, yet submitted at sequence {sub}"),
                    ));
                }
                if !track.running || *attempt != track.last_attempt {
                    found.push((
                        "attempts-within-max",
                        format!("attempt {attempt} failed but was not running"),
                    ));
                }
                track.running = false;
                if track.last_attempt >= track.max_attempts {
                    track.ended_at_seq = Some(seq);
                }
            }
            JobEvent::Completed { .. } | JobEvent::PostSubmissionFailed { .. } => {
                if track.submitted_at_seq.is_none() {
                    found.push(("one-outcome", format!("{} without submitted", event.name())));
                }
                track.ended_at_seq = Some(seq);
                track.completed = matches!(event, JobEvent::Completed { .. });
            }
            JobEvent::Requeued {
                confirmed_post_submission,
                ..
            } => {
                if track.ended_at_seq.is_none() {
                    found.push((
                        "requeue-after-failure",
                        "requeued while the job had not ended".into(),
                    ));
                } else if track.completed {
                    found.push((
                        "requeue-after-failure",
                        "requeued after the job completed".into(),
                    ));
                }
                match (track.submitted_at_seq, confirmed_post_submission) {
                    (Some(sub), false) => found.push((
                        "no-attempt-after-submit",
                        format!("requeued without confirmation after submitted at sequence {sub}"),
                    )),
                    // A person checked the portal: a new scope begins.
                    (_, true) => track.submitted_at_seq = None,
                    (None, false) => {}
                }
                track.ended_at_seq = None;
                track.completed = false;
                track.last_attempt = 0;
                track.running = false;
            }
        }
        for (rule, message) in found {
            self.flag(seq, rule, subject.clone(), message);
        }
    }

    fn observe_session(&mut self, seq: u64, event: &SessionEvent) {
        let subject = "master session".to_string();
        let track = &mut self.session;
        match event {
            SessionEvent::LoginStarted => track.next_rung = None,
            SessionEvent::LoggedIn { .. } => {
                if track.next_rung == Some(LADDER.len()) {
                    self.flag(
                        seq,
                        "ladder-in-order",
                        subject,
                        "logged in while down, without a new ladder".into(),
                    );
                }
                self.session.next_rung = None;
            }
            SessionEvent::Expired { .. } => {
                if track.next_rung.is_some() {
                    self.flag(
                        seq,
                        "ladder-in-order",
                        subject,
                        "a second recovery started while one was running".into(),
                    );
                }
                self.session.next_rung = Some(0);
            }
            SessionEvent::CooldownOver => {
                if track.next_rung != Some(LADDER.len()) {
                    self.flag(
                        seq,
                        "ladder-in-order",
                        subject,
                        "cool-down over but the session was not down".into(),
                    );
                }
                self.session.next_rung = Some(0);
            }
            SessionEvent::TryFailed { level, attempt, .. } => match track.next_rung {
                None => self.flag(
                    seq,
                    "ladder-in-order",
                    subject,
                    format!("{} try {attempt} failed outside a recovery", level.as_str()),
                ),
                Some(i) if i >= LADDER.len() => self.flag(
                    seq,
                    "ladder-in-order",
                    subject,
                    format!("{} try {attempt} after every level failed", level.as_str()),
                ),
                Some(i) => {
                    let (want_level, want_try) = LADDER[i];
                    if (*level, *attempt) != (want_level, want_try) {
                        self.flag(
                            seq,
                            "ladder-in-order",
                            subject,
                            format!(
                                "{} try {attempt} where {} try {want_try} was due",
                                level.as_str(),
                                want_level.as_str()
                            ),
                        );
                    }
                    self.session.next_rung = Some(i + 1);
                }
            },
            SessionEvent::BackupRestored => {
                let last_was_nuclear = track.next_rung == Some(LADDER.len() - 1);
                if !last_was_nuclear {
                    self.flag(
                        seq,
                        "ladder-in-order",
                        subject,
                        "backup restored outside a nuclear try".into(),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each rule is shown to catch a journal that a broken machine could
    //! have written.
    use super::*;
    use crate::journal::{FailureKind, Trigger};

    fn job(seq: u64, event: JobEvent) -> Record {
        Record {
            seq,
            at: 0,
            subject: Subject::Job("J".into()),
            event: Event::Job(event),
        }
    }

    fn session(seq: u64, event: SessionEvent) -> Record {
        Record {
            seq,
            at: 0,
            subject: Subject::MasterSession,
            event: Event::Session(event),
        }
    }

    fn accepted(max: u32) -> JobEvent {
        JobEvent::Accepted {
            document: "{}".into(),
            max_attempts: max,
        }
    }

    fn failed(attempt: u32) -> JobEvent {
        JobEvent::AttemptFailed {
            attempt,
            kind: FailureKind::Timeout,
            stage: "s".into(),
            error: "e".into(),
            retry_at: 0,
            artifacts: vec![],
        }
    }

    fn rules(records: &[Record]) -> Vec<&'static str> {
        Checker::check_all(records).iter().map(|v| v.rule).collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let records = [
            job(1, accepted(3)),
            job(2, JobEvent::AttemptStarted { attempt: 1 }),
            job(3, failed(1)),
            job(4, JobEvent::AttemptStarted { attempt: 2 }),
            job(5, JobEvent::Submitted { attempt: 2 }),
            job(
                6,
                JobEvent::Completed {
                    proposal_no: "R1".into(),
                },
            ),
        ];
        assert_eq!(rules(&records), Vec::<&str>::new());
    }

    #[test]
    fn catches_an_attempt_after_submitted() {
        let records = [
            job(1, accepted(3)),
            job(2, JobEvent::AttemptStarted { attempt: 1 }),
            job(3, JobEvent::Submitted { attempt: 1 }),
            job(4, JobEvent::AttemptStarted { attempt: 2 }),
        ];
        let found = Checker::check_all(&records);
        assert!(found
            .iter()
            .any(|v| v.rule == "no-attempt-after-submit" && v.seq == 4));
    }

    #[test]
    fn catches_too_many_attempts() {
        let mut records = vec![job(1, accepted(2))];
        let mut seq = 2;
        for attempt in 1..=3 {
            records.push(job(seq, JobEvent::AttemptStarted { attempt }));
            records.push(job(seq + 1, failed(attempt)));
            seq += 2;
        }
        let found = Checker::check_all(&records);
        assert!(found
            .iter()
            .any(|v| v.rule == "attempts-within-max" && v.seq == 6));
    }

    #[test]
    fn catches_a_skipped_level() {
        let records = [
            session(1, SessionEvent::LoginStarted),
            session(2, SessionEvent::LoggedIn { duration_ms: 1 }),
            session(
                3,
                SessionEvent::Expired {
                    trigger: Trigger::Heartbeat,
                },
            ),
            session(
                4,
                SessionEvent::TryFailed {
                    level: Level::Hard,
                    attempt: 1,
                    duration_ms: 1,
                    error: "x".into(),
                },
            ),
        ];
        let found = Checker::check_all(&records);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].rule, found[0].seq), ("ladder-in-order", 4));
    }

    #[test]
    fn catches_a_repeated_try_and_a_second_recovery() {
        let fail = |seq, attempt| {
            session(
                seq,
                SessionEvent::TryFailed {
                    level: Level::Soft,
                    attempt,
                    duration_ms: 1,
                    error: "x".into(),
                },
            )
        };
        let records = [
            session(
                1,
                SessionEvent::Expired {
                    trigger: Trigger::Heartbeat,
                },
            ),
            fail(2, 1),
            fail(3, 1),
            session(
                4,
                SessionEvent::Expired {
                    trigger: Trigger::Heartbeat,
                },
            ),
        ];
        let seqs: Vec<u64> = Checker::check_all(&records).iter().map(|v| v.seq).collect();
        assert_eq!(seqs, vec![3, 4]);
    }

    fn requeued(seq: u64, confirmed: bool) -> Record {
        job(
            seq,
            JobEvent::Requeued {
                reason: "checked the portal".into(),
                confirmed_post_submission: confirmed,
            },
        )
    }

    fn post_failed() -> JobEvent {
        JobEvent::PostSubmissionFailed {
            stage: "s".into(),
            error: "e".into(),
            proposal_no: None,
            artifacts: vec![],
        }
    }

    #[test]
    fn a_requeued_round_starts_from_attempt_one() {
        let records = [
            job(1, accepted(1)),
            job(2, JobEvent::AttemptStarted { attempt: 1 }),
            job(3, failed(1)),
            requeued(4, false),
            job(5, JobEvent::AttemptStarted { attempt: 1 }),
            job(6, JobEvent::Submitted { attempt: 1 }),
            job(7, post_failed()),
            requeued(8, true),
            job(9, JobEvent::AttemptStarted { attempt: 1 }),
            job(10, JobEvent::Submitted { attempt: 1 }),
            job(
                11,
                JobEvent::Completed {
                    proposal_no: "R1".into(),
                },
            ),
        ];
        assert_eq!(rules(&records), Vec::<&str>::new());
    }

    #[test]
    fn an_unconfirmed_requeue_after_submitted_keeps_the_rule() {
        let records = [
            job(1, accepted(3)),
            job(2, JobEvent::AttemptStarted { attempt: 1 }),
            job(3, JobEvent::Submitted { attempt: 1 }),
            job(4, post_failed()),
            requeued(5, false),
            job(6, JobEvent::AttemptStarted { attempt: 1 }),
        ];
        let found = Checker::check_all(&records);
        let at: Vec<(u64, &str)> = found.iter().map(|v| (v.seq, v.rule)).collect();
        assert!(at.contains(&(5, "no-attempt-after-submit")), "{at:?}");
        assert!(at.contains(&(6, "no-attempt-after-submit")), "{at:?}");
    }

    #[test]
    fn catches_a_requeue_of_a_running_or_completed_job() {
        let records = [
            job(1, accepted(3)),
            job(2, JobEvent::AttemptStarted { attempt: 1 }),
            requeued(3, true),
        ];
        assert!(rules(&records).contains(&"requeue-after-failure"));
        let records = [
            job(1, accepted(3)),
            job(2, JobEvent::AttemptStarted { attempt: 1 }),
            job(3, JobEvent::Submitted { attempt: 1 }),
            job(
                4,
                JobEvent::Completed {
                    proposal_no: "R".into(),
                },
            ),
            requeued(5, true),
        ];
        assert!(rules(&records).contains(&"requeue-after-failure"));
    }

    #[test]
    fn catches_events_after_the_end() {
        let records = [
            job(1, accepted(1)),
            job(2, JobEvent::AttemptStarted { attempt: 1 }),
            job(3, JobEvent::Submitted { attempt: 1 }),
            job(
                4,
                JobEvent::Completed {
                    proposal_no: "R".into(),
                },
            ),
            job(
                5,
                JobEvent::Completed {
                    proposal_no: "R2".into(),
                },
            ),
        ];
        assert!(rules(&records).contains(&"one-outcome"));
    }

    #[test]
    fn an_upload_failure_after_the_end_is_no_violation_but_needs_a_known_job() {
        let note = || JobEvent::ArtifactUploadFailed {
            key: "J/1-s.png".into(),
            error: "refused".into(),
        };
        let records = [
            job(1, accepted(1)),
            job(2, JobEvent::AttemptStarted { attempt: 1 }),
            job(3, failed(1)),
            job(4, note()),
        ];
        assert!(rules(&records).is_empty(), "{:?}", rules(&records));
        assert_eq!(rules(&[job(1, note())]), vec!["known-job"]);
    }
}
