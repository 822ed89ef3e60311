//! Warm job browsers: the `pooled` clone strategy.
//!
//! Starting Chromium for every attempt costs most of a second before any
//! portal work; a browser that is already running, wiped and given the
//! master's cookies is ready in a fraction of that. The pool keeps one
//! warm browser per worker slot, each on its own empty profile folder
//! under `{work_dir}/pool` (never a copy of the master's), and lends them
//! out one attempt at a time:
//!
//! ```text
//! take          a parked browser, or wait for the one being started
//! ready         wipe it (JobBrowser::reset_from) and add the master's
//!               current cookies; a browser whose wipe fails or cannot be
//!               checked is closed and a new one started in its place
//! give_back     clean attempt: park it on about:blank for the next one;
//!               a failed attempt, its N-th attempt, or a browser that
//!               does not park: close it, start a replacement
//! close         shutdown: close every parked browser and the ones starting
//! ```
//!
//! So every attempt still starts from a fresh copy of the master's login,
//! and what one attempt leaves (cookies, storage, the page, typed values,
//! console messages) is gone before the next begins, or the browser is.
//!
//! A replacement starts in the background, so the next attempt seldom
//! waits for it. Browsers lost some other way (a panicking attempt drops
//! its browser, which kills it) are made up for by the next attempt
//! starting one itself.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::session::BrowserCookie;
use super::{BrowserError, Driver, JobBrowser};
use crate::profile::Profile;

/// How long parking a returned browser may take before it counts as
/// unhealthy.
const PARK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutdown waits for a browser that is still starting.
const START_WAIT: Duration = Duration::from_secs(20);

/// How each attempt gets its browser.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CloneStrategy {
    /// A new Chromium per attempt, on a copy of the master's profile plus
    /// its current cookies.
    Fresh,
    /// A warm Chromium per worker slot, wiped before each attempt and given
    /// the master's current cookies.
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
    /// Warm browsers kept: one per worker slot.
    pub pool_size: usize,
    /// A pooled browser is replaced after this many attempts.
    pub recycle_after: u32,
}

impl Default for CloneSettings {
    fn default() -> Self {
        CloneSettings {
            strategy: CloneStrategy::Pooled,
            pool_size: 3,
            recycle_after: 50,
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
}

/// A place in the pool: a parked browser, or one starting.
enum Slot {
    Parked(Box<JobBrowser>),
    Starting(JoinHandle<Result<JobBrowser, BrowserError>>),
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
    ) -> Arc<Pool> {
        Arc::new(Pool {
            driver,
            profile,
            base_url,
            dir,
            size: settings.pool_size.max(1),
            recycle_after: settings.recycle_after.max(1),
            slots: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            warmed: AtomicBool::new(false),
            user_agent: Mutex::new(String::new()),
            next_folder: AtomicU64::new(1),
            started: AtomicUsize::new(0),
            replaced: AtomicUsize::new(0),
            reused: AtomicUsize::new(0),
        })
    }

    /// What the pool has done so far.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            started: self.started.load(Ordering::SeqCst),
            replaced: self.replaced.load(Ordering::SeqCst),
            reused: self.reused.load(Ordering::SeqCst),
        }
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

    /// A browser for an attempt, parked or starting; `None` when the pool
    /// has none (the caller starts one). Holds no lock while it waits, so
    /// call it before taking the driver's or master's lock.
    pub async fn take(&self) -> Option<JobBrowser> {
        loop {
            let slot = self.slots.lock().ok()?.pop_front()?;
            match slot {
                Slot::Parked(browser) => return Some(*browser),
                Slot::Starting(start) => match start.await {
                    Ok(Ok(browser)) => return Some(browser),
                    Ok(Err(e)) => warn!(error = %e, "a pooled browser did not start"),
                    Err(e) => warn!(error = %e, "starting a pooled browser panicked"),
                },
            }
        }
    }

    /// Readies `taken` (from [`take`](Self::take)) for an attempt with the
    /// master's current `cookies`: wipes it and adds them. When there is
    /// none, or it fails its wipe, or it runs with another user agent, a
    /// new one is started on `driver` (the failed one is closed).
    pub async fn ready(
        &self,
        taken: Option<JobBrowser>,
        driver: &Driver,
        cookies: Vec<BrowserCookie>,
    ) -> Result<JobBrowser, BrowserError> {
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

    /// Takes a browser back after its attempt. `clean`: the attempt did
    /// not fail. A clean browser under its attempt count is parked for the
    /// next attempt; any other is closed and a replacement started.
    pub async fn give_back(self: &Arc<Self>, mut browser: JobBrowser, clean: bool) {
        if self.closed.load(Ordering::SeqCst) {
            close_quietly(browser).await;
            return;
        }
        let why = if !clean {
            Some("its attempt failed".to_string())
        } else if browser.attempts_served() >= self.recycle_after {
            Some(format!("it served {} attempts", browser.attempts_served()))
        } else {
            match tokio::time::timeout(PARK_TIMEOUT, browser.park()).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("its health check failed: {e}")),
                Err(_) => Some("its health check timed out".to_string()),
            }
        };
        match why {
            None => {
                if let Err(Slot::Parked(browser)) = self.push_slot(Slot::Parked(Box::new(browser)))
                {
                    close_quietly(*browser).await;
                }
            }
            Some(why) => {
                debug!(%why, "replacing a pooled browser");
                self.replaced.fetch_add(1, Ordering::SeqCst);
                let start = self.spawn_start(Some(browser));
                self.push(start);
            }
        }
    }

    /// Closes every parked browser and every one starting; later
    /// returns are closed, not parked.
    pub async fn close(&self) {
        let slots: Vec<Slot> = match self.slots.lock() {
            Ok(mut slots) => {
                self.closed.store(true, Ordering::SeqCst);
                slots.drain(..).collect()
            }
            Err(_) => return,
        };
        for slot in slots {
            match slot {
                Slot::Parked(browser) => close_quietly(*browser).await,
                Slot::Starting(mut start) => {
                    match tokio::time::timeout(START_WAIT, &mut start).await {
                        Ok(Ok(Ok(browser))) => close_quietly(browser).await,
                        Ok(_) => {}
                        // Aborting drops a half-started browser, which
                        // kills it.
                        Err(_) => start.abort(),
                    }
                }
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

    /// Starts a browser in the background, closing `old` first.
    fn spawn_start(self: &Arc<Self>, old: Option<JobBrowser>) -> Slot {
        let pool = Arc::clone(self);
        Slot::Starting(tokio::spawn(async move {
            if let Some(old) = old {
                close_quietly(old).await;
            }
            let driver = pool.driver.read().await;
            let driver = driver.as_ref().ok_or_else(|| BrowserError::Gone {
                doing: "starting a pooled browser".into(),
                message: "chromedriver is not running".into(),
            })?;
            if pool.closed.load(Ordering::SeqCst) {
                return Err(BrowserError::Gone {
                    doing: "starting a pooled browser".into(),
                    message: "the pool is closed".into(),
                });
            }
            let user_agent = pool.user_agent();
            pool.start(driver, &user_agent).await
        }))
    }

    async fn start(&self, driver: &Driver, user_agent: &str) -> Result<JobBrowser, BrowserError> {
        let n = self.next_folder.fetch_add(1, Ordering::SeqCst);
        let dir = self.dir.join(format!("browser-{n}"));
        let browser =
            JobBrowser::open_pooled(driver, &self.profile, &self.base_url, dir, user_agent).await?;
        self.started.fetch_add(1, Ordering::SeqCst);
        Ok(browser)
    }

    /// Adds a slot unless the pool is closed; false (and the slot ended)
    /// when it is.
    fn push(&self, slot: Slot) -> bool {
        match self.push_slot(slot) {
            Ok(()) => true,
            Err(Slot::Parked(browser)) => {
                tokio::spawn(close_quietly(*browser));
                false
            }
            Err(Slot::Starting(start)) => {
                // Closes whatever it starts once it has.
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
