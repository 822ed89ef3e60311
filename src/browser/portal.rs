//! The engine's [`Portal`] on real browsers: one chromedriver, one master
//! browser holding the login, and a fresh copy of that login per attempt,
//! in a new browser (`fresh`) or in a warm one from the pool (`pooled`,
//! see [`super::pool`]).
//!
//! Every attempt's steps are timed into [`StepTimes`]: `clone`,
//! `navigate`, `check`, then each form step by name.
//!
//! The master sits behind a read-write lock: clones read its cookies side by
//! side, while a recovery or the heartbeat (which navigate the master) take
//! it alone. The recovery levels map onto the browser like this:
//!
//! - soft: log in again in the master browser as it is;
//! - hard: end the master's WebDriver session, open a new one on the same
//!   profile folder (restarting chromedriver too if it died), log in;
//! - nuclear: move the profile folder aside as `<folder>.backup`, open a
//!   browser on an empty profile, log in. On success the backup is deleted;
//!   on failure the fresh folder is deleted and the backup put back.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::RwLock;
use tracing::{debug, info, warn};

use super::pool::{CloneSettings, CloneStrategy, Pool, PoolStats};
use super::{BrowserConfig, BrowserError, Credentials, Driver, JobBrowser, Master, Outputs};
use super::{SessionCheck, StepError, StepFailure, StepTiming};
use crate::artifacts::Spool;
use crate::captcha::CaptchaSolver;
use crate::engine::portal::{Attempt, AttemptFailure, LoginFailure, Portal, PostSubmitFailure};
use crate::journal::{FailureKind, JobId, Level};
use crate::profile::{FieldValues, Profile};
use crate::timing::{StepTimes, CHECK, CLONE, NAVIGATE, OPEN_PHASE, READY};

/// Everything the live portal needs to know.
pub struct LiveSettings {
    pub browser: BrowserConfig,
    pub profile: Profile,
    /// The portal's address; overrides the profile's `base_url`.
    pub base_url: String,
    pub credentials: Credentials,
    /// Where the evidence of failed attempts is written first.
    pub spool: Spool,
    /// Fresh or pooled job browsers, and the pool's size.
    pub clone: CloneSettings,
}

pub struct LivePortal {
    settings: Arc<LiveSettings>,
    solver: CaptchaSolver,
    /// Shared with the pool, which starts browsers in the background.
    driver: Arc<RwLock<Option<Driver>>>,
    master: RwLock<Option<Master>>,
    /// The warm browsers (`pooled`); `None` for `fresh`.
    pool: Option<Arc<Pool>>,
    times: Arc<StepTimes>,
    restored_backup: AtomicBool,
    /// Master browsers started so far: a recovery opens at most one.
    masters_opened: AtomicUsize,
    /// This process's claim on the work folder (local browsers only).
    _work_dir_claim: Option<std::fs::File>,
}

impl LivePortal {
    pub fn new(settings: LiveSettings) -> Result<LivePortal, String> {
        let solver = match &settings.profile.captcha {
            Some(config) => CaptchaSolver::from_config(config)?,
            None => CaptchaSolver::new(crate::captcha::SolverKind::Element {
                selector: String::new(),
            }),
        };
        let claim = match settings.browser.webdriver_url {
            None => Some(super::driver::claim_work_dir(&settings.browser.work_dir)?),
            Some(_) => None,
        };
        info!(strategy = %settings.clone.strategy, "job browsers");
        let driver = Arc::new(RwLock::new(None));
        let times = Arc::new(StepTimes::new());
        let pool = (settings.clone.strategy == CloneStrategy::Pooled).then(|| {
            Pool::new(
                Arc::clone(&driver),
                settings.profile.clone(),
                settings.base_url.clone(),
                settings.browser.pool_dir(),
                &settings.clone,
                Arc::clone(&times),
            )
        });
        Ok(LivePortal {
            _work_dir_claim: claim,
            settings: Arc::new(settings),
            solver,
            driver,
            master: RwLock::new(None),
            pool,
            times,
            restored_backup: AtomicBool::new(false),
            masters_opened: AtomicUsize::new(0),
        })
    }

    pub fn settings(&self) -> &LiveSettings {
        &self.settings
    }

    /// The master browser's process id, for tests that kill it.
    pub async fn master_pid(&self) -> Option<u32> {
        self.master
            .read()
            .await
            .as_ref()
            .and_then(Master::browser_pid)
    }

    /// Whether the master is logged in and, for `pooled`, every warm
    /// browser has started: an attempt from here on waits for no start-up.
    pub async fn is_warm(&self) -> bool {
        if self.master.read().await.is_none() {
            return false;
        }
        match &self.pool {
            Some(pool) => pool.stats().started >= pool.size(),
            None => true,
        }
    }

    /// The timed spans of every attempt so far.
    pub fn step_times(&self) -> &Arc<StepTimes> {
        &self.times
    }

    /// The clone strategy in use.
    pub fn clone_strategy(&self) -> CloneStrategy {
        self.settings.clone.strategy
    }

    /// What the warm pool has done (`pooled` only).
    pub fn pool_stats(&self) -> Option<PoolStats> {
        self.pool.as_ref().map(|p| p.stats())
    }

    /// Puts a logged-in master in place and, for `pooled`, starts the warm
    /// browsers with its user agent (once).
    async fn install_master(&self, master: Master) {
        if let Some(pool) = &self.pool {
            pool.set_user_agent(master.user_agent());
            // The login parked browsers preload; each attempt updates it.
            match master.cookies().await {
                Ok(cookies) => pool.set_login(&cookies),
                Err(e) => debug!(error = %e, "the master's cookies not read for the pool"),
            }
            pool.warm_up();
        }
        *self.master.write().await = Some(master);
    }

    /// A fresh clone of the master's login in a new browser.
    async fn clone_fresh(&self, job: &JobId, attempt: u32) -> Result<JobBrowser, CloneFailure> {
        let settings = &self.settings;
        let job_dir = settings.browser.job_dir(&job.0, attempt);
        let driver = self.driver.read().await;
        let master = self.master.read().await;
        let (Some(driver), Some(master)) = (driver.as_ref(), master.as_ref()) else {
            return Err(CloneFailure::NoMaster);
        };
        JobBrowser::clone_from(
            driver,
            master,
            &settings.profile,
            &settings.base_url,
            job_dir,
        )
        .await
        .map_err(CloneFailure::Browser)
    }

    /// A warm browser from the pool, wiped, with the master's current
    /// cookies.
    async fn clone_pooled(&self, pool: &Arc<Pool>) -> Result<JobBrowser, CloneFailure> {
        // Taken before any lock: it may wait for a browser starting in the
        // background, which needs the driver's lock.
        let taken = pool.take().await;
        let driver = self.driver.read().await;
        let cookies = {
            let master = self.master.read().await;
            match (driver.as_ref(), master.as_ref()) {
                (Some(_), Some(master)) => {
                    pool.set_user_agent(master.user_agent());
                    master.cookies().await
                }
                _ => {
                    drop(driver);
                    if let Some(browser) = taken {
                        pool.give_back(browser, true).await;
                    }
                    return Err(CloneFailure::NoMaster);
                }
            }
        };
        let cookies = match cookies {
            Ok(c) => c,
            Err(e) => {
                drop(driver);
                if let Some(browser) = taken {
                    pool.give_back(browser, true).await;
                }
                return Err(CloneFailure::Browser(e));
            }
        };
        let Some(driver) = driver.as_ref() else {
            return Err(CloneFailure::NoMaster);
        };
        pool.ready(taken, driver, cookies)
            .await
            .map_err(CloneFailure::Browser)
    }

    /// Ends an attempt's browser: back to the pool (which parks it when
    /// `clean`, else replaces it), or closed.
    async fn release(&self, browser: JobBrowser, clean: bool) {
        release(self.pool.as_ref(), browser, clean).await;
    }

    /// How many master browsers have been started, first login included.
    pub fn masters_opened(&self) -> usize {
        self.masters_opened.load(Ordering::SeqCst)
    }

    /// Whether the master browser answers WebDriver at all.
    async fn master_answers(&self) -> bool {
        let master = self.master.read().await;
        let Some(client) = master.as_ref().and_then(|m| m.client().ok()) else {
            return false;
        };
        let probe = client.current_url();
        matches!(
            tokio::time::timeout(Duration::from_secs(3), probe).await,
            Ok(Ok(_))
        )
    }

    /// chromedriver's process id (local mode).
    pub async fn driver_pid(&self) -> Option<u32> {
        self.driver.read().await.as_ref().and_then(Driver::pid)
    }

    /// Starts chromedriver unless one is running (or a remote URL is set).
    async fn ensure_driver(&self, restart: bool) -> Result<(), LoginFailure> {
        let mut driver = self.driver.write().await;
        if restart {
            if let Some(mut old) = driver.take() {
                old.kill().await;
            }
        }
        if driver.is_none() {
            let started = Driver::start(&self.settings.browser)
                .await
                .map_err(|e| LoginFailure(format!("starting chromedriver: {e}")))?;
            *driver = Some(started);
        }
        Ok(())
    }

    /// Opens a master browser on `dir` and logs it in.
    async fn open_and_login(&self, dir: &Path) -> Result<Master, LoginFailure> {
        self.masters_opened.fetch_add(1, Ordering::SeqCst);
        let opened = {
            let driver = self.driver.read().await;
            let driver = driver
                .as_ref()
                .ok_or_else(|| LoginFailure("chromedriver is not running".into()))?;
            Master::open(driver, &self.settings.profile, &self.settings.base_url, dir).await
        };
        let mut master = match opened {
            Ok(m) => m,
            // chromedriver itself may be the one that died: start it again,
            // unless it is a remote one we do not own.
            Err(e) if self.settings.browser.webdriver_url.is_none() => {
                warn!(error = %e, "opening the master failed; restarting chromedriver");
                self.ensure_driver(true).await?;
                let driver = self.driver.read().await;
                let driver = driver
                    .as_ref()
                    .ok_or_else(|| LoginFailure("chromedriver is not running".into()))?;
                Master::open(driver, &self.settings.profile, &self.settings.base_url, dir)
                    .await
                    .map_err(|e| LoginFailure(format!("opening the master browser: {e}")))?
            }
            Err(e) => return Err(LoginFailure(format!("opening the master browser: {e}"))),
        };
        match master.login(&self.settings.credentials, &self.solver).await {
            Ok(()) => Ok(master),
            Err(e) => {
                let _ = master.close().await;
                Err(LoginFailure(e.to_string()))
            }
        }
    }

    async fn close_master(&self) {
        if let Some(old) = self.master.write().await.take() {
            if let Err(e) = old.close().await {
                debug!(error = %e, "closing the old master browser");
            }
        }
    }

    async fn nuclear(&self) -> Result<(), LoginFailure> {
        self.close_master().await;
        let dir = self.settings.browser.master_profile_dir();
        let backup = backup_path(&dir);
        let _ = std::fs::remove_dir_all(&backup);
        let had_profile = dir.exists();
        if had_profile {
            std::fs::rename(&dir, &backup)
                .map_err(|e| LoginFailure(format!("moving the profile aside: {e}")))?;
            info!(backup = %backup.display(), "master profile moved aside");
        }
        match self.open_and_login(&dir).await {
            Ok(master) => {
                self.install_master(master).await;
                if had_profile {
                    if let Err(e) = std::fs::remove_dir_all(&backup) {
                        warn!(error = %e, "could not delete the old profile backup");
                    }
                }
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                if had_profile {
                    std::fs::rename(&backup, &dir).map_err(|re| {
                        LoginFailure(format!("{e}; and putting the backup back failed: {re}"))
                    })?;
                    self.restored_backup.store(true, Ordering::SeqCst);
                    warn!("nuclear try failed; the old profile is back in place");
                }
                Err(e)
            }
        }
    }
}

/// Where nuclear recovery keeps the old profile during its try.
pub fn backup_path(profile_dir: &Path) -> PathBuf {
    let mut name = profile_dir.as_os_str().to_owned();
    name.push(".backup");
    PathBuf::from(name)
}

impl Portal for LivePortal {
    type Attempt = LiveAttempt;

    async fn start_master(&self) -> Result<(), LoginFailure> {
        // A run killed outright leaves its browsers running (they hold the
        // master profile's lock) and its job folders behind. No attempt runs
        // before the first login, so every job folder now is a leftover.
        if self.settings.browser.webdriver_url.is_none() {
            let work_dir = self.settings.browser.work_dir.clone();
            let ended =
                tokio::task::spawn_blocking(move || super::driver::end_leftovers(&work_dir))
                    .await
                    .unwrap_or(0);
            if ended > 0 {
                warn!(
                    processes = ended,
                    "ended browsers a previous run left running"
                );
            }
        }
        let jobs = self.settings.browser.jobs_dir();
        match super::clone::sweep_job_folders(&jobs) {
            Ok(0) => {}
            Ok(n) => warn!(folders = n, "deleted job folders a previous run left"),
            Err(e) => warn!(error = %e, dir = %jobs.display(), "could not sweep old job folders"),
        }
        self.ensure_driver(false).await?;
        self.close_master().await;
        let dir = self.settings.browser.master_profile_dir();
        let master = self.open_and_login(&dir).await?;
        self.install_master(master).await;
        Ok(())
    }

    async fn recover(&self, level: Level) -> Result<(), LoginFailure> {
        self.restored_backup.store(false, Ordering::SeqCst);
        match level {
            Level::Soft => {
                let mut master = self.master.write().await;
                let Some(m) = master.as_mut() else {
                    return Err(LoginFailure("there is no master browser to log in".into()));
                };
                m.login(&self.settings.credentials, &self.solver)
                    .await
                    .map_err(|e| LoginFailure(e.to_string()))
            }
            Level::Hard => {
                self.close_master().await;
                self.ensure_driver(false).await?;
                let dir = self.settings.browser.master_profile_dir();
                let master = self.open_and_login(&dir).await?;
                self.install_master(master).await;
                Ok(())
            }
            Level::Nuclear => {
                self.ensure_driver(false).await?;
                self.nuclear().await
            }
        }
    }

    fn restored_backup(&self) -> bool {
        self.restored_backup.load(Ordering::SeqCst)
    }

    async fn master_logged_in(&self) -> Result<bool, LoginFailure> {
        let mut master = self.master.write().await;
        let Some(m) = master.as_mut() else {
            return Ok(false);
        };
        m.is_logged_in()
            .await
            .map_err(|e| LoginFailure(format!("checking the master: {e}")))
    }

    async fn open_attempt(
        &self,
        job: &JobId,
        attempt: u32,
        document: &str,
    ) -> Result<LiveAttempt, AttemptFailure> {
        let settings = &self.settings;
        let doc: serde_json::Value = serde_json::from_str(document).map_err(|e| {
            AttemptFailure::new(FailureKind::BadInput, "fields", format!("document: {e}"))
        })?;
        let fields = settings
            .profile
            .extract(&doc)
            .map_err(|e| AttemptFailure::new(FailureKind::BadInput, "fields", e.to_string()))?;

        let started = Instant::now();
        let cloned = match &self.pool {
            Some(pool) => self.clone_pooled(pool).await,
            None => self.clone_fresh(job, attempt).await,
        };
        let mut browser = match cloned {
            Ok(b) => b,
            Err(CloneFailure::NoMaster) => {
                return Err(AttemptFailure::new(
                    FailureKind::SessionExpired,
                    "clone",
                    "there is no logged-in master browser to copy",
                ))
            }
            // A clone reads the master's cookies: a dead master fails every
            // clone until a recovery replaces it.
            Err(CloneFailure::Browser(e)) if !self.master_answers().await => {
                return Err(AttemptFailure::new(
                    FailureKind::SessionExpired,
                    "clone",
                    format!("the master browser does not answer ({e})"),
                ))
            }
            Err(CloneFailure::Browser(e)) => return Err(browser_failure("clone", &e)),
        };
        self.times.record(CLONE, OPEN_PHASE, started.elapsed());

        let check = browser.check_session().await;
        if let Ok(check) = &check {
            self.times.record(NAVIGATE, OPEN_PHASE, check.navigated());
            self.times
                .record(CHECK, OPEN_PHASE, check.elapsed() - check.navigated());
            self.times.record(READY, OPEN_PHASE, started.elapsed());
        }
        match check {
            Ok(SessionCheck::Valid { elapsed, .. }) => {
                debug!(ms = elapsed.as_millis() as u64, "clone is logged in");
                if let (Some(pool), true) = (&self.pool, browser.confirmed_preload()) {
                    pool.note_preloaded();
                }
            }
            Ok(SessionCheck::Expired {
                elapsed, reason, ..
            }) => {
                self.release(browser, false).await;
                return Err(AttemptFailure::new(
                    FailureKind::SessionExpired,
                    "clone check",
                    format!(
                        "the cloned session was expired ({reason}; decided in {} ms)",
                        elapsed.as_millis()
                    ),
                ));
            }
            Err(e) => {
                self.release(browser, false).await;
                return Err(browser_failure("clone check", &e));
            }
        }

        Ok(LiveAttempt {
            browser: Some(browser),
            pool: self.pool.clone(),
            clean: true,
            times: Arc::clone(&self.times),
            settings: Arc::clone(&self.settings),
            fields,
            outputs: Outputs::new(),
            job: job.clone(),
            attempt,
        })
    }

    async fn evidence_missing(
        &self,
        job: &JobId,
        attempt: u32,
        failure: &AttemptFailure,
    ) -> Vec<String> {
        let why = format!("the attempt failed before its browser was ready: {failure}");
        let captured = super::evidence::Captured::nothing(why);
        self.settings
            .spool
            .keep(job, attempt, &failure.stage, captured)
            .await
    }

    fn step_times(&self) -> Option<Arc<StepTimes>> {
        Some(Arc::clone(&self.times))
    }

    async fn shutdown(&self) {
        if let Some(pool) = &self.pool {
            pool.close().await;
        }
        self.close_master().await;
        if let Some(mut driver) = self.driver.write().await.take() {
            driver.kill().await;
        }
    }
}

/// Why no browser could be had for an attempt.
enum CloneFailure {
    /// No chromedriver or no master browser (a recovery is replacing it).
    NoMaster,
    Browser(BrowserError),
}

async fn release(pool: Option<&Arc<Pool>>, browser: JobBrowser, clean: bool) {
    match pool {
        Some(pool) => pool.give_back(browser, clean).await,
        None => {
            if let Err(e) = browser.close().await {
                debug!(error = %e, "closing the job browser");
            }
        }
    }
}

/// One attempt's browser.
pub struct LiveAttempt {
    /// `None` once closed.
    browser: Option<JobBrowser>,
    /// Where the browser goes back to (`pooled`).
    pool: Option<Arc<Pool>>,
    /// No step of this attempt has failed: a pooled browser may serve the
    /// next attempt.
    clean: bool,
    times: Arc<StepTimes>,
    settings: Arc<LiveSettings>,
    fields: FieldValues,
    outputs: Outputs,
    job: JobId,
    attempt: u32,
}

impl LiveAttempt {
    /// The attempt's browser, until it is closed.
    pub fn job_browser(&self) -> Option<&JobBrowser> {
        self.browser.as_ref()
    }

    /// Records the steps run since the last call into the step times.
    fn record_steps(&mut self) {
        let Some(browser) = self.browser.as_mut() else {
            return;
        };
        for StepTiming {
            step,
            phase,
            elapsed,
            ..
        } in browser.take_timings()
        {
            self.times.record(&step, &phase.to_string(), elapsed);
        }
    }

    fn browser(&mut self) -> Result<&mut JobBrowser, StepError> {
        self.browser.as_mut().ok_or_else(|| {
            StepError::browser_gone("(any)", "the attempt's browser is closed".into())
        })
    }

    /// Whether the page the browser shows now is the portal's login form:
    /// the session died while the form was being filled.
    async fn shows_login_form(&mut self) -> bool {
        let selector = self.settings.profile.login.username.clone();
        let Some(browser) = self.browser.as_mut() else {
            return false;
        };
        let Ok(client) = browser.client() else {
            return false;
        };
        client
            .find(fantoccini::Locator::Css(&selector))
            .await
            .is_ok()
    }

    async fn step_failure(&mut self, e: StepError) -> AttemptFailure {
        let kind = if !e.is_browser_gone() && self.shows_login_form().await {
            FailureKind::SessionExpired
        } else {
            classify(&e.failure)
        };
        AttemptFailure::new(kind, e.step.clone(), e.to_string())
    }
}

fn classify(failure: &StepFailure) -> FailureKind {
    match failure {
        StepFailure::NotFound { .. }
        | StepFailure::NotDisplayed { .. }
        | StepFailure::NoChoice { .. } => FailureKind::ElementMissing,
        StepFailure::TimedOut { .. } => FailureKind::Timeout,
        StepFailure::BrowserGone { .. } => FailureKind::BrowserCrashed,
        StepFailure::TextMismatch { .. }
        | StepFailure::ValueMismatch { .. }
        | StepFailure::Alert { .. } => FailureKind::Validation,
        StepFailure::BadValue { .. } => FailureKind::BadInput,
        StepFailure::LoggedOut { .. } => FailureKind::SessionExpired,
        _ => FailureKind::Other,
    }
}

fn browser_failure(stage: &str, e: &BrowserError) -> AttemptFailure {
    let kind = if e.is_browser_gone() {
        FailureKind::BrowserCrashed
    } else {
        FailureKind::Other
    };
    AttemptFailure::new(kind, stage, e.to_string())
}

impl Attempt for LiveAttempt {
    async fn fill(&mut self) -> Result<(), AttemptFailure> {
        let fields = self.fields.clone();
        let mut outputs = std::mem::take(&mut self.outputs);
        let result = match self.browser() {
            Ok(b) => match b
                .run_phase(crate::profile::Phase::PreSubmit, &fields, &mut outputs)
                .await
            {
                Ok(_) => b.prepare_submit(&fields).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        self.outputs = outputs;
        self.record_steps();
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                self.clean = false;
                Err(self.step_failure(e).await)
            }
        }
    }

    async fn click_submit(&mut self) -> Result<(), PostSubmitFailure> {
        let result = match self.browser() {
            Ok(b) => b.click_submit().await.map(|_| ()),
            Err(e) => Err(e),
        };
        self.record_steps();
        self.clean &= result.is_ok();
        result.map_err(|e| PostSubmitFailure {
            stage: e.step.clone(),
            error: e.to_string(),
            proposal_no: None,
        })
    }

    async fn finish(&mut self) -> Result<String, PostSubmitFailure> {
        let fields = self.fields.clone();
        let mut outputs = std::mem::take(&mut self.outputs);
        let result = match self.browser() {
            Ok(b) => b
                .run_phase(crate::profile::Phase::PostSubmit, &fields, &mut outputs)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        let proposal_no = outputs.proposal_no().map(str::to_owned);
        self.outputs = outputs;
        self.record_steps();
        self.clean &= result.is_ok() && proposal_no.is_some();
        match (result, proposal_no) {
            (Ok(()), Some(no)) => Ok(no),
            (Ok(()), None) => Err(PostSubmitFailure {
                stage: "read proposal_no".into(),
                error: "the post-submit steps ended without a proposal number".into(),
                proposal_no: None,
            }),
            (Err(e), proposal_no) => Err(PostSubmitFailure {
                stage: e.step.clone(),
                error: e.to_string(),
                proposal_no,
            }),
        }
    }

    async fn evidence(&mut self, stage: &str) -> Vec<String> {
        // Evidence is taken of failures only.
        self.clean = false;
        let captured = match self.browser.as_ref() {
            Some(browser) => super::evidence::capture(browser).await,
            None => super::evidence::Captured::nothing("the attempt's browser is closed"),
        };
        for missing in &captured.missing {
            warn!(stage, "evidence incomplete: {missing}");
        }
        let spool = &self.settings.spool;
        spool.keep(&self.job, self.attempt, stage, captured).await
    }

    async fn close(mut self) {
        if let Some(browser) = self.browser.take() {
            release(self.pool.as_ref(), browser, self.clean).await;
        }
    }
}
