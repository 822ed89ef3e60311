//! The engine: turns machine decisions into portal actions and journal
//! events.
//!
//! It owns the worker slots, the retry timers and the master session. Each
//! worker waits for a logged-in master, claims the oldest job whose retry
//! time has come, and runs one attempt:
//!
//! ```text
//!   attempt_started ─ open a clone ─ check it ─ fill ─ [submitted, durable]
//!        ─ the submit step ─ read the proposal number ─ completed
//! ```
//!
//! A failure before `submitted` is journaled as `attempt_failed` with the
//! time of the next try (exponential backoff); after `submitted` it is
//! `post_submission_failed` and the job is never tried again. An expired
//! clone also asks the master session for a recovery (one at a time).

pub mod alerts;
pub mod portal;
pub mod session;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

use crate::book::{RecordError, Recorder};
use crate::journal::{now_millis, FailureKind, JobEvent, JobId, Millis, Trigger};
use crate::machine::job::Status;
use alerts::{AlertConfig, Alerts};
use portal::{Attempt, AttemptFailure, Portal, PostSubmitFailure};
use session::{Health, MasterSession, SessionConfig};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Attempts running at once.
    pub workers: usize,
    /// Attempts a job may use before it ends `failed_login_form`.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each later one.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub backoff_max: Duration,
    /// How often the master's login is checked; `None` turns it off.
    pub heartbeat: Option<Duration>,
    pub session: SessionConfig,
    pub alerts: AlertConfig,
    /// At shutdown, how long attempts past `submitted` may take to finish.
    pub drain: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 3,
            max_attempts: 3,
            backoff: Duration::from_secs(60),
            backoff_max: Duration::from_secs(3600),
            heartbeat: Some(Duration::from_secs(60)),
            session: SessionConfig::default(),
            alerts: AlertConfig::default(),
            drain: Duration::from_secs(60),
        }
    }
}

impl EngineConfig {
    /// When attempt `attempt`'s successor may start, counted from `now`.
    pub fn retry_at(&self, now: Millis, attempt: u32) -> Millis {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        let wait = self.backoff.saturating_mul(factor).min(self.backoff_max);
        now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2)
    }
}

/// What intake did with a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intake {
    /// New, and journaled.
    Accepted { seq: u64 },
    /// The same id with the same document was already here.
    Existing,
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("job {0} already exists with a different document")]
    Conflict(JobId),
    #[error("the engine has stopped taking work: {0}")]
    Halted(String),
    #[error(transparent)]
    Record(#[from] RecordError),
}

struct Shared<P: Portal> {
    recorder: Arc<Recorder>,
    portal: Arc<P>,
    session: MasterSession<P>,
    config: EngineConfig,
    /// Jobs a worker is running now.
    claimed: Mutex<HashSet<JobId>>,
    /// Rung when a job arrives or a slot frees up.
    wake: Notify,
    /// Stops new attempts; attempts past `submitted` still finish.
    stop: CancellationToken,
    /// Why the engine stopped on its own (e.g. the journal cannot write).
    halted: Mutex<Option<String>>,
}

/// The running engine. Cheap to clone; every clone is the same engine.
pub struct Engine<P: Portal> {
    shared: Arc<Shared<P>>,
}

impl<P: Portal> Clone for Engine<P> {
    fn clone(&self) -> Self {
        Engine {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<P: Portal> Engine<P> {
    pub fn new(recorder: Arc<Recorder>, portal: Arc<P>, config: EngineConfig) -> Engine<P> {
        let stop = CancellationToken::new();
        let alerts = Alerts::new(config.alerts.clone());
        let session = MasterSession::new(
            Arc::clone(&portal),
            Arc::clone(&recorder),
            alerts,
            config.session.clone(),
            stop.clone(),
        );
        Engine {
            shared: Arc::new(Shared {
                recorder,
                portal,
                session,
                config,
                claimed: Mutex::default(),
                wake: Notify::new(),
                stop,
                halted: Mutex::new(None),
            }),
        }
    }

    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.shared.recorder
    }

    pub fn session(&self) -> &MasterSession<P> {
        &self.shared.session
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// The portal the engine acts through.
    pub fn portal(&self) -> &Arc<P> {
        &self.shared.portal
    }

    /// Why the engine stopped by itself, if it did.
    pub fn halted(&self) -> Option<String> {
        self.shared.halted.lock().ok().and_then(|h| h.clone())
    }

    /// Takes a job. Idempotent on `id`: the same document again is
    /// `Existing`, a different one is a conflict. The job is on disk before
    /// this returns.
    pub fn intake(&self, id: &JobId, document: &str) -> Result<Intake, IntakeError> {
        if let Some(why) = self.halted() {
            return Err(IntakeError::Halted(why));
        }
        if let Some(existing) = self.shared.recorder.book().job(id) {
            return if same_document(&existing.document, document) {
                Ok(Intake::Existing)
            } else {
                Err(IntakeError::Conflict(id.clone()))
            };
        }
        let event = JobEvent::Accepted {
            document: document.to_owned(),
            max_attempts: self.shared.config.max_attempts,
        };
        let seq = match self.shared.recorder.job_event(id, event, now_millis()) {
            Ok(seq) => seq,
            // Two intakes of one id raced; the loser sees the winner's job.
            Err(RecordError::Refused { .. }) => return self.intake(id, document),
            // A journal that cannot take a new job cannot take the events
            // of the running ones either (a full disk, say): stop taking
            // work now rather than at the next attempt's `submitted`.
            Err(e) => {
                self.on_record_error(&e);
                return Err(e.into());
            }
        };
        self.shared.wake.notify_waiters();
        Ok(Intake::Accepted { seq })
    }

    /// Asks the engine to stop: no new attempts; those past `submitted`
    /// finish (up to the drain time); the rest are journaled interrupted.
    pub fn shutdown(&self) {
        self.shared.stop.cancel();
        self.shared.wake.notify_waiters();
    }

    /// Settles what a previous run left, logs the master in, and runs the
    /// workers and the heartbeat until [`Engine::shutdown`].
    pub async fn run(&self) {
        let shared = &self.shared;
        // A damaged event may be a job's `submitted`: acting on the rest of
        // its history could raise the proposal again. Nothing starts until a
        // person has looked (`formwright replay` names the sequences).
        let damaged = shared.recorder.damaged();
        if !damaged.is_empty() {
            let seqs: Vec<String> = damaged.iter().map(u64::to_string).collect();
            self.halt(format!(
                "the journal is damaged at sequence {}; run `formwright replay` on it and \
                 repair it before restarting (no job was started)",
                seqs.join(", ")
            ));
            return;
        }
        let now = now_millis();
        match shared.recorder.settle_after_restart(now, now) {
            Ok(changed) => {
                for (id, status) in changed {
                    warn!(job = %id, status = status.as_str(), "settled after restart");
                }
            }
            Err(e) => {
                self.halt(format!("cannot settle the journal after restart: {e}"));
                return;
            }
        }

        let mut tasks = tokio::task::JoinSet::new();
        for slot in 0..shared.config.workers.max(1) {
            let engine = self.clone();
            tasks.spawn(async move { engine.worker(slot).await });
        }
        if let Some(every) = shared.config.heartbeat {
            let engine = self.clone();
            tasks.spawn(async move { engine.heartbeat(every).await });
        }
        tokio::select! {
            _ = shared.session.start() => {}
            _ = shared.stop.cancelled() => {}
        }
        shared.stop.cancelled().await;

        // Attempts past `submitted` may finish, within the drain time; the
        // others were cancelled and journal themselves as interrupted.
        let drained = tokio::time::timeout(shared.config.drain, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            self.abandon_claimed();
        }
        shared.portal.shutdown().await;
        info!("engine stopped");
    }

    /// After the drain time ran out: journals each attempt still running,
    /// so none is left open. One past `submitted` ends
    /// `failed_post_submission` for a person to check on the portal.
    fn abandon_claimed(&self) {
        let shared = &self.shared;
        let claimed: Vec<JobId> = match shared.claimed.lock() {
            Ok(mut c) => c.drain().collect(),
            Err(_) => return,
        };
        for id in claimed {
            let status = shared.recorder.book().job(&id).map(|j| j.status());
            let event = match status {
                Some(Status::Submitted) => JobEvent::PostSubmissionFailed {
                    stage: "shutdown".into(),
                    error: "the daemon stopped before the portal's answer was read (drain \
                            time ran out); check the portal before raising this proposal again"
                        .into(),
                    proposal_no: None,
                    artifacts: Vec::new(),
                },
                Some(Status::Filling) => {
                    let attempt = shared
                        .recorder
                        .book()
                        .job(&id)
                        .map_or(1, |j| j.machine.attempts());
                    let now = now_millis();
                    JobEvent::AttemptFailed {
                        attempt,
                        kind: FailureKind::Interrupted,
                        stage: "shutdown".into(),
                        error: "the daemon stopped during this attempt".into(),
                        retry_at: shared.config.retry_at(now, attempt),
                        artifacts: Vec::new(),
                    }
                }
                _ => continue,
            };
            error!(job = %id, event = event.name(), "attempt abandoned at shutdown");
            if let Err(e) = shared.recorder.job_event(&id, event, now_millis()) {
                error!(job = %id, error = %e, "could not journal an abandoned attempt");
            }
        }
    }

    fn halt(&self, why: String) {
        error!(reason = %why, "engine halted: no new work is taken");
        if let Ok(mut h) = self.shared.halted.lock() {
            h.get_or_insert(why);
        }
        self.shutdown();
    }

    async fn heartbeat(&self, every: Duration) {
        let shared = &self.shared;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shared.stop.cancelled() => return,
            }
            let Health::Up(generation) = shared.session.health() else {
                continue;
            };
            let alive = shared.portal.master_logged_in().await;
            if !matches!(alive, Ok(true)) {
                if let Err(e) = &alive {
                    warn!(error = %e, "heartbeat could not check the master");
                } else {
                    warn!("heartbeat found the master session expired");
                }
                shared.session.recover(generation, Trigger::Heartbeat).await;
            }
        }
    }

    async fn worker(&self, slot: usize) {
        let shared = &self.shared;
        loop {
            let Some(generation) = shared.session.wait_ready().await else {
                return;
            };
            // Register interest before looking, so an intake between the
            // look and the wait still wakes this worker.
            let woken = shared.wake.notified();
            match self.claim_next() {
                Some((id, attempt, document)) => {
                    let span = info_span!("job", job = %id, attempt, slot);
                    self.attempt(&id, attempt, &document, generation)
                        .instrument(span)
                        .await;
                    if let Ok(mut claimed) = shared.claimed.lock() {
                        claimed.remove(&id);
                    }
                }
                None => {
                    let wait = self.next_due_in().unwrap_or(Duration::from_millis(500));
                    tokio::select! {
                        _ = woken => {}
                        _ = tokio::time::sleep(wait.min(Duration::from_millis(500))) => {}
                        _ = shared.stop.cancelled() => return,
                    }
                }
            }
            if shared.stop.is_cancelled() {
                return;
            }
        }
    }

    /// How long until the earliest pending job may start.
    fn next_due_in(&self) -> Option<Duration> {
        let now = now_millis();
        let book = self.shared.recorder.book();
        book.open_jobs()
            .filter_map(|j| j.machine.not_before())
            .min()
            .map(|t| Duration::from_millis((t - now).max(0).unsigned_abs()))
    }

    /// Picks the oldest pending job that is due, marks it claimed and
    /// journals its `attempt_started`.
    fn claim_next(&self) -> Option<(JobId, u32, String)> {
        let shared = &self.shared;
        let now = now_millis();
        let (id, attempt, document) = {
            let mut claimed = shared.claimed.lock().ok()?;
            let book = shared.recorder.book();
            let job = book.open_jobs().find(|j| {
                j.status() == Status::Pending
                    && j.machine.not_before().is_some_and(|t| t <= now)
                    && !claimed.contains(&j.id)
            })?;
            claimed.insert(job.id.clone());
            (
                job.id.clone(),
                job.machine.attempts() + 1,
                job.document.clone(),
            )
        };
        match shared
            .recorder
            .job_event(&id, JobEvent::AttemptStarted { attempt }, now)
        {
            Ok(_) => Some((id, attempt, document)),
            Err(e) => {
                if let Ok(mut claimed) = shared.claimed.lock() {
                    claimed.remove(&id);
                }
                self.on_record_error(&e);
                None
            }
        }
    }

    fn on_record_error(&self, e: &RecordError) {
        match e {
            RecordError::Journal(j) => self.halt(format!("the journal cannot be written: {j}")),
            RecordError::Refused { .. } => error!(error = %e, "engine bug: event refused"),
        }
    }

    /// One attempt, from clone to outcome. Runs the portal work in its own
    /// task so a panic there is an attempt failure, not a dead worker.
    async fn attempt(&self, id: &JobId, attempt: u32, document: &str, generation: u64) {
        let engine = self.clone();
        let (job, doc) = (id.clone(), document.to_owned());
        let work = tokio::spawn(
            async move { engine.attempt_inner(&job, attempt, &doc).await }.in_current_span(),
        );
        let outcome = match work.await {
            Ok(outcome) => outcome,
            Err(join) => {
                error!(error = %join, "attempt task panicked");
                let submitted = self
                    .shared
                    .recorder
                    .book()
                    .job(id)
                    .is_some_and(|j| j.status() == Status::Submitted);
                if submitted {
                    Outcome::Post(PostSubmitFailure {
                        stage: "worker".into(),
                        error: format!("the attempt panicked after submitted: {join}"),
                        proposal_no: None,
                    })
                } else {
                    Outcome::Failed(
                        AttemptFailure::new(
                            FailureKind::Other,
                            "worker",
                            format!("the attempt panicked: {join}"),
                        ),
                        Vec::new(),
                    )
                }
            }
        };
        self.conclude(id, attempt, generation, outcome).await;
    }

    async fn attempt_inner(&self, id: &JobId, attempt: u32, document: &str) -> Outcome {
        let shared = &self.shared;
        info!("attempt started: opening a browser with the master's login");
        let opened = tokio::select! {
            r = shared.portal.open_attempt(id, attempt, document) => r,
            _ = shared.stop.cancelled() => return Outcome::interrupted(),
        };
        let mut browser = match opened {
            Ok(b) => b,
            Err(f) => {
                let evidence = shared.portal.evidence_missing(id, attempt, &f).await;
                return Outcome::Failed(f, evidence);
            }
        };

        let filled = tokio::select! {
            r = browser.fill() => r,
            _ = shared.stop.cancelled() => Err(interrupted()),
        };
        if let Err(f) = filled {
            let evidence = browser.evidence(&f.stage).await;
            browser.close().await;
            return Outcome::Failed(f, evidence);
        }

        // The promise: `submitted` is on disk before the submit step.
        if let Err(e) = shared
            .recorder
            .job_event(id, JobEvent::Submitted { attempt }, now_millis())
        {
            browser.close().await;
            self.on_record_error(&e);
            return Outcome::Unrecorded;
        }
        info!("submitted is durable; running the submit step");

        // Past this point nothing is cancelled: shutdown waits (bounded) for
        // the outcome, and a crash leaves the job for manual review.
        let result = match browser.click_submit().await {
            Ok(()) => browser.finish().await,
            Err(f) => Err(f),
        };
        let outcome = match result {
            Ok(proposal_no) => Outcome::Completed(proposal_no),
            Err(f) => {
                let evidence = browser.evidence(&f.stage).await;
                Outcome::PostWithEvidence(f, evidence)
            }
        };
        browser.close().await;
        outcome
    }

    async fn conclude(&self, id: &JobId, attempt: u32, generation: u64, outcome: Outcome) {
        let shared = &self.shared;
        let now = now_millis();
        let event = match outcome {
            Outcome::Unrecorded => return,
            Outcome::Completed(proposal_no) => {
                info!(proposal = %proposal_no, "completed");
                JobEvent::Completed { proposal_no }
            }
            Outcome::Post(f) => post_event(f, Vec::new()),
            Outcome::PostWithEvidence(f, artifacts) => post_event(f, artifacts),
            Outcome::Failed(f, artifacts) => {
                let retry_at = shared.config.retry_at(now, attempt);
                let last = attempt >= shared.config.max_attempts;
                warn!(
                    kind = f.kind.as_str(),
                    stage = %f.stage,
                    error = %f.error,
                    final_attempt = last,
                    "attempt failed before submit"
                );
                let expired = f.is_session_expired();
                let event = JobEvent::AttemptFailed {
                    attempt,
                    kind: f.kind,
                    stage: f.stage,
                    error: f.error,
                    retry_at,
                    artifacts,
                };
                if let Err(e) = shared.recorder.job_event(id, event, now) {
                    self.on_record_error(&e);
                    return;
                }
                if expired {
                    shared
                        .session
                        .recover(generation, Trigger::Job(id.clone()))
                        .await;
                }
                shared.wake.notify_waiters();
                return;
            }
        };
        if let JobEvent::PostSubmissionFailed { stage, error, .. } = &event {
            error!(stage = %stage, error = %error, "failed after submission; not retried");
        }
        if let Err(e) = shared.recorder.job_event(id, event, now) {
            self.on_record_error(&e);
        }
    }

    /// Waits until every job accepted so far has ended, or `timeout`.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.shared.recorder.book().open_jobs().next().is_none() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline || self.shared.stop.is_cancelled() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether two job documents say the same thing: equal as JSON values, so
/// a client that resends a job with other spacing or key order is not
/// refused.
fn same_document(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

enum Outcome {
    Completed(String),
    Failed(AttemptFailure, Vec<String>),
    Post(PostSubmitFailure),
    PostWithEvidence(PostSubmitFailure, Vec<String>),
    /// The journal refused to write; the engine is halting.
    Unrecorded,
}

impl Outcome {
    fn interrupted() -> Outcome {
        Outcome::Failed(interrupted(), Vec::new())
    }
}

fn interrupted() -> AttemptFailure {
    AttemptFailure::new(
        FailureKind::Interrupted,
        "shutdown",
        "the daemon stopped during this attempt",
    )
}

fn post_event(f: PostSubmitFailure, artifacts: Vec<String>) -> JobEvent {
    JobEvent::PostSubmissionFailed {
        stage: f.stage,
        error: f.error,
        proposal_no: f.proposal_no,
        artifacts,
    }
}
