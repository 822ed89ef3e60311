//! What the engine needs from a portal, and nothing more.
//!
//! The engine decides and journals; a [`Portal`] acts. The production
//! implementation drives real browsers (`browser::live`); tests use scripted
//! ones. Keeping the seam this narrow is what lets the engine put the
//! durable `submitted` event exactly between [`Attempt::fill`] and
//! [`Attempt::click_submit`].

use std::future::Future;

use crate::journal::{FailureKind, JobId, Level};

/// Why an attempt failed before the submit click.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{stage}: {error}")]
pub struct AttemptFailure {
    pub kind: FailureKind,
    /// The step or phase where it failed, e.g. `clone check` or a step name.
    pub stage: String,
    /// Operator-facing text: names the selector or URL, never personal data.
    pub error: String,
}

impl AttemptFailure {
    pub fn new(kind: FailureKind, stage: impl Into<String>, error: impl Into<String>) -> Self {
        AttemptFailure {
            kind,
            stage: stage.into(),
            error: error.into(),
        }
    }

    /// The cloned login was expired: the master session needs recovery.
    pub fn is_session_expired(&self) -> bool {
        self.kind == FailureKind::SessionExpired
    }
}

/// Why an attempt failed after the submit click.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{stage}: {error}")]
pub struct PostSubmitFailure {
    pub stage: String,
    pub error: String,
    /// The proposal number, if the portal showed it before things broke.
    pub proposal_no: Option<String>,
}

/// Why the master could not log in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LoginFailure(pub String);

/// One job's browser for one attempt. Dropped or closed, it leaves nothing
/// behind (no browser, no profile folder).
pub trait Attempt: Send {
    /// Runs every pre-submit step and waits until the submit control is
    /// ready. Nothing has reached the portal's save yet.
    fn fill(&mut self) -> impl Future<Output = Result<(), AttemptFailure>> + Send;

    /// The one click that creates the proposal.
    fn click_submit(&mut self) -> impl Future<Output = Result<(), PostSubmitFailure>> + Send;

    /// The post-submit steps; returns the proposal number.
    fn finish(&mut self) -> impl Future<Output = Result<String, PostSubmitFailure>> + Send;

    /// Saves what the browser shows (screenshot, page) and returns the
    /// storage keys. Never fails: evidence that cannot be taken is noted.
    fn evidence(&mut self, stage: &str) -> impl Future<Output = Vec<String>> + Send;

    /// Ends the browser and deletes its profile.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// The portal as the engine sees it: a master session and clones of it.
pub trait Portal: Send + Sync + 'static {
    type Attempt: Attempt + 'static;

    /// Brings up the master browser and logs in (a daemon run's first
    /// login).
    fn start_master(&self) -> impl Future<Output = Result<(), LoginFailure>> + Send;

    /// One try of the recovery ladder at `level`: soft logs in again in the
    /// same browser, hard starts a new master browser on the same profile,
    /// nuclear moves the profile aside and starts fresh (putting the backup
    /// back if the try fails; see [`Portal::restored_backup`]).
    fn recover(&self, level: Level) -> impl Future<Output = Result<(), LoginFailure>> + Send;

    /// Whether the last failed nuclear try put the old profile back.
    fn restored_backup(&self) -> bool;

    /// Whether the master is still logged in (the heartbeat).
    fn master_logged_in(&self) -> impl Future<Output = Result<bool, LoginFailure>> + Send;

    /// Opens a browser for one attempt of `job`, carrying a fresh copy of the
    /// master's login, and checks that copy. An expired copy fails with
    /// [`FailureKind::SessionExpired`].
    fn open_attempt(
        &self,
        job: &JobId,
        attempt: u32,
        document: &str,
    ) -> impl Future<Output = Result<Self::Attempt, AttemptFailure>> + Send;

    /// Notes that an attempt failed before it had a browser to take
    /// evidence from (`open_attempt` failed), and why; returns the keys of
    /// that note. By default nothing is kept.
    fn evidence_missing(
        &self,
        job: &JobId,
        attempt: u32,
        failure: &AttemptFailure,
    ) -> impl Future<Output = Vec<String>> + Send {
        let _ = (job, attempt, failure);
        std::future::ready(Vec::new())
    }

    /// The timed spans of the attempts so far, when this portal records
    /// them (the live one does).
    fn step_times(&self) -> Option<std::sync::Arc<crate::timing::StepTimes>> {
        None
    }

    /// Ends every browser; called once at shutdown.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;
}
