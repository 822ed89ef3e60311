//! The book: every job's and the master session's current state, as replay
//! of the journal builds it, plus what the API and the CLI show about them
//! (timelines, errors, recovery history).
//!
//! [`Recorder`] is the only way new events enter: it asks the machine first,
//! journals the event (flushed when the event carries a promise), then
//! applies it. The live book is therefore always exactly what a replay of
//! the journal would build.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;
use thiserror::Error;

use crate::journal::{
    Event, FailureKind, JobEvent, JobId, Journal, JournalError, Level, Millis, Record,
    SessionEvent, Subject, Trigger,
};
use crate::machine::job::{JobMachine, Status};
use crate::machine::session::{SessionMachine, SessionStatus};
use crate::machine::TransitionError;

/// One line of a job's history: the event itself (an `accepted` without its
/// document, which the record keeps once).
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub seq: u64,
    pub at: Millis,
    pub event: JobEvent,
}

impl Step {
    pub fn name(&self) -> &'static str {
        self.event.name()
    }

    /// A short operator-facing description, free of personal data. Made on
    /// demand: replay builds millions of steps and shows few.
    pub fn note(&self) -> String {
        match &self.event {
            JobEvent::Accepted { max_attempts, .. } => {
                format!("accepted, up to {max_attempts} attempts")
            }
            JobEvent::AttemptStarted { attempt } => format!("attempt {attempt} started"),
            JobEvent::Submitted { attempt } => format!("attempt {attempt}: submitted"),
            JobEvent::Completed { proposal_no } => format!("completed, proposal {proposal_no}"),
            JobEvent::AttemptFailed {
                attempt,
                kind,
                stage,
                error,
                ..
            } => format!(
                "attempt {attempt} failed ({}) at {stage}: {error}",
                kind.as_str()
            ),
            JobEvent::PostSubmissionFailed { stage, error, .. } => {
                format!("failed after submission at {stage}: {error}")
            }
            JobEvent::Requeued {
                reason,
                confirmed_post_submission,
            } => {
                let confirmed = if *confirmed_post_submission {
                    ", confirmed after a post-submission failure"
                } else {
                    ""
                };
                format!("requeued by an operator{confirmed}: {reason}")
            }
            JobEvent::ArtifactUploadFailed { key, error } => {
                format!("evidence {key} not stored yet (kept for a retry): {error}")
            }
        }
    }
}

/// The last failure of a job, as the dashboard shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Failure {
    pub kind: Option<FailureKind>,
    pub stage: String,
    pub error: String,
    pub artifacts: Vec<String>,
}

/// Everything known about one job.
#[derive(Clone)]
pub struct JobRecord {
    pub id: JobId,
    pub machine: JobMachine,
    /// The client's document, verbatim.
    pub document: String,
    pub accepted_at: Millis,
    pub updated_at: Millis,
    pub proposal_no: Option<String>,
    pub last_failure: Option<Failure>,
    /// Total attempts started, across every retry and round.
    pub attempts_started: u32,
    /// Operator requeues so far; each starts a new round of attempts.
    pub requeues: u32,
    pub submitted_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub timeline: Vec<Step>,
}

impl JobRecord {
    pub fn status(&self) -> Status {
        // A record exists only once `accepted` was applied.
        self.machine.status().unwrap_or(Status::Pending)
    }
}

/// How one recovery episode went.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recovery {
    pub started_seq: u64,
    pub started_at: Millis,
    pub trigger: String,
    pub tries: Vec<RecoveryTry>,
    pub outcome: RecoveryOutcome,
    pub finished_at: Option<Millis>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecoveryTry {
    pub level: Level,
    pub attempt: u32,
    pub duration_ms: u64,
    /// `None` for the try that succeeded.
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryOutcome {
    Running,
    Recovered,
    /// Every level failed; the session went down.
    Down,
    /// The daemon restarted during the recovery.
    Abandoned,
}

/// The master session as the book knows it.
#[derive(Clone, Default)]
pub struct SessionRecord {
    pub machine: SessionMachine,
    pub last_login_at: Option<Millis>,
    pub recoveries: Vec<Recovery>,
}

impl SessionRecord {
    pub fn status(&self) -> SessionStatus {
        self.machine.status()
    }

    pub fn current_recovery(&self) -> Option<&Recovery> {
        self.recoveries
            .last()
            .filter(|r| r.outcome == RecoveryOutcome::Running)
    }
}

/// Room for a whole ordinary life (accepted, attempt, submitted, outcome)
/// before a job's timeline has to grow.
const TIMELINE_CAPACITY: usize = 4;

/// The state of everything, built by applying records in sequence order.
#[derive(Clone, Default)]
pub struct Book {
    /// Every job, in the order it was accepted.
    jobs: Vec<JobRecord>,
    /// Where each job sits in `jobs`.
    index: HashMap<JobId, usize, foldhash::fast::RandomState>,
    /// Jobs not yet ended, by their place in `jobs` (which is the order of
    /// their `accepted`): what the engine scans for work, without walking
    /// finished history.
    open: BTreeSet<usize>,
    pub session: SessionRecord,
    pub last_seq: u64,
}

impl Book {
    pub fn job(&self, id: &JobId) -> Option<&JobRecord> {
        self.index.get(id).map(|&i| &self.jobs[i])
    }

    /// Jobs in the order they were accepted.
    pub fn jobs(&self) -> impl DoubleEndedIterator<Item = &JobRecord> + '_ {
        self.jobs.iter()
    }

    /// Jobs that have not ended, oldest first.
    pub fn open_jobs(&self) -> impl Iterator<Item = &JobRecord> + '_ {
        self.open.iter().map(|&i| &self.jobs[i])
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Whether the machine of `subject` would take `event`.
    pub fn check(&self, subject: &Subject, event: &Event) -> Result<(), TransitionError> {
        match (subject, event) {
            (Subject::Job(id), Event::Job(e)) => match self.job(id) {
                Some(job) => job.machine.check(e),
                None => JobMachine::new().check(e),
            },
            (Subject::MasterSession, Event::Session(e)) => self.session.machine.check(e),
            _ => Err(TransitionError {
                state: subject.to_string(),
                event: event.name(),
                why: "event does not belong to this subject".into(),
            }),
        }
    }

    /// Applies one journaled record. A refusal leaves the book unchanged.
    pub fn apply(&mut self, record: Record) -> Result<(), TransitionError> {
        self.apply_record(record).map_err(|refusal| refusal.1)
    }

    /// [`Book::apply`], giving the subject back with a refusal (replay
    /// reports it; cloning it for every event would cost more than the
    /// rest of applying).
    fn apply_record(&mut self, record: Record) -> Result<(), (Subject, TransitionError)> {
        let Record {
            seq,
            at,
            subject,
            event,
        } = record;
        match (subject, event) {
            (Subject::Job(id), Event::Job(e)) => self.apply_job(id, seq, at, e)?,
            (Subject::MasterSession, Event::Session(e)) => self
                .apply_session(seq, at, &e)
                .map_err(|why| (Subject::MasterSession, why))?,
            (subject, event) => {
                let why = TransitionError {
                    state: subject.to_string(),
                    event: event.name(),
                    why: "event does not belong to this subject".into(),
                };
                return Err((subject, why));
            }
        }
        self.last_seq = seq;
        Ok(())
    }

    fn apply_job(
        &mut self,
        id: JobId,
        seq: u64,
        at: Millis,
        event: JobEvent,
    ) -> Result<(), (Subject, TransitionError)> {
        let Some(&place) = self.index.get(&id) else {
            // A new job: its machine refuses anything but `accepted`.
            let mut machine = JobMachine::new();
            if let Err(why) = machine.apply(&event) {
                return Err((Subject::Job(id), why));
            }
            let JobEvent::Accepted {
                document,
                max_attempts,
            } = event
            else {
                unreachable!("a blank job machine takes only accepted")
            };
            let place = self.jobs.len();
            self.index.insert(id.clone(), place);
            self.open.insert(place);
            let mut timeline = Vec::with_capacity(TIMELINE_CAPACITY);
            timeline.push(Step {
                seq,
                at,
                event: JobEvent::Accepted {
                    document: String::new(),
                    max_attempts,
                },
            });
            self.jobs.push(JobRecord {
                id,
                machine,
                document,
                accepted_at: at,
                updated_at: at,
                proposal_no: None,
                last_failure: None,
                attempts_started: 0,
                requeues: 0,
                submitted_at: None,
                finished_at: None,
                timeline,
            });
            return Ok(());
        };
        let job = &mut self.jobs[place];
        let was_terminal = job.status().is_terminal();
        if let Err(why) = job.machine.apply(&event) {
            return Err((Subject::Job(id), why));
        }
        job.updated_at = at;

        match &event {
            JobEvent::Accepted { .. } => unreachable!("an accepted job refuses accepted"),
            JobEvent::AttemptStarted { .. } => job.attempts_started += 1,
            JobEvent::Submitted { .. } => job.submitted_at = Some(at),
            JobEvent::Completed { proposal_no } => {
                job.proposal_no = Some(proposal_no.clone());
                job.finished_at = Some(at);
            }
            JobEvent::AttemptFailed {
                kind,
                stage,
                error,
                artifacts,
                ..
            } => {
                job.last_failure = Some(Failure {
                    kind: Some(*kind),
                    stage: stage.clone(),
                    error: error.clone(),
                    artifacts: artifacts.clone(),
                });
                if job.status().is_terminal() {
                    job.finished_at = Some(at);
                }
            }
            JobEvent::PostSubmissionFailed {
                stage,
                error,
                proposal_no,
                artifacts,
            } => {
                job.proposal_no.clone_from(proposal_no);
                job.last_failure = Some(Failure {
                    kind: None,
                    stage: stage.clone(),
                    error: error.clone(),
                    artifacts: artifacts.clone(),
                });
                job.finished_at = Some(at);
            }
            JobEvent::Requeued { .. } => {
                // A new round: what the last one learned stays in the
                // timeline and `last_failure`, not in the live fields.
                job.requeues += 1;
                job.submitted_at = None;
                job.finished_at = None;
                job.proposal_no = None;
            }
            JobEvent::ArtifactUploadFailed { .. } => {}
        }
        if job.status().is_terminal() {
            self.open.remove(&place);
        } else if was_terminal {
            self.open.insert(place);
        }
        job.timeline.push(Step { seq, at, event });
        Ok(())
    }

    fn apply_session(
        &mut self,
        seq: u64,
        at: Millis,
        event: &SessionEvent,
    ) -> Result<(), TransitionError> {
        let rung = self.session.machine.rung();
        self.session.machine.apply(event)?;
        let s = &mut self.session;
        let open = s
            .recoveries
            .last_mut()
            .filter(|r| r.outcome == RecoveryOutcome::Running);
        match event {
            SessionEvent::LoginStarted => {
                if let Some(r) = open {
                    r.outcome = RecoveryOutcome::Abandoned;
                    r.finished_at = Some(at);
                }
            }
            SessionEvent::LoggedIn { duration_ms } => {
                s.last_login_at = Some(at);
                if let (Some(r), Some((level, attempt))) = (open, rung) {
                    r.tries.push(RecoveryTry {
                        level,
                        attempt,
                        duration_ms: *duration_ms,
                        error: None,
                    });
                    r.outcome = RecoveryOutcome::Recovered;
                    r.finished_at = Some(at);
                }
            }
            SessionEvent::Expired { trigger } => s.recoveries.push(Recovery {
                started_seq: seq,
                started_at: at,
                trigger: match trigger {
                    Trigger::Job(id) => format!("job {id}"),
                    Trigger::Heartbeat => "heartbeat".into(),
                    Trigger::Startup => "startup".into(),
                },
                tries: Vec::new(),
                outcome: RecoveryOutcome::Running,
                finished_at: None,
            }),
            SessionEvent::TryFailed {
                level,
                attempt,
                duration_ms,
                error,
            } => {
                if let Some(r) = open {
                    r.tries.push(RecoveryTry {
                        level: *level,
                        attempt: *attempt,
                        duration_ms: *duration_ms,
                        error: Some(error.clone()),
                    });
                    if s.machine.status() == SessionStatus::Down {
                        r.outcome = RecoveryOutcome::Down;
                        r.finished_at = Some(at);
                    }
                }
            }
            SessionEvent::BackupRestored => {}
            SessionEvent::CooldownOver => s.recoveries.push(Recovery {
                started_seq: seq,
                started_at: at,
                trigger: "cool-down over".into(),
                tries: Vec::new(),
                outcome: RecoveryOutcome::Running,
                finished_at: None,
            }),
        }
        Ok(())
    }

    /// A comparable summary of every machine's state, for checking that a
    /// replay rebuilt what the live process had.
    pub fn fingerprint(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .jobs()
            .map(|j| {
                format!(
                    "{} {:?} max={} started={} requeues={}",
                    j.id,
                    j.machine.state(),
                    j.machine.max_attempts(),
                    j.attempts_started,
                    j.requeues
                )
            })
            .collect();
        out.push(format!("session {:?}", self.session.machine.state()));
        out.push(format!("recoveries {:?}", self.session.recoveries));
        out
    }
}

/// Why an event could not be recorded.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error("{subject}: {source}")]
    Refused {
        subject: Subject,
        #[source]
        source: TransitionError,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What opening a journal found.
#[derive(Debug, Default)]
pub struct ReplayReport {
    pub events: u64,
    /// Values that could not be read; replay went on without them.
    pub unreadable: Vec<JournalError>,
    /// Events the machines refused, by sequence number.
    pub refused: Vec<(u64, RecordError)>,
}

/// Replays `journal` into a fresh book.
pub fn replay(journal: &Journal) -> (Book, ReplayReport) {
    replay_observing(journal, |_| {})
}

/// Replays `journal`, showing each readable record to `observe` before the
/// book applies it (the invariant checker reads along this way).
pub fn replay_observing(
    journal: &Journal,
    mut observe: impl FnMut(&Record),
) -> (Book, ReplayReport) {
    let mut book = Book::default();
    let mut report = ReplayReport::default();
    journal.scan(|item| match item {
        Ok(record) => {
            report.events += 1;
            observe(&record);
            let seq = record.seq;
            if let Err((subject, source)) = book.apply_record(record) {
                report
                    .refused
                    .push((seq, RecordError::Refused { subject, source }));
            }
        }
        Err(e) => report.unreadable.push(e),
    });
    (book, report)
}

/// The journal and the book it builds, kept in step.
pub struct Recorder {
    journal: Journal,
    book: Mutex<Book>,
    /// Sequence numbers replay could not read or apply at open.
    damaged: Vec<u64>,
}

impl Recorder {
    /// Opens the journal in `dir` and replays it.
    pub fn open(dir: impl AsRef<Path>) -> Result<(Recorder, ReplayReport), JournalError> {
        let journal = Journal::open(dir)?;
        let (book, report) = replay(&journal);
        let mut damaged: Vec<u64> = report
            .unreadable
            .iter()
            .filter_map(JournalError::seq)
            .chain(report.refused.iter().map(|(seq, _)| *seq))
            .collect();
        damaged.sort_unstable();
        Ok((
            Recorder {
                journal,
                book: Mutex::new(book),
                damaged,
            },
            report,
        ))
    }

    /// Sequence numbers that replay could not read, or that a machine
    /// refused, when the journal was opened. A damaged value cannot be
    /// attributed to its job (the job id is inside the damaged bytes), so
    /// no job's state can be trusted to be the whole story: the engine will
    /// not start work on such a journal.
    pub fn damaged(&self) -> &[u64] {
        &self.damaged
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The book, locked. Hold it briefly: every record waits on it.
    pub fn book(&self) -> MutexGuard<'_, Book> {
        // A panic while holding the lock cannot leave the book half-applied:
        // `apply` checks before it mutates.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `event` against its machine, journals it (durably when it
    /// carries a promise), then applies it. Returns its sequence number.
    pub fn record(&self, subject: Subject, event: Event, at: Millis) -> Result<u64, RecordError> {
        let mut book = self.book();
        book.check(&subject, &event)
            .map_err(|source| RecordError::Refused {
                subject: subject.clone(),
                source,
            })?;
        let seq = self.journal.append(&subject, &event, at)?;
        let record = Record {
            seq,
            at,
            subject,
            event,
        };
        if let Err(e) = book.apply(record) {
            unreachable!("checked event refused on apply: {e}");
        }
        Ok(seq)
    }

    pub fn job_event(&self, id: &JobId, event: JobEvent, at: Millis) -> Result<u64, RecordError> {
        self.record(Subject::Job(id.clone()), Event::Job(event), at)
    }

    pub fn session_event(&self, event: SessionEvent, at: Millis) -> Result<u64, RecordError> {
        self.record(Subject::MasterSession, Event::Session(event), at)
    }

    /// Applies the restart rules to what replay found: an attempt that was
    /// filling counts as failed (interrupted) and follows the retry rule; a
    /// job found submitted ends `failed_post_submission`, outcome unknown,
    /// for a person to check on the portal. Returns the jobs it changed.
    pub fn settle_after_restart(
        &self,
        now: Millis,
        retry_at: Millis,
    ) -> Result<Vec<(JobId, Status)>, RecordError> {
        let found: Vec<(JobId, Status, u32)> = self
            .book()
            .jobs()
            .filter(|j| matches!(j.status(), Status::Filling | Status::Submitted))
            .map(|j| (j.id.clone(), j.status(), j.machine.attempts()))
            .collect();
        let mut changed = Vec::new();
        for (id, status, attempt) in found {
            let event = if status == Status::Filling {
                JobEvent::AttemptFailed {
                    attempt,
                    kind: FailureKind::Interrupted,
                    stage: "restart".into(),
                    error: "the daemon stopped during this attempt".into(),
                    retry_at,
                    artifacts: Vec::new(),
                }
            } else {
                JobEvent::PostSubmissionFailed {
                    stage: "restart".into(),
                    error: "outcome unknown after restart: the save click may have \
                            reached the portal; check it before raising this proposal again"
                        .into(),
                    proposal_no: None,
                    artifacts: Vec::new(),
                }
            };
            self.job_event(&id, event, now)?;
            let after = self.book().job(&id).map(JobRecord::status);
            changed.push((id, after.unwrap_or(status)));
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requeued_job_is_open_again_and_replays_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let id = JobId::from("P1");
        let fingerprint = {
            let (recorder, _) = Recorder::open(dir.path()).unwrap();
            let accepted = JobEvent::Accepted {
                document: "{}".into(),
                max_attempts: 1,
            };
            recorder.job_event(&id, accepted, 1).unwrap();
            recorder
                .job_event(&id, JobEvent::AttemptStarted { attempt: 1 }, 2)
                .unwrap();
            let failed = JobEvent::AttemptFailed {
                attempt: 1,
                kind: FailureKind::Timeout,
                stage: "s".into(),
                error: "e".into(),
                retry_at: 3,
                artifacts: vec![],
            };
            recorder.job_event(&id, failed, 3).unwrap();
            assert_eq!(recorder.book().open_jobs().count(), 0);

            let requeued = JobEvent::Requeued {
                reason: "portal fixed".into(),
                confirmed_post_submission: false,
            };
            recorder.job_event(&id, requeued, 4).unwrap();
            let book = recorder.book();
            let job = book.job(&id).unwrap();
            assert_eq!(job.status(), Status::Pending);
            assert_eq!((job.requeues, job.attempts_started), (1, 1));
            assert_eq!(job.finished_at, None);
            assert!(job.timeline.last().unwrap().note().contains("portal fixed"));
            assert_eq!(book.open_jobs().count(), 1);
            book.fingerprint()
        };
        let (recorder, report) = Recorder::open(dir.path()).unwrap();
        assert!(report.refused.is_empty() && report.unreadable.is_empty());
        assert_eq!(recorder.book().fingerprint(), fingerprint);
        assert_eq!(recorder.book().open_jobs().count(), 1);
    }
}
