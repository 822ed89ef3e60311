//! The events formwright journals, and the envelope each is stored in.
//!
//! Every change of a job's or the master session's state is one of these
//! events. They are the audit log, so they say what happened in the domain's
//! words and carry what an auditor needs (attempt numbers, errors, proposal
//! numbers), never secrets. Their byte layout is specified in
//! `journal-format.md`; postcard encodes enum variants by position, so new
//! variants and fields are only ever added at the end, under a new format
//! version.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A job's identity: the client's own id (for `onlinePolicy` documents, the
/// `policyId`). Intake is idempotent on it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for JobId {
    fn from(id: &str) -> Self {
        JobId(id.to_owned())
    }
}

/// Milliseconds since the Unix epoch, UTC. Times travel inside events so that
/// replay never asks the clock.
pub type Millis = i64;

/// Whom an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Subject {
    Job(JobId),
    MasterSession,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Job(id) => write!(f, "job {id}"),
            Subject::MasterSession => f.write_str("master session"),
        }
    }
}

/// One journaled fact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Job(JobEvent),
    Session(SessionEvent),
}

/// What a failed attempt ran into, so operators can tell an outage from a
/// broken profile at a glance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The cloned login turned out to be expired.
    SessionExpired,
    /// An element the profile names was missing or never became usable.
    ElementMissing,
    /// A wait ran out of time.
    Timeout,
    /// The browser or its driver went away.
    BrowserCrashed,
    /// The portal refused a value (validation message on the page).
    Validation,
    /// The job document did not satisfy the profile.
    BadInput,
    /// The daemon stopped while the attempt was running.
    Interrupted,
    /// Anything else.
    Other,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::SessionExpired => "session_expired",
            FailureKind::ElementMissing => "element_missing",
            FailureKind::Timeout => "timeout",
            FailureKind::BrowserCrashed => "browser_crashed",
            FailureKind::Validation => "validation",
            FailureKind::BadInput => "bad_input",
            FailureKind::Interrupted => "interrupted",
            FailureKind::Other => "other",
        }
    }
}

/// Events of one job's lifecycle. See `machine::job` for which are legal in
/// which state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobEvent {
    /// Intake took the job. `document` is the client's JSON, verbatim, so the
    /// job can be redone from the journal alone.
    Accepted { document: String, max_attempts: u32 },
    /// A worker began attempt number `attempt` (1-based).
    AttemptStarted { attempt: u32 },
    /// The form is complete and the save click is next. Durable before the
    /// click: from here on the job is never retried.
    Submitted { attempt: u32 },
    /// The portal confirmed the proposal.
    Completed { proposal_no: String },
    /// Attempt `attempt` failed before the submit click. `retry_at` is when a
    /// retry may start if the machine allows one.
    AttemptFailed {
        attempt: u32,
        kind: FailureKind,
        stage: String,
        error: String,
        retry_at: Millis,
        artifacts: Vec<String>,
    },
    /// Something went wrong after the submit click; the proposal may exist.
    PostSubmissionFailed {
        stage: String,
        error: String,
        proposal_no: Option<String>,
        artifacts: Vec<String>,
    },
    /// An operator put an ended job back in the queue for a new round of
    /// attempts (numbered from 1 again). From `failed_login_form` any time;
    /// from `failed_post_submission` only with `confirmed_post_submission`,
    /// because the proposal may already exist on the portal. Added in format
    /// version 2.
    Requeued {
        reason: String,
        confirmed_post_submission: bool,
    },
    /// Storing a failure's evidence under `key` failed; the bytes stay in
    /// the local spool and are sent again (also after a restart). A note,
    /// not a transition: legal in every state after intake. Added in format
    /// version 3.
    ArtifactUploadFailed { key: String, error: String },
}

impl JobEvent {
    /// The event's name as the export and the timeline print it.
    pub fn name(&self) -> &'static str {
        match self {
            JobEvent::Accepted { .. } => "accepted",
            JobEvent::AttemptStarted { .. } => "attempt_started",
            JobEvent::Submitted { .. } => "submitted",
            JobEvent::Completed { .. } => "completed",
            JobEvent::AttemptFailed { .. } => "attempt_failed",
            JobEvent::PostSubmissionFailed { .. } => "post_submission_failed",
            JobEvent::Requeued { .. } => "requeued",
            JobEvent::ArtifactUploadFailed { .. } => "artifact_upload_failed",
        }
    }

    /// The oldest journal format version that can hold this event.
    pub fn format_version(&self) -> u8 {
        match self {
            JobEvent::Requeued { .. } => 2,
            JobEvent::ArtifactUploadFailed { .. } => 3,
            _ => 1,
        }
    }

    /// Whether the append must reach the disk before it returns: the
    /// `submitted` promise, every terminal outcome and an operator's
    /// requeue.
    pub fn is_durable(&self) -> bool {
        !matches!(self, JobEvent::AttemptStarted { .. })
    }
}

/// The rungs of the recovery ladder, in the order they are climbed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Log in again in the same master browser.
    Soft,
    /// A new master browser on the same profile.
    Hard,
    /// A fresh profile, the old one kept aside as a backup.
    Nuclear,
}

impl Level {
    /// Tries allowed at this level before the next one.
    pub fn tries(self) -> u32 {
        match self {
            Level::Soft => 3,
            Level::Hard => 2,
            Level::Nuclear => 1,
        }
    }

    /// The level above, or `None` above nuclear.
    pub fn next(self) -> Option<Level> {
        match self {
            Level::Soft => Some(Level::Hard),
            Level::Hard => Some(Level::Nuclear),
            Level::Nuclear => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Soft => "soft",
            Level::Hard => "hard",
            Level::Nuclear => "nuclear",
        }
    }
}

/// What made formwright notice the session was gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A job's cloned session was expired.
    Job(JobId),
    /// The periodic check of the master's login.
    Heartbeat,
    /// The first login at start-up failed.
    Startup,
}

/// Events of the master session and its recovery ladder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEvent {
    /// The first login of this daemon run began.
    LoginStarted,
    /// The master is logged in, after the first login or a recovery try.
    LoggedIn { duration_ms: u64 },
    /// The session is gone; a recovery starts at soft, try 1.
    Expired { trigger: Trigger },
    /// One try of the ladder failed; the machine moves to the next rung.
    TryFailed {
        level: Level,
        attempt: u32,
        duration_ms: u64,
        error: String,
    },
    /// A nuclear try failed and the old profile was put back.
    BackupRestored,
    /// The cool-down after `down` is over; a new ladder starts.
    CooldownOver,
}

impl SessionEvent {
    pub fn name(&self) -> &'static str {
        match self {
            SessionEvent::LoginStarted => "login_started",
            SessionEvent::LoggedIn { .. } => "logged_in",
            SessionEvent::Expired { .. } => "expired",
            SessionEvent::TryFailed { .. } => "try_failed",
            SessionEvent::BackupRestored => "backup_restored",
            SessionEvent::CooldownOver => "cooldown_over",
        }
    }
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Job(e) => e.name(),
            Event::Session(e) => e.name(),
        }
    }

    pub fn is_durable(&self) -> bool {
        match self {
            Event::Job(e) => e.is_durable(),
            Event::Session(_) => false,
        }
    }

    /// The oldest journal format version that can hold this event.
    pub fn format_version(&self) -> u8 {
        match self {
            Event::Job(e) => e.format_version(),
            Event::Session(_) => 1,
        }
    }
}

/// What is stored under one sequence number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub at: Millis,
    pub subject: Subject,
    pub event: Event,
}

/// A [`Record`] by reference, for writing without copying the event. Its
/// fields are in the same order, so it encodes to the same bytes.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RecordRef<'a> {
    pub seq: u64,
    pub at: Millis,
    pub subject: &'a Subject,
    pub event: &'a Event,
}
