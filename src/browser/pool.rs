//! Warm job browsers: the `pooled` clone strategy.
//!
//! Starting Chromium for every attempt costs most of a second before any
//! portal work; a browser that is already running, wiped and given the
//! master's cookies is ready in a fraction of that. The pool keeps one
//! warm browser per worker slot and one spare, each on its own empty
//! profile folder under `{work_dir}/browsers/pool` (never a copy of the
//! master's), and lends them out one attempt at a time:
//!
//! ```text
//! take          the longest-parked browser, or wait for the first one
//!               being wiped or started
//! ready         a browser preloaded with the master's current cookies is
//!               kept as it is, on the dashboard; any other is wiped if
//!               need be and given those cookies (JobBrowser::reset_from);
//!               either way checked to hold those and no others; one that
//!               fails is closed and a new one started in its place
//! give_back     at once, for the worker: in the background, a clean
//!               attempt's browser is wiped and checked (JobBrowser::park),
//!               preloaded (JobBrowser::preload: the master's cookies as
//!               last read, the dashboard opened and found logged in) and
//!               parked; a failed attempt's, its N-th attempt's, or one
//!               whose wipe fails is closed and a replacement started
//!               (and preloaded)
//! close         shutdown: close every parked browser and the ones being
//!               wiped or started
//! ```
//!
//! So every attempt still starts from a fresh copy of the master's login,
//! and what one attempt leaves (cookies, storage, the page, typed values,
//! console messages) is gone before the next begins, or the browser is.
//! The wipe runs after an attempt, not before the next one, and the spare
//! means a worker that returns a browser takes another, already wiped,
//! rather than waiting for its own. A wipe waits (up to a second) while
//! any attempt is opening the portal, so it does not slow the page load
//! an attempt waits on.
//!
//! A preloaded browser spares its attempt the dashboard's load, which on a
//! busy machine is most of what an attempt waits for before its first
//! form step: the attempt confirms the page with the portal instead
//! (JobBrowser::check_session). A preload of a login the master has since
//! replaced is wiped when taken; the work the preload did is then lost,
//! nothing else.
//!
//! Browsers lost some other way (a panicking attempt drops its browser,
//! which kills it) are made up for by the next attempt starting one
//! itself.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::session::BrowserCookie;
use super::{BrowserError, Driver, JobBrowser};
use crate::profile::Profile;
use crate::timing::{StepTimes, POOL_PHASE, PRELOAD, WIPE};

/// How long parking (the wipe included) a returned browser may take
/// before it counts as unhealthy.
const PARK_TIMEOUT: Duration = Duration::from_secs(15);

/// How long shutdown waits for a browser that is still starting.
const START_WAIT: Duration = Duration::from_secs(20);

/// How long the wipe of a returned browser waits for attempts that are
/// opening the portal to finish doing so.
const WIPE_DEFER: Duration = Duration::from_secs(1);

/// How long a preloaded dashboard serves an attempt as it is, by default.
pub const DEFAULT_PRELOAD_MAX_AGE: Duration = Duration::from_secs(120);

/// How each attempt gets its browser.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CloneStrategy {
    /// A new Chromium per attempt, on a copy of the master's profile plus
    /// its current cookies.
    Fresh,
    /// A warm Chromium per worker slot and a spare, wiped after each
    /// attempt and given the master's current cookies for the next.
    #[default]
    Pooled,
}

impl CloneStrategy {
    /// The setting's spelling: `fresh` or `pooled`.
    pub fn as_str(self) -> &'static str {
        match self {
            CloneStrategy::Fresh => "fresh",
            CloneStrategy::Pooled => "pooled",
        }
    }
}

impl std::fmt::Display for CloneStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The clone strategy and the pool's size and recycling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneSettings {
    pub strategy: CloneStrategy,
    /// Worker slots; the pool keeps a warm browser for each, and a spare.
    pub pool_size: usize,
    /// A pooled browser is replaced after this many attempts.
    pub recycle_after: u32,
    /// Browsers kept beyond one per worker slot, so a worker that returns
    /// a browser takes one already wiped instead of waiting for its own.
    pub spare: usize,
    /// How long a dashboard a parked browser has preloaded may serve an
    /// attempt as it is (confirmed, not loaded again); zero: parked
    /// browsers wait on a blank page and every attempt loads the dashboard.
    pub preload_max_age: Duration,
}

impl Default for CloneSettings {
    fn default() -> Self {
        CloneSettings {
            strategy: CloneStrategy::Pooled,
            pool_size: 3,
            recycle_after: 50,
            spare: 1,
            preload_max_age: DEFAULT_PRELOAD_MAX_AGE,
        }
    }
}

/// What the pool has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Browsers started, the first ones included.
    pub started: usize,
    /// Browsers closed for a failed attempt, a failed wipe or park, or
    /// their attempt count.
    pub replaced: usize,
    /// Attempts served by a browser that had served one before.
    pub reused: usize,
    /// Dashboards loaded, logged in, by parked browsers.
    pub preloads: usize,
    /// Attempts that started on a dashboard their browser had preloaded,
    /// confirmed logged in (instead of loading it).
    pub preloaded: usize,
}

/// A place in the pool: a browser being wiped or started, parked once
/// its task has finished.
type Slot = JoinHandle<Result<JobBrowser, BrowserError>>;

/// The attempts opening the portal: from getting a pooled browser to the
/// end of their session check. Their page loads decide how soon they
/// start filling, so the wipes of returned browsers (which only have to
/// be done before those browsers are next taken) wait for none to be
/// open, at most [`WIPE_DEFER`]: on a busy machine the two compete for
/// the same cores.
#[derive(Debug, Default)]
struct Opening {
    count: AtomicUsize,
    none: tokio::sync::Notify,
}

impl Opening {
    /// Waits until no attempt is opening the portal, or `within`.
    async fn wait_none(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let none = self.none.notified();
            tokio::pin!(none);
            none.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, none).await.is_err() {
                return;
            }
        }
    }
}

/// Held by an attempt while it opens the portal (see [`Opening`]); the
/// browser drops it when its session check ends, or with itself.
#[derive(Debug)]
pub(crate) struct OpeningGuard(Arc<Opening>);

impl OpeningGuard {
    fn new(opening: &Arc<Opening>) -> OpeningGuard {
        opening.count.fetch_add(1, Ordering::SeqCst);
        OpeningGuard(Arc::clone(opening))
    }
}

impl Drop for OpeningGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.none.notify_waiters();
        }
    }
}

/// The warm browsers. See the module docs.
pub struct Pool {
    driver: Arc<RwLock<Option<Driver>>>,
    profile: Profile,
    base_url: String,
    dir: PathBuf,
    size: usize,
    recycle_after: u32,
    slots: Mutex<VecDeque<Slot>>,
    /// Set at shutdown, under the `slots` lock.
    closed: AtomicBool,
    warmed: AtomicBool,
    /// The master's user agent, which every pooled browser is started with.
    user_agent: Mutex<String>,
    next_folder: AtomicU64,
    started: AtomicUsize,
    replaced: AtomicUsize,
    reused: AtomicUsize,
    preloads: AtomicUsize,
    preloaded: AtomicUsize,
    opening: Arc<Opening>,
    /// The master's cookies as last read, which parked browsers preload.
    login: Mutex<Vec<BrowserCookie>>,
    preload_max_age: Duration,
    /// Where the background wipes and preloads are timed.
    times: Arc<StepTimes>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("dir", &self.dir)
            .field("size", &self.size)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// An empty pool of `settings.pool_size` browsers under `dir`, started
    /// by [`warm_up`](Self::warm_up).
    pub fn new(
        driver: Arc<RwLock<Option<Driver>>>,
        profile: Profile,
        base_url: String,
        dir: PathBuf,
        settings: &CloneSettings,
        times: Arc<StepTimes>,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            driver,
            profile,
            base_url,
            dir,
            size: settings.pool_size.max(1) + settings.spare,
            recycle_after: settings.recycle_after.max(1),
            slots: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            warmed: AtomicBool::new(false),
            user_agent: Mutex::new(String::new()),
            next_folder: AtomicU64::new(1),
            started: AtomicUsize::new(0),
            replaced: AtomicUsize::new(0),
            reused: AtomicUsize::new(0),
            preloads: AtomicUsize::new(0),
            preloaded: AtomicUsize::new(0),
            opening: Arc::new(Opening::default()),
            login: Mutex::new(Vec::new()),
            preload_max_age: settings.preload_max_age,
            times,
        })
    }

    /// What the pool has done so far.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            started: self.started.load(Ordering::SeqCst),
            replaced: self.replaced.load(Ordering::SeqCst),
            reused: self.reused.load(Ordering::SeqCst),
            preloads: self.preloads.load(Ordering::SeqCst),
            preloaded: self.preloaded.load(Ordering::SeqCst),
        }
    }

    /// Browsers the pool keeps warm: one per worker slot and the spares.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Where the pooled browsers' folders are.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Notes the master's user agent; a pooled browser started with
    /// another one is replaced when next taken.
    pub fn set_user_agent(&self, user_agent: &str) {
        if let Ok(mut ua) = self.user_agent.lock() {
            if *ua != user_agent {
                *ua = user_agent.to_string();
            }
        }
    }

    /// Counts an attempt that started on a preloaded dashboard.
    pub(crate) fn note_preloaded(&self) {
        self.preloaded.fetch_add(1, Ordering::SeqCst);
    }

    /// Notes the master's current cookies, which parked browsers preload
    /// from now on. Browsers parked with older ones are wiped and given
    /// the current ones when next taken.
    pub fn set_login(&self, cookies: &[BrowserCookie]) {
        if let Ok(mut login) = self.login.lock() {
            *login = cookies.to_vec();
        }
    }

    fn login(&self) -> Vec<BrowserCookie> {
        self.login.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn user_agent(&self) -> String {
        self.user_agent
            .lock()
            .map(|ua| ua.clone())
            .unwrap_or_default()
    }

    /// Starts the pool's browsers in the background, once (after the
    /// master's first login, which gives them its user agent). Clears
    /// what an earlier run left in the pool's folder first.
    pub fn warm_up(self: &Arc<Self>) {
        if self.warmed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(dir = %self.dir.display(), error = %e, "cannot clear the pool's folder");
            }
        }
        info!(size = self.size, "starting the warm browser pool");
        for _ in 0..self.size {
            let start = self.spawn_start(None);
            if !self.push(start) {
                return;
            }
        }
    }

    /// A browser for an attempt: the longest-parked one, else the first
    /// being wiped or started; `None` when the pool has none (the caller
    /// starts one). Holds no lock while it waits, so call it before taking
    /// the driver's or master's lock.
    pub async fn take(&self) -> Option<JobBrowser> {
        loop {
            let slot = {
                let mut slots = self.slots.lock().ok()?;
                match slots.iter().position(JoinHandle::is_finished) {
                    Some(i) => slots.remove(i)?,
                    None => slots.pop_front()?,
                }
            };
            match slot.await {
                Ok(Ok(browser)) => return Some(browser),
                Ok(Err(e)) => warn!(error = %e, "a pooled browser did not start"),
                Err(e) => warn!(error = %e, "starting a pooled browser panicked"),
            }
        }
    }

    /// Readies `taken` (from [`take`](Self::take)) for an attempt with the
    /// master's current `cookies`: adds them and checks the browser holds
    /// those and no others (wiping it first if it was not wiped when
    /// parked). When there is none, or it fails, or it runs with another
    /// user agent, a new one is started on `driver` (the failed one is
    /// closed).
    pub async fn ready(
        &self,
        taken: Option<JobBrowser>,
        driver: &Driver,
        cookies: Vec<BrowserCookie>,
    ) -> Result<JobBrowser, BrowserError> {
        let mut browser = self.reset_or_start(taken, driver, cookies).await?;
        browser.opening = Some(OpeningGuard::new(&self.opening));
        Ok(browser)
    }

    /// [`ready`](Self::ready) but for marking the attempt as opening the
    /// portal.
    async fn reset_or_start(
        &self,
        taken: Option<JobBrowser>,
        driver: &Driver,
        cookies: Vec<BrowserCookie>,
    ) -> Result<JobBrowser, BrowserError> {
        self.set_login(&cookies);
        let user_agent = self.user_agent();
        if let Some(mut browser) = taken {
            if browser.user_agent() != user_agent {
                debug!("pooled browser has an old user agent; replacing it");
                self.discard(browser);
            } else {
                let reused = browser.attempts_served() > 0;
                match browser.reset_from(cookies.clone()).await {
                    Ok(()) => {
                        if reused {
                            self.reused.fetch_add(1, Ordering::SeqCst);
                        }
                        return Ok(browser);
                    }
                    Err(e) => {
                        warn!(error = %e, "pooled browser failed its reset; replacing it");
                        self.discard(browser);
                    }
                }
            }
        }
        let mut browser = self.start(driver, &user_agent).await?;
        match browser.reset_from(cookies).await {
            Ok(()) => Ok(browser),
            Err(e) => {
                let _ = browser.close().await;
                Err(e)
            }
        }
    }

    /// Takes a browser back after its attempt, at once. `clean`: the
    /// attempt did not fail. In the background, a clean browser under its
    /// attempt count is wiped and parked for a later attempt; any other,
    /// or one whose wipe fails, is closed and a replacement started.
    pub async fn give_back(self: &Arc<Self>, browser: JobBrowser, clean: bool) {
        if self.closed.load(Ordering::SeqCst) {
            close_quietly(browser).await;
            return;
        }
        let why = if !clean {
            Some("its attempt failed".to_string())
        } else if browser.attempts_served() >= self.recycle_after {
            Some(format!("it served {} attempts", browser.attempts_served()))
        } else {
            None
        };
        let readying = match why {
            None => self.spawn_park(browser),
            Some(why) => {
                debug!(%why, "replacing a pooled browser");
                self.replaced.fetch_add(1, Ordering::SeqCst);
                self.spawn_start(Some(browser))
            }
        };
        self.push(readying);
    }

    /// Closes every parked browser and every one being wiped or started;
    /// later returns are closed, not parked.
    pub async fn close(&self) {
        let slots: Vec<Slot> = match self.slots.lock() {
            Ok(mut slots) => {
                self.closed.store(true, Ordering::SeqCst);
                slots.drain(..).collect()
            }
            Err(_) => return,
        };
        for mut slot in slots {
            match tokio::time::timeout(START_WAIT, &mut slot).await {
                Ok(Ok(Ok(browser))) => close_quietly(browser).await,
                Ok(_) => {}
                // Aborting drops a half-started browser, which kills it.
                Err(_) => slot.abort(),
            }
        }
        debug!("browser pool closed");
    }

    /// Closes a browser in the background, without a replacement (the
    /// caller starts its own).
    fn discard(&self, browser: JobBrowser) {
        self.replaced.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(close_quietly(browser));
    }

    /// Wipes and parks a browser in the background; one that fails is
    /// closed and a new one started instead.
    fn spawn_park(self: &Arc<Self>, mut browser: JobBrowser) -> Slot {
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            browser.opening = None;
            pool.opening.wait_none(WIPE_DEFER).await;
            let parked = async {
                let started = Instant::now();
                browser.park().await?;
                pool.times.record(WIPE, POOL_PHASE, started.elapsed());
                pool.preload(&mut browser).await
            };
            let why = match tokio::time::timeout(PARK_TIMEOUT, parked).await {
                Ok(Ok(())) => return Ok(browser),
                Ok(Err(e)) => format!("its wipe, health check or preload failed: {e}"),
                Err(_) => "its wipe, health check or preload timed out".to_string(),
            };
            debug!(%why, "replacing a pooled browser");
            pool.replaced.fetch_add(1, Ordering::SeqCst);
            close_quietly(browser).await;
            pool.start_on_driver().await
        })
    }

    /// Starts a browser in the background, closing `old` first.
    fn spawn_start(self: &Arc<Self>, old: Option<JobBrowser>) -> Slot {
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            if let Some(old) = old {
                close_quietly(old).await;
            }
            pool.start_on_driver().await
        })
    }

    /// Starts a browser on the current chromedriver, unless the pool is
    /// closed.
    async fn start_on_driver(&self) -> Result<JobBrowser, BrowserError> {
        let driver = self.driver.read().await;
        let driver = driver.as_ref().ok_or_else(|| BrowserError::Gone {
            doing: "starting a pooled browser".into(),
            message: "chromedriver is not running".into(),
        })?;
        if self.closed.load(Ordering::SeqCst) {
            return Err(BrowserError::Gone {
                doing: "starting a pooled browser".into(),
                message: "the pool is closed".into(),
            });
        }
        let user_agent = self.user_agent();
        self.start_preloaded(driver, &user_agent).await
    }

    async fn start(&self, driver: &Driver, user_agent: &str) -> Result<JobBrowser, BrowserError> {
        let n = self.next_folder.fetch_add(1, Ordering::SeqCst);
        let dir = self.dir.join(format!("browser-{n}"));
        let browser = JobBrowser::open_pooled(
            driver,
            &self.profile,
            &self.base_url,
            dir,
            user_agent,
            self.preload_max_age,
        )
        .await?;
        self.started.fetch_add(1, Ordering::SeqCst);
        Ok(browser)
    }

    /// Preloads the master's login as last read into a parked `browser`
    /// (see [`JobBrowser::preload`]), timed and counted.
    async fn preload(&self, browser: &mut JobBrowser) -> Result<(), BrowserError> {
        let started = Instant::now();
        if browser.preload(&self.login()).await? {
            self.preloads.fetch_add(1, Ordering::SeqCst);
            self.times.record(PRELOAD, POOL_PHASE, started.elapsed());
        }
        Ok(())
    }

    /// [`start`](Self::start), then a preload of the master's login, for a
    /// browser started in the background.
    async fn start_preloaded(
        &self,
        driver: &Driver,
        user_agent: &str,
    ) -> Result<JobBrowser, BrowserError> {
        let mut browser = self.start(driver, user_agent).await?;
        let preloaded = tokio::time::timeout(PARK_TIMEOUT, self.preload(&mut browser)).await;
        match preloaded {
            Ok(Ok(())) => Ok(browser),
            Ok(Err(e)) => {
                close_quietly(browser).await;
                Err(e)
            }
            Err(_) => {
                close_quietly(browser).await;
                Err(BrowserError::Dirty {
                    what: "its preload timed out".into(),
                })
            }
        }
    }

    /// Adds a slot unless the pool is closed; false (and the slot ended)
    /// when it is.
    fn push(&self, slot: Slot) -> bool {
        match self.push_slot(slot) {
            Ok(()) => true,
            Err(start) => {
                // Closes whatever it readies once it has.
                tokio::spawn(async move {
                    if let Ok(Ok(browser)) = start.await {
                        close_quietly(browser).await;
                    }
                });
                false
            }
        }
    }

    fn push_slot(&self, slot: Slot) -> Result<(), Slot> {
        let Ok(mut slots) = self.slots.lock() else {
            return Err(slot);
        };
        if self.closed.load(Ordering::SeqCst) {
            return Err(slot);
        }
        slots.push_back(slot);
        Ok(())
    }
}

async fn close_quietly(browser: JobBrowser) {
    if let Err(e) = browser.close().await {
        debug!(error = %e, "closing a pooled browser");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_are_spelled_in_lowercase() {
        assert_eq!(CloneStrategy::default(), CloneStrategy::Pooled);
        for s in [CloneStrategy::Fresh, CloneStrategy::Pooled] {
            let toml = toml::Value::try_from(s).unwrap();
            assert_eq!(toml.as_str(), Some(s.as_str()));
            assert_eq!(s.to_string(), s.as_str());
        }
        let parsed: CloneStrategy = toml::Value::String("fresh".into()).try_into().unwrap();
        assert_eq!(parsed, CloneStrategy::Fresh);
        let bad: Result<CloneStrategy, _> = toml::Value::String("warm".into()).try_into();
        assert!(bad.is_err());
    }
}
