//! A scripted portal for the engine and API tests that need no browser: each job's
//! attempts follow a plan, the master session can be expired or made to
//! refuse logins, and every save click is counted like the portal's ledger.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use formwright::engine::portal::{
    Attempt, AttemptFailure, LoginFailure, Portal, PostSubmitFailure,
};
use formwright::journal::{FailureKind, JobId, Level};

/// What one attempt does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Plan {
    Complete,
    /// Fails while filling, before the click.
    FailFill(FailureKind),
    /// The click happens, then the page breaks.
    FailAfterClick,
    /// The attempt's code panics while filling.
    PanicInFill,
    /// The save click takes this long.
    SlowClick(Duration),
    /// The save click never answers.
    HangOnClick,
}

#[derive(Default)]
pub struct State {
    /// Plans by job id, one per attempt in order; the last repeats.
    plans: Mutex<HashMap<String, Vec<Plan>>>,
    /// Whether the portal has logged the master out.
    expired: AtomicBool,
    /// Logins refused while true.
    refuse_logins: AtomicBool,
    pub recover_calls: Mutex<Vec<Level>>,
    pub logins: AtomicUsize,
    /// Job ids, once per save click.
    pub clicks: Mutex<Vec<String>>,
    pub open_attempts: AtomicUsize,
    pub closed: AtomicUsize,
    /// How long a login takes.
    pub login_delay: Mutex<Duration>,
    /// How long filling takes.
    pub fill_delay: Mutex<Duration>,
}

#[allow(dead_code)]
impl State {
    pub fn plan(&self, job: &str, plans: Vec<Plan>) {
        self.plans.lock().unwrap().insert(job.to_owned(), plans);
    }

    pub fn expire(&self) {
        self.expired.store(true, Ordering::SeqCst);
    }

    pub fn is_expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }

    pub fn refuse_logins(&self, refuse: bool) {
        self.refuse_logins.store(refuse, Ordering::SeqCst);
    }

    pub fn clicks_for(&self, job: &str) -> usize {
        self.clicks
            .lock()
            .unwrap()
            .iter()
            .filter(|j| *j == job)
            .count()
    }

    async fn login(&self) -> Result<(), LoginFailure> {
        let delay = *self.login_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        if self.refuse_logins.load(Ordering::SeqCst) {
            return Err(LoginFailure("Invalid username or password".into()));
        }
        self.logins.fetch_add(1, Ordering::SeqCst);
        self.expired.store(false, Ordering::SeqCst);
        Ok(())
    }
}

/// The portal handle; clones share one state.
#[derive(Clone, Default)]
pub struct Scripted(Arc<State>);

impl Deref for Scripted {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0
    }
}

pub struct ScriptedAttempt {
    job: String,
    plan: Plan,
    portal: Scripted,
}

impl Portal for Scripted {
    type Attempt = ScriptedAttempt;

    async fn start_master(&self) -> Result<(), LoginFailure> {
        self.login().await
    }

    async fn recover(&self, level: Level) -> Result<(), LoginFailure> {
        self.recover_calls.lock().unwrap().push(level);
        self.login().await
    }

    fn restored_backup(&self) -> bool {
        true
    }

    async fn master_logged_in(&self) -> Result<bool, LoginFailure> {
        Ok(!self.is_expired())
    }

    async fn open_attempt(
        &self,
        job: &JobId,
        attempt: u32,
        _document: &str,
    ) -> Result<ScriptedAttempt, AttemptFailure> {
        self.open_attempts.fetch_add(1, Ordering::SeqCst);
        if self.is_expired() {
            return Err(AttemptFailure::new(
                FailureKind::SessionExpired,
                "clone check",
                "the cloned session was expired",
            ));
        }
        let plans = self.plans.lock().unwrap();
        let list = plans.get(&job.0).cloned().unwrap_or_default();
        let index = (attempt as usize).saturating_sub(1);
        let plan = list
            .get(index)
            .or(list.last())
            .copied()
            .unwrap_or(Plan::Complete);
        Ok(ScriptedAttempt {
            job: job.0.clone(),
            plan,
            portal: self.clone(),
        })
    }

    async fn shutdown(&self) {}
}

impl Attempt for ScriptedAttempt {
    async fn fill(&mut self) -> Result<(), AttemptFailure> {
        let delay = *self.portal.fill_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        if self.portal.is_expired() {
            return Err(AttemptFailure::new(
                FailureKind::SessionExpired,
                "type first name",
                "the login form came back",
            ));
        }
        match self.plan {
            Plan::FailFill(kind) => Err(AttemptFailure::new(
                kind,
                "type engine number",
                "#txtEngineNo not found within 15000 ms",
            )),
            Plan::PanicInFill => panic!("scripted panic while filling"),
            _ => Ok(()),
        }
    }

    async fn click_submit(&mut self) -> Result<(), PostSubmitFailure> {
        self.portal.clicks.lock().unwrap().push(self.job.clone());
        match self.plan {
            Plan::HangOnClick => std::future::pending::<()>().await,
            Plan::SlowClick(pause) => tokio::time::sleep(pause).await,
            _ => {}
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<String, PostSubmitFailure> {
        match self.plan {
            Plan::FailAfterClick => Err(PostSubmitFailure {
                stage: "proposal number".into(),
                error: "HTTP 500 after save".into(),
                proposal_no: None,
            }),
            _ => Ok(format!("R-{}", self.job)),
        }
    }

    async fn evidence(&mut self, _stage: &str) -> Vec<String> {
        vec![format!("{}/evidence.png", self.job)]
    }

    async fn close(self) {
        self.portal.closed.fetch_add(1, Ordering::SeqCst);
    }
}

pub fn portal() -> Scripted {
    Scripted::default()
}
