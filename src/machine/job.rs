//! One job's lifecycle.
//!
//! ```text
//!   blank ──accepted──▶ pending{attempts, not_before}
//!   pending ──attempt_started(n = attempts+1 ≤ max)──▶ filling{n}
//!   filling{n} ──submitted(n)──▶ submitted{n}
//!   filling{n} ──attempt_failed(n)──▶ pending{n, retry_at}     when n < max
//!                                  └─▶ failed_login_form{n}     when n = max
//!   submitted ──completed──▶ completed{proposal_no}
//!   submitted ──post_submission_failed──▶ failed_post_submission
//!   failed_login_form ──requeued──▶ pending{0, 0}            (a new round)
//!   failed_post_submission ──requeued(confirmed)──▶ pending{0, 0}
//!   any state but blank ──artifact_upload_failed──▶ the same state
//! ```
//!
//! `completed`, `failed_login_form` and `failed_post_submission` are terminal
//! and refuse everything but an operator's `requeued` from the two failed
//! states. Nothing leads from `submitted` back to an attempt: that is the
//! rule that keeps a proposal from being raised twice. The one door past it
//! is a requeue of `failed_post_submission` that a person confirmed (with a
//! reason, journaled) after checking the portal.

use serde::Serialize;
use statig::prelude::*;

use super::{TransitionError, Verdict};
use crate::journal::{JobEvent, Millis};

/// The statig shared storage: what every state of a job may consult.
#[derive(Clone, Debug, Default)]
pub struct JobLifecycle {
    /// Attempts this job may use; fixed at intake.
    max_attempts: u32,
}

#[state_machine(
    initial = "State::blank()",
    state(derive(Clone, Debug, PartialEq, Eq)),
    superstate(derive(Debug))
)]
impl JobLifecycle {
    /// Before intake: only `accepted` is meaningful.
    #[state]
    fn blank(&mut self, context: &mut Verdict, event: &JobEvent) -> Outcome<State> {
        match event {
            JobEvent::Accepted { max_attempts, .. } if *max_attempts >= 1 => {
                self.max_attempts = *max_attempts;
                Transition(State::pending(0, 0))
            }
            JobEvent::Accepted { .. } => context.refuse("max_attempts must be at least 1"),
            _ => context.refuse("the job has not been accepted"),
        }
    }

    /// Waiting for a worker; `attempts` used so far, none before `not_before`.
    #[state]
    fn pending(
        &mut self,
        attempts: &u32,
        not_before: &Millis,
        context: &mut Verdict,
        event: &JobEvent,
    ) -> Outcome<State> {
        // When to start is the engine's call; the machine only keeps it.
        let _ = not_before;
        match event {
            JobEvent::AttemptStarted { attempt } if *attempt != attempts + 1 => {
                context.refuse(format!("the next attempt is {}", attempts + 1))
            }
            JobEvent::AttemptStarted { attempt } if *attempt > self.max_attempts => {
                context.refuse(format!(
                    "attempt {attempt} exceeds max_attempts {}",
                    self.max_attempts
                ))
            }
            JobEvent::AttemptStarted { attempt } => Transition(State::filling(*attempt)),
            _ => context.refuse("only attempt_started leaves pending"),
        }
    }

    /// A worker is filling the form; nothing has been submitted.
    #[state]
    fn filling(
        &mut self,
        attempt: &u32,
        context: &mut Verdict,
        event: &JobEvent,
    ) -> Outcome<State> {
        match event {
            JobEvent::Submitted { attempt: n } | JobEvent::AttemptFailed { attempt: n, .. }
                if n != attempt =>
            {
                context.refuse(format!("the running attempt is {attempt}, not {n}"))
            }
            JobEvent::Submitted { .. } => Transition(State::submitted(*attempt)),
            JobEvent::AttemptFailed {
                error, retry_at, ..
            } => {
                if *attempt < self.max_attempts {
                    Transition(State::pending(*attempt, *retry_at))
                } else {
                    Transition(State::failed_login_form(*attempt, error.clone()))
                }
            }
            _ => context.refuse("a filling attempt ends in submitted or attempt_failed"),
        }
    }

    /// The save click may have happened: the only ways out are the outcomes.
    #[state]
    fn submitted(
        &mut self,
        attempt: &u32,
        context: &mut Verdict,
        event: &JobEvent,
    ) -> Outcome<State> {
        let _ = attempt;
        match event {
            JobEvent::Completed { proposal_no } => {
                Transition(State::completed(proposal_no.clone()))
            }
            JobEvent::PostSubmissionFailed {
                error, proposal_no, ..
            } => Transition(State::failed_post_submission(
                error.clone(),
                proposal_no.clone(),
            )),
            _ => context.refuse("after submitted only completed or post_submission_failed"),
        }
    }

    #[state(superstate = "terminal")]
    fn completed(proposal_no: &String) -> Outcome<State> {
        let _ = proposal_no;
        Super
    }

    /// Ended after every attempt failed before submit; an operator may
    /// start a new round.
    #[state(superstate = "terminal")]
    fn failed_login_form(
        attempts: &u32,
        last_error: &String,
        context: &mut Verdict,
        event: &JobEvent,
    ) -> Outcome<State> {
        let _ = (attempts, last_error);
        match event {
            JobEvent::Requeued { reason, .. } if reason.trim().is_empty() => {
                context.refuse("a requeue needs a reason")
            }
            JobEvent::Requeued { .. } => Transition(State::pending(0, 0)),
            _ => Super,
        }
    }

    /// Ended after the save click; a new round only when a person confirmed
    /// that the portal holds no proposal for it.
    #[state(superstate = "terminal")]
    fn failed_post_submission(
        error: &String,
        proposal_no: &Option<String>,
        context: &mut Verdict,
        event: &JobEvent,
    ) -> Outcome<State> {
        let _ = (error, proposal_no);
        match event {
            JobEvent::Requeued {
                confirmed_post_submission: false,
                ..
            } => context.refuse(
                "the job failed after submission; a requeue must be confirmed \
                 (the proposal may exist on the portal)",
            ),
            JobEvent::Requeued { reason, .. } if reason.trim().is_empty() => {
                context.refuse("a confirmed requeue needs a reason")
            }
            JobEvent::Requeued { .. } => Transition(State::pending(0, 0)),
            _ => Super,
        }
    }

    /// Every terminal state refuses every event.
    #[superstate]
    fn terminal(context: &mut Verdict) -> Outcome<State> {
        context.refuse("the job has ended")
    }
}

/// The status names the API, the CLI and the export use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Filling,
    Submitted,
    Completed,
    FailedLoginForm,
    FailedPostSubmission,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Filling,
        Status::Submitted,
        Status::Completed,
        Status::FailedLoginForm,
        Status::FailedPostSubmission,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Filling => "filling",
            Status::Submitted => "submitted",
            Status::Completed => "completed",
            Status::FailedLoginForm => "failed_login_form",
            Status::FailedPostSubmission => "failed_post_submission",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::FailedLoginForm | Status::FailedPostSubmission
        )
    }
}

impl State {
    /// `None` only before intake.
    pub fn status(&self) -> Option<Status> {
        Some(match self {
            State::Blank {} => return None,
            State::Pending { .. } => Status::Pending,
            State::Filling { .. } => Status::Filling,
            State::Submitted { .. } => Status::Submitted,
            State::Completed { .. } => Status::Completed,
            State::FailedLoginForm { .. } => Status::FailedLoginForm,
            State::FailedPostSubmission { .. } => Status::FailedPostSubmission,
        })
    }
}

/// A job's machine with a `Result`-returning face.
#[derive(Clone)]
pub struct JobMachine {
    inner: statig::blocking::StateMachine<JobLifecycle>,
}

impl Default for JobMachine {
    fn default() -> Self {
        JobMachine::new()
    }
}

impl JobMachine {
    pub fn new() -> JobMachine {
        JobMachine {
            inner: JobLifecycle::default().state_machine(),
        }
    }

    /// Applies `event`, or refuses it and leaves the state unchanged.
    pub fn apply(&mut self, event: &JobEvent) -> Result<(), TransitionError> {
        // A failed evidence upload is a note about the job, not a step of
        // its lifecycle: it may come in any state, terminal ones included.
        if let JobEvent::ArtifactUploadFailed { .. } = event {
            return match self.state() {
                State::Blank {} => Err(TransitionError {
                    state: describe(self.state()),
                    event: event.name(),
                    why: "the job has not been accepted".into(),
                }),
                _ => Ok(()),
            };
        }
        super::decide(&mut self.inner, event, event.name(), describe)
    }

    /// Whether `event` would be accepted, without applying it.
    pub fn check(&self, event: &JobEvent) -> Result<(), TransitionError> {
        self.clone().apply(event)
    }

    pub fn state(&self) -> &State {
        self.inner.state()
    }

    pub fn status(&self) -> Option<Status> {
        self.state().status()
    }

    pub fn max_attempts(&self) -> u32 {
        self.inner.inner().max_attempts
    }

    /// Attempts started so far.
    pub fn attempts(&self) -> u32 {
        match self.state() {
            State::Blank {} | State::Completed { .. } | State::FailedPostSubmission { .. } => 0,
            State::Pending { attempts, .. } => *attempts,
            State::Filling { attempt } | State::Submitted { attempt } => *attempt,
            State::FailedLoginForm { attempts, .. } => *attempts,
        }
    }

    /// When a pending job may start its next attempt.
    pub fn not_before(&self) -> Option<Millis> {
        match self.state() {
            State::Pending { not_before, .. } => Some(*not_before),
            _ => None,
        }
    }
}

/// A short text of a state for errors and timelines.
pub fn describe(state: &State) -> String {
    match state {
        State::Blank {} => "blank".into(),
        State::Pending { attempts, .. } => format!("pending (attempts used: {attempts})"),
        State::Filling { attempt } => format!("filling (attempt {attempt})"),
        State::Submitted { attempt } => format!("submitted (attempt {attempt})"),
        State::Completed { proposal_no } => format!("completed ({proposal_no})"),
        State::FailedLoginForm { attempts, .. } => format!("failed_login_form after {attempts}"),
        State::FailedPostSubmission { .. } => "failed_post_submission".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::FailureKind;

    #[test]
    fn an_upload_failure_is_legal_in_every_state_after_intake_and_changes_none() {
        let note = JobEvent::ArtifactUploadFailed {
            key: "A/1-x.png".into(),
            error: "timed out".into(),
        };
        assert!(JobMachine::new().apply(&note).is_err());
        let mut job = JobMachine::new();
        let steps = [
            accepted(1),
            JobEvent::AttemptStarted { attempt: 1 },
            JobEvent::Submitted { attempt: 1 },
            JobEvent::Completed {
                proposal_no: "P1".into(),
            },
        ];
        for step in steps {
            job.apply(&step).unwrap();
            let before = job.state().clone();
            job.apply(&note).unwrap();
            assert_eq!(job.state(), &before);
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
            stage: "type first_name".into(),
            error: "timed out".into(),
            retry_at: 5_000,
            artifacts: vec![],
        }
    }

    #[test]
    fn happy_path() {
        let mut job = JobMachine::new();
        job.apply(&accepted(3)).unwrap();
        job.apply(&JobEvent::AttemptStarted { attempt: 1 }).unwrap();
        job.apply(&JobEvent::Submitted { attempt: 1 }).unwrap();
        job.apply(&JobEvent::Completed {
            proposal_no: "R1".into(),
        })
        .unwrap();
        assert_eq!(job.status(), Some(Status::Completed));
    }

    #[test]
    fn failures_retry_until_max_then_stop() {
        let mut job = JobMachine::new();
        job.apply(&accepted(2)).unwrap();
        job.apply(&JobEvent::AttemptStarted { attempt: 1 }).unwrap();
        job.apply(&failed(1)).unwrap();
        assert_eq!(job.status(), Some(Status::Pending));
        assert_eq!(job.not_before(), Some(5_000));
        job.apply(&JobEvent::AttemptStarted { attempt: 2 }).unwrap();
        job.apply(&failed(2)).unwrap();
        assert_eq!(job.status(), Some(Status::FailedLoginForm));
        let err = job
            .apply(&JobEvent::AttemptStarted { attempt: 3 })
            .unwrap_err();
        assert_eq!(err.event, "attempt_started");
    }

    #[test]
    fn nothing_starts_an_attempt_after_submitted() {
        let mut job = JobMachine::new();
        job.apply(&accepted(3)).unwrap();
        job.apply(&JobEvent::AttemptStarted { attempt: 1 }).unwrap();
        job.apply(&JobEvent::Submitted { attempt: 1 }).unwrap();
        for event in [
            JobEvent::AttemptStarted { attempt: 2 },
            failed(1),
            JobEvent::Submitted { attempt: 1 },
            accepted(3),
        ] {
            assert!(job.apply(&event).is_err(), "{event:?} must be refused");
            assert_eq!(job.status(), Some(Status::Submitted));
        }
    }

    #[test]
    fn refusal_leaves_state_and_says_why() {
        let mut job = JobMachine::new();
        let err = job
            .apply(&JobEvent::AttemptStarted { attempt: 1 })
            .unwrap_err();
        assert_eq!(err.state, "blank");
        assert!(err.to_string().contains("not been accepted"));
        assert_eq!(job.status(), None);
    }

    fn requeued(confirmed: bool) -> JobEvent {
        JobEvent::Requeued {
            reason: "portal fixed".into(),
            confirmed_post_submission: confirmed,
        }
    }

    #[test]
    fn failed_login_form_is_requeued_into_a_new_round() {
        let mut job = JobMachine::new();
        job.apply(&accepted(1)).unwrap();
        job.apply(&JobEvent::AttemptStarted { attempt: 1 }).unwrap();
        job.apply(&failed(1)).unwrap();
        assert_eq!(job.status(), Some(Status::FailedLoginForm));

        let no_reason = JobEvent::Requeued {
            reason: " ".into(),
            confirmed_post_submission: false,
        };
        assert!(job.apply(&no_reason).is_err());
        job.apply(&requeued(false)).unwrap();
        assert_eq!(job.status(), Some(Status::Pending));
        assert_eq!(job.attempts(), 0);
        assert_eq!(job.not_before(), Some(0));
        // The new round numbers its attempts from 1 and keeps the maximum.
        assert!(job.apply(&JobEvent::AttemptStarted { attempt: 2 }).is_err());
        job.apply(&JobEvent::AttemptStarted { attempt: 1 }).unwrap();
        job.apply(&failed(1)).unwrap();
        assert_eq!(job.status(), Some(Status::FailedLoginForm));
    }

    #[test]
    fn failed_post_submission_needs_a_confirmed_requeue() {
        let mut job = JobMachine::new();
        job.apply(&accepted(3)).unwrap();
        job.apply(&JobEvent::AttemptStarted { attempt: 1 }).unwrap();
        job.apply(&JobEvent::Submitted { attempt: 1 }).unwrap();
        job.apply(&JobEvent::PostSubmissionFailed {
            stage: "read".into(),
            error: "500".into(),
            proposal_no: None,
            artifacts: vec![],
        })
        .unwrap();

        let err = job.apply(&requeued(false)).unwrap_err();
        assert!(err.why.contains("confirmed"), "{err}");
        assert_eq!(job.status(), Some(Status::FailedPostSubmission));
        job.apply(&requeued(true)).unwrap();
        assert_eq!(job.status(), Some(Status::Pending));
        job.apply(&JobEvent::AttemptStarted { attempt: 1 }).unwrap();
    }

    #[test]
    fn requeue_is_refused_unless_the_job_failed() {
        let mut job = JobMachine::new();
        assert!(job.apply(&requeued(true)).is_err());
        job.apply(&accepted(3)).unwrap();
        assert!(job.apply(&requeued(true)).is_err());
        job.apply(&JobEvent::AttemptStarted { attempt: 1 }).unwrap();
        assert!(job.apply(&requeued(true)).is_err());
        job.apply(&JobEvent::Submitted { attempt: 1 }).unwrap();
        assert!(
            job.apply(&requeued(true)).is_err(),
            "never out of submitted"
        );
        job.apply(&JobEvent::Completed {
            proposal_no: "R1".into(),
        })
        .unwrap();
        assert!(
            job.apply(&requeued(true)).is_err(),
            "never out of completed"
        );
        assert_eq!(job.status(), Some(Status::Completed));
    }

    #[test]
    fn terminal_states_refuse_everything() {
        let mut job = JobMachine::new();
        job.apply(&accepted(1)).unwrap();
        job.apply(&JobEvent::AttemptStarted { attempt: 1 }).unwrap();
        job.apply(&failed(1)).unwrap();
        assert_eq!(job.status(), Some(Status::FailedLoginForm));
        assert!(job.apply(&JobEvent::AttemptStarted { attempt: 2 }).is_err());
        assert!(job
            .apply(&JobEvent::Completed {
                proposal_no: "R".into()
            })
            .is_err());
    }
}
