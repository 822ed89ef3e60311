//! Job browsers: each attempt gets a fresh copy of the master's login.
//!
//! Local chromedriver: the master's profile folder is copied into the job's
//! folder (local storage, IndexedDB and the like come along), leaving out
//! Chromium's lock and socket files, journals and caches; then the master's
//! current cookies are always added over WebDriver, because Chromium writes
//! cookies to disk only about every 30 s and a copy taken right after a
//! re-login would otherwise be logged out. Remote WebDriver has no shared
//! disk: cookies alone.
//!
//! Pooled: a warm browser on its own empty profile (never a copy of the
//! master's) serves one attempt after another. After each attempt,
//! [`JobBrowser::park`] wipes it (its tab swapped for a new one, every
//! cookie and the portal origin's storage cleared through Chrome DevTools,
//! the console log drained, each checked); before the next,
//! [`JobBrowser::reset_from`] sets the master's current cookies through
//! DevTools and checks the browser holds those and no others, so no portal
//! page is loaded between one attempt and the next. A wipe or check that
//! cannot be done is an error: the pool then replaces the browser. While
//! parked, a wiped browser preloads ([`JobBrowser::preload`]): it is given
//! the master's cookies as last read and opens the dashboard; the next
//! attempt keeps that page only when the master's cookies are still those.
//!
//! The copy then opens the dashboard and decides in about a second whether
//! it is logged in ([`JobBrowser::check_session`]); a preloaded one, not
//! too old, confirms the dashboard it shows with one request to the portal
//! instead. The first step of an attempt that would open the dashboard the
//! session check has just loaded (or confirmed) is not run again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::Client;
use serde_json::json;
use tracing::{debug, info, warn};

use super::master::absolute;
use super::session::{self, BrowserCookie, Session};
use super::steps::{Outputs, StepError, StepRunner, StepTiming};
use super::{join_url, BrowserError, Driver, Master};
use crate::profile::{FieldValues, Phase, Profile};

/// How the login was carried into a job browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneMode {
    /// Local chromedriver: profile folder copied, then cookies added.
    ProfileCopyAndCookies,
    /// Remote WebDriver: cookies added to a fresh profile.
    CookiesOnly,
    /// A warm pooled browser on its own empty profile: wiped after each
    /// attempt, then given the master's cookies for the next.
    Pooled,
}

/// The outcome of a session check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCheck {
    /// The dashboard showed (or the URL gained the login marker).
    Valid {
        /// From navigation start to the decision.
        elapsed: Duration,
        /// The part of it the dashboard took to load.
        navigated: Duration,
    },
    /// The login form showed (or the browser was sent to the login page).
    Expired {
        /// From navigation start to the decision.
        elapsed: Duration,
        /// The part of it the dashboard took to load.
        navigated: Duration,
        /// What was seen.
        reason: String,
    },
}

impl SessionCheck {
    /// Whether the copy is logged in.
    pub fn is_valid(&self) -> bool {
        matches!(self, SessionCheck::Valid { .. })
    }

    /// From navigation start to the decision.
    pub fn elapsed(&self) -> Duration {
        match self {
            SessionCheck::Valid { elapsed, .. } | SessionCheck::Expired { elapsed, .. } => *elapsed,
        }
    }

    /// The part of [`elapsed`](Self::elapsed) the page took to load; the
    /// rest is the decision.
    pub fn navigated(&self) -> Duration {
        match self {
            SessionCheck::Valid { navigated, .. } | SessionCheck::Expired { navigated, .. } => {
                *navigated
            }
        }
    }
}

/// The names left out of a profile copy: locks, sockets, journals being
/// written, and caches (large, and rebuilt on demand).
fn skip_in_copy(relative: &Path) -> bool {
    let Some(name) = relative.file_name().and_then(|n| n.to_str()) else {
        return true;
    };
    const CACHES: [&str; 6] = [
        "Cache",
        "Code Cache",
        "GPUCache",
        "GrShaderCache",
        "ShaderCache",
        "DawnCache",
    ];
    name.starts_with("Singleton")
        || name == "LOCK"
        || name.ends_with(".lock")
        || name.ends_with("-journal")
        || CACHES.contains(&name)
        || (name == "CacheStorage"
            && relative
                .parent()
                .and_then(|p| p.file_name())
                .is_some_and(|p| p == "Service Worker"))
}

/// Copies a live profile folder. Files that vanish mid-copy (Chromium is
/// running) are skipped; symlinks (the `Singleton*` ones) are never
/// followed.
pub fn copy_profile(from: &Path, to: &Path) -> std::io::Result<u64> {
    fn walk(root: &Path, rel: &Path, to: &Path, copied: &mut u64) -> std::io::Result<()> {
        std::fs::create_dir_all(to.join(rel))?;
        let entries = match std::fs::read_dir(root.join(rel)) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let rel_child = rel.join(entry.file_name());
            if skip_in_copy(&rel_child) {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                walk(root, &rel_child, to, copied)?;
            } else if kind.is_file() {
                match std::fs::copy(entry.path(), to.join(&rel_child)) {
                    Ok(n) => *copied += n,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
    let mut copied = 0;
    walk(from, Path::new(""), to, &mut copied)?;
    Ok(copied)
}

/// Deletes every job folder in `jobs_dir`: what a daemon killed outright
/// (SIGKILL, a crash, the OOM killer) left, since only a job browser's close
/// or drop deletes its folder. Call it only while no attempt runs. Returns
/// how many were deleted; a missing `jobs_dir` is none.
pub fn sweep_job_folders(jobs_dir: &Path) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(jobs_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut deleted = 0;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
        deleted += 1;
    }
    Ok(deleted)
}

/// Deletes a folder when dropped unless disarmed: a clone that fails
/// halfway leaves no job folder behind.
struct DirGuard(Option<PathBuf>);

impl DirGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What a pooled browser holds between attempts.
#[derive(Debug)]
enum Parked {
    /// What its last attempt (or preload) left: wiped before the next.
    Used,
    /// Nothing: a blank tab, no cookie, no storage of the portal's origin.
    Wiped,
    /// Wiped, then given `login` (the master's cookies as read then) and
    /// left on the dashboard, found logged in `at`.
    OnDashboard {
        login: Vec<BrowserCookie>,
        at: Instant,
    },
}

/// Whether two sets of cookies are the same login: the same names with the
/// same values.
fn same_login(a: &[BrowserCookie], b: &[BrowserCookie]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|x| b.iter().any(|y| x.name == y.name && x.value == y.value))
}

/// How long a pooled browser's wipe may take before the browser counts as
/// unhealthy.
const WIPE_TIMEOUT: Duration = Duration::from_secs(10);

/// A job's browser: a copy of the master's login that runs the form steps.
#[derive(Debug)]
pub struct JobBrowser {
    session: Session,
    profile: Profile,
    base_url: String,
    job_dir: PathBuf,
    mode: CloneMode,
    cookies_added: usize,
    submit: Option<super::steps::PreparedSubmit>,
    /// The user agent it was started with (the master's).
    user_agent: String,
    /// Attempts it has been reset for (pooled); 1 for the others.
    attempts_served: u32,
    /// What a pooled browser holds between attempts.
    parked: Parked,
    /// Set by [`reset_from`](Self::reset_from) when the browser already
    /// shows the dashboard, logged in with the master's current cookies:
    /// when that page was loaded. [`check_session`](Self::check_session)
    /// then confirms it instead of loading it again.
    preloaded_at: Option<Instant>,
    /// How long a page loaded while parked may serve an attempt as it is;
    /// zero: parked browsers wait on a blank page.
    preload_max_age: Duration,
    /// The last session check confirmed a preloaded dashboard (rather than
    /// loading one).
    confirmed_preload: bool,
    /// The dashboard URL the session check has just loaded, until a step
    /// runs: a first step that would load it again need not.
    checked_url: Option<String>,
    /// Every step run since the last [`take_timings`](Self::take_timings),
    /// failed ones included.
    timings: Vec<StepTiming>,
    /// Pooled: held from the pool's handing it out to the end of the
    /// session check, while the pool defers its wipes.
    pub(super) opening: Option<super::pool::OpeningGuard>,
}

impl JobBrowser {
    /// Clones the master's login into a new browser in `job_dir` (created;
    /// deleted again by [`close`](Self::close) or on drop). Does not check
    /// the copy: call [`check_session`](Self::check_session) next.
    pub async fn clone_from(
        driver: &Driver,
        master: &Master,
        profile: &Profile,
        base_url: &str,
        job_dir: impl Into<PathBuf>,
    ) -> Result<JobBrowser, BrowserError> {
        let started = Instant::now();
        let job_dir = absolute(job_dir.into())?;
        let io = |doing, path: &Path| {
            let path = path.to_path_buf();
            move |source| BrowserError::Io {
                doing,
                path,
                source,
            }
        };
        if job_dir.exists() {
            std::fs::remove_dir_all(&job_dir).map_err(io("clearing the job folder", &job_dir))?;
        }
        crate::owner_only::create_dir_all(&job_dir)
            .map_err(io("creating the job folder", &job_dir))?;
        let guard = DirGuard(Some(job_dir.clone()));

        let user_data_dir = job_dir.join("profile");
        let mode = if driver.is_remote() {
            CloneMode::CookiesOnly
        } else {
            let from = master.profile_dir().to_path_buf();
            let to = user_data_dir.clone();
            let bytes = tokio::task::spawn_blocking(move || copy_profile(&from, &to))
                .await
                .map_err(|e| BrowserError::Io {
                    doing: "copying the master profile into",
                    path: user_data_dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?
                .map_err(io("copying the master profile into", &user_data_dir))?;
            debug!(bytes, "master profile copied");
            CloneMode::ProfileCopyAndCookies
        };

        let session = driver
            .open_session(
                "job",
                Some(&user_data_dir),
                Some(master.user_agent()),
                Some(job_dir.clone()),
            )
            .await?;
        // From here the session owns the folder.
        guard.disarm();
        let mut job = JobBrowser {
            session,
            profile: profile.clone(),
            base_url: base_url.to_string(),
            job_dir,
            mode,
            cookies_added: 0,
            submit: None,
            user_agent: master.user_agent().to_string(),
            attempts_served: 1,
            parked: Parked::Used,
            preloaded_at: None,
            preload_max_age: Duration::ZERO,
            confirmed_preload: false,
            checked_url: None,
            timings: Vec::new(),
            opening: None,
        };
        let added = match master.cookies().await {
            Ok(cookies) => job.add_cookies(cookies).await,
            Err(e) => Err(e),
        };
        match added {
            Ok(n) => job.cookies_added = n,
            Err(e) => {
                let _ = job.close().await;
                return Err(e);
            }
        }
        info!(
            mode = ?job.mode,
            cookies = job.cookies_added,
            ms = started.elapsed().as_millis() as u64,
            "login cloned into a job browser"
        );
        Ok(job)
    }

    /// Starts a browser for the pool on its own empty profile in `dir`
    /// (created; deleted again when the browser closes), with `user_agent`
    /// (the master's). It carries no login until
    /// [`preload`](Self::preload) or [`reset_from`](Self::reset_from). A
    /// dashboard it preloads serves an attempt as it is for
    /// `preload_max_age` (zero: it never preloads).
    pub async fn open_pooled(
        driver: &Driver,
        profile: &Profile,
        base_url: &str,
        dir: impl Into<PathBuf>,
        user_agent: &str,
        preload_max_age: Duration,
    ) -> Result<JobBrowser, BrowserError> {
        let started = Instant::now();
        let dir = absolute(dir.into())?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|source| BrowserError::Io {
                doing: "clearing the pooled browser's folder",
                path: dir.clone(),
                source,
            })?;
        }
        let user_data_dir = dir.join("profile");
        if !driver.is_remote() {
            std::fs::create_dir_all(&user_data_dir).map_err(|source| BrowserError::Io {
                doing: "creating the pooled browser's profile",
                path: user_data_dir.clone(),
                source,
            })?;
        }
        let guard = DirGuard(Some(dir.clone()));
        let user_agent = Some(user_agent).filter(|ua| !ua.is_empty());
        let mut session = driver
            .open_session(
                "pooled",
                Some(&user_data_dir),
                user_agent,
                Some(dir.clone()),
            )
            .await?;
        guard.disarm();
        // A new Chromium opens its New Tab Page, which chromedriver waits
        // on before the first command: usually 0.2 s, now and then 5 s.
        // Waited for here, while the browser warms up, not by an attempt.
        if let Err(e) = session.client()?.current_url().await {
            let _ = session.close().await;
            return Err(BrowserError::cmd("reading the new browser's first page", e));
        }
        debug!(
            ms = started.elapsed().as_millis() as u64,
            dir = %dir.display(),
            "pooled browser started"
        );
        Ok(JobBrowser {
            session,
            profile: profile.clone(),
            base_url: base_url.to_string(),
            job_dir: dir,
            mode: CloneMode::Pooled,
            cookies_added: 0,
            submit: None,
            user_agent: user_agent.unwrap_or_default().to_string(),
            attempts_served: 0,
            parked: Parked::Wiped,
            preloaded_at: None,
            preload_max_age,
            confirmed_preload: false,
            checked_url: None,
            timings: Vec::new(),
            opening: None,
        })
    }

    /// Readies a pooled browser for its next attempt with `cookies`, the
    /// master's current ones.
    ///
    /// A browser [`preload`](Self::preload) left on the dashboard with
    /// these same cookies, holding exactly those, is kept as it is, for
    /// [`check_session`](Self::check_session) to confirm. Any other is
    /// wiped unless [`park`](Self::park) has just done so (or this is its
    /// first attempt), given the cookies on the portal's origin, and checked
    /// to hold those and no others. An error means the browser cannot be
    /// trusted clean and must be replaced.
    pub async fn reset_from(&mut self, cookies: Vec<BrowserCookie>) -> Result<(), BrowserError> {
        let started = Instant::now();
        self.submit = None;
        self.timings.clear();
        self.checked_url = None;
        self.preloaded_at = None;
        self.attempts_served += 1;
        let parked = std::mem::replace(&mut self.parked, Parked::Used);
        match parked {
            Parked::Wiped => {}
            Parked::OnDashboard { login, at } if same_login(&login, &cookies) => {
                match self.holds_exactly(&cookies).await {
                    Ok(()) => {
                        self.preloaded_at = Some(at);
                        self.cookies_added = cookies.len();
                        info!(
                            mode = "pooled",
                            served = self.attempts_served,
                            cookies = self.cookies_added,
                            ms = started.elapsed().as_millis() as u64,
                            preloaded_ms_ago = at.elapsed().as_millis() as u64,
                            "login cloned into a job browser (on the dashboard already)"
                        );
                        return Ok(());
                    }
                    Err(e) => {
                        debug!(error = %e, "the preloaded browser's cookies changed; wiping it");
                        self.wipe_within_timeout().await?;
                    }
                }
            }
            Parked::OnDashboard { .. } => {
                debug!("the master's login changed since this browser preloaded it; wiping it");
                self.wipe_within_timeout().await?;
            }
            Parked::Used => self.wipe_within_timeout().await?,
        }
        self.cookies_added = self.add_cookies(cookies).await?;
        info!(
            mode = "pooled",
            served = self.attempts_served,
            cookies = self.cookies_added,
            ms = started.elapsed().as_millis() as u64,
            "login cloned into a job browser"
        );
        Ok(())
    }

    /// Readies a parked, wiped pooled browser for an attempt yet to come,
    /// off that attempt's path: adds `login` (the master's cookies, as
    /// last read) and opens the dashboard, checked logged in. True when it
    /// now waits there; false when the check found it logged out (or the
    /// browser preloads nothing), and it is wiped again. An error means the
    /// browser must be replaced.
    pub async fn preload(&mut self, login: &[BrowserCookie]) -> Result<bool, BrowserError> {
        if self.preload_max_age.is_zero()
            || !matches!(self.parked, Parked::Wiped)
            || login.is_empty()
        {
            return Ok(false);
        }
        let started = Instant::now();
        self.parked = Parked::Used;
        self.add_cookies(login.to_vec()).await?;
        let check =
            session::check_session(self.session.client()?, &self.profile, &self.base_url).await;
        match check {
            Ok(SessionCheck::Valid { .. }) => {
                self.parked = Parked::OnDashboard {
                    login: login.to_vec(),
                    at: Instant::now(),
                };
                debug!(
                    ms = started.elapsed().as_millis() as u64,
                    "pooled browser waits on the dashboard"
                );
                Ok(true)
            }
            found => {
                match found {
                    Ok(check) => debug!(?check, "a preloaded dashboard was not logged in"),
                    Err(e) => debug!(error = %e, "preloading the dashboard failed"),
                }
                self.wipe_within_timeout().await?;
                self.parked = Parked::Wiped;
                Ok(false)
            }
        }
    }

    /// Checks the browser holds exactly `cookies` (by name and value).
    async fn holds_exactly(&self, cookies: &[BrowserCookie]) -> Result<(), BrowserError> {
        let held = self
            .session
            .devtools_cookies()
            .await
            .map_err(|what| BrowserError::Dirty { what })?;
        if same_login(&held, cookies) {
            return Ok(());
        }
        let names = |v: &[BrowserCookie]| {
            v.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(BrowserError::Dirty {
            what: format!(
                "holds cookies [{}], not the login's [{}]",
                names(&held),
                names(cookies)
            ),
        })
    }

    async fn wipe_within_timeout(&mut self) -> Result<(), BrowserError> {
        tokio::time::timeout(WIPE_TIMEOUT, self.wipe())
            .await
            .map_err(|_| BrowserError::Dirty {
                what: format!("the wipe took over {} s", WIPE_TIMEOUT.as_secs()),
            })?
    }

    /// Clears everything one attempt can leave for the next, and checks it
    /// is gone, without loading any page: extra windows (refused: only a
    /// new browser is sure to be clean then); the tab itself, swapped for
    /// a new one, which unloads the last page and takes its history and
    /// session storage with it; every cookie, and the portal origin's local
    /// storage, IndexedDB, cache storage and service workers (DevTools
    /// `Storage.clearCookies`, `Storage.clearDataForOrigin`); the HTTP
    /// cache (`Network.clearBrowserCache`); and chromedriver's buffer of
    /// console messages.
    async fn wipe(&mut self) -> Result<(), BrowserError> {
        let dirty = |what: String| BrowserError::Dirty { what };
        let client = self.session.client()?;
        let windows = client
            .windows()
            .await
            .map_err(|e| BrowserError::cmd("listing the windows", e))?;
        if windows.len() != 1 {
            return Err(dirty(format!("{} windows are open", windows.len())));
        }
        let tab = client
            .new_window(true)
            .await
            .map_err(|e| BrowserError::cmd("opening a new tab", e))?;
        client
            .close_window()
            .await
            .map_err(|e| BrowserError::cmd("closing the last attempt's tab", e))?;
        client
            .switch_to_window(tab.handle)
            .await
            .map_err(|e| BrowserError::cmd("switching to the new tab", e))?;
        let cdp = |what: &'static str| move |e| dirty(format!("{what}: {e}"));
        self.session
            .cdp("Storage.clearCookies", json!({}))
            .await
            .map_err(cdp("Storage.clearCookies"))?;
        self.session
            .cdp(
                "Storage.clearDataForOrigin",
                json!({ "origin": self.origin()?, "storageTypes": "all" }),
            )
            .await
            .map_err(cdp("Storage.clearDataForOrigin"))?;
        // Responses the portal let the browser cache (none of its storage
        // types above holds them).
        self.session
            .cdp("Network.clearBrowserCache", json!({}))
            .await
            .map_err(cdp("Network.clearBrowserCache"))?;
        let left = self.session.devtools_cookies().await.map_err(dirty)?.len();
        if left > 0 {
            return Err(dirty(format!("{left} cookies survived the wipe")));
        }
        self.session
            .drain_console()
            .await
            .map_err(|e| dirty(format!("draining the console log: {e}")))?;
        Ok(())
    }

    /// The portal's origin, e.g. `http://127.0.0.1:8080`.
    fn origin(&self) -> Result<String, BrowserError> {
        url::Url::parse(&self.base_url)
            .map(|u| u.origin().ascii_serialization())
            .map_err(|e| BrowserError::BadUrl {
                base: self.base_url.clone(),
                path: String::new(),
                message: e.to_string(),
            })
    }

    /// Adds `cookies`, the master's current ones, for the portal's origin.
    ///
    /// A pooled browser sets them through DevTools (`Network.setCookies`),
    /// which needs no page of the portal open, and checks they arrived;
    /// its tab holds no storage of an earlier attempt, as
    /// [`wipe`](Self::wipe) replaced it. Otherwise, and on a driver that
    /// has no DevTools endpoint, over WebDriver: that can only add cookies
    /// to the current page's origin, so it first opens a cheap page of the
    /// portal (a pooled browser then clears that page's session and local
    /// storage too).
    async fn add_cookies(&mut self, cookies: Vec<BrowserCookie>) -> Result<usize, BrowserError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let cookies: Vec<BrowserCookie> = cookies
            .into_iter()
            .filter(|c| c.expiry.is_none_or(|e| e > now))
            .collect();
        if self.mode == CloneMode::Pooled {
            match self.set_cookies_over_cdp(&cookies).await {
                Ok(set) => return set,
                Err(e) => debug!(error = %e, "cookies not set through DevTools; over WebDriver"),
            }
        }
        let landing = self.open_portal_origin().await?;
        if self.mode == CloneMode::Pooled {
            self.clear_tab_storage(&landing).await?;
        }
        let mut added = 0;
        for cookie in cookies {
            if let Err(first) = self.session.add_cookie(&cookie).await {
                // A host-only cookie comes back with its host as domain,
                // which some drivers refuse for an IP address; without the
                // domain it is host-only again, as it was.
                let mut host_only = cookie.clone();
                host_only.domain = None;
                self.session.add_cookie(&host_only).await.map_err(|e| {
                    warn!(cookie = %cookie.name, error = %first, "cookie refused");
                    BrowserError::cmd(format!("adding cookie {} on {landing}", cookie.name), e)
                })?;
            }
            added += 1;
        }
        Ok(added)
    }

    /// Sets `cookies` for the portal's origin through DevTools and checks
    /// each is there and no other. A cookie without a domain, or with its
    /// host as domain, stays host-only; one for a parent domain keeps it.
    /// The outer error: DevTools could not do it (WebDriver may); the inner
    /// one: the browser holds a cookie the wipe should have removed, so it
    /// must be replaced.
    async fn set_cookies_over_cdp(
        &self,
        cookies: &[BrowserCookie],
    ) -> Result<Result<usize, BrowserError>, BrowserError> {
        let origin = self.origin()?;
        let params: Vec<serde_json::Value> = cookies
            .iter()
            .map(|c| {
                let path = c.path.as_deref().unwrap_or("/");
                let mut p = json!({
                    "name": c.name,
                    "value": c.value,
                    "url": format!("{origin}{path}"),
                    "path": path,
                });
                if let Some(domain) = c.domain.as_deref().filter(|d| d.starts_with('.')) {
                    p["domain"] = json!(domain);
                }
                if let Some(secure) = c.secure {
                    p["secure"] = json!(secure);
                }
                if let Some(http_only) = c.http_only {
                    p["httpOnly"] = json!(http_only);
                }
                if let Some(same_site) = &c.same_site {
                    p["sameSite"] = json!(same_site);
                }
                if let Some(expiry) = c.expiry {
                    p["expires"] = json!(expiry);
                }
                p
            })
            .collect();
        let failed = |what: String| BrowserError::Dirty { what };
        self.session
            .cdp("Network.setCookies", json!({ "cookies": params }))
            .await
            .map_err(|e| failed(format!("Network.setCookies: {e}")))?;
        let set = self.session.devtools_cookies().await.map_err(failed)?;
        let names: Vec<&str> = set.iter().map(|c| c.name.as_str()).collect();
        if let Some(missing) = cookies.iter().find(|c| !names.contains(&c.name.as_str())) {
            return Err(failed(format!("cookie {} was not set", missing.name)));
        }
        // The wipe ran before these were set (maybe a while ago, when the
        // browser was parked): anything more is left from an earlier attempt.
        if let Some(extra) = names
            .iter()
            .find(|n| !cookies.iter().any(|c| c.name == **n))
        {
            return Ok(Err(failed(format!("cookie {extra} survived the wipe"))));
        }
        Ok(Ok(cookies.len()))
    }

    /// Clears the current page's session and local storage and checks
    /// both are empty.
    async fn clear_tab_storage(&self, landing: &str) -> Result<(), BrowserError> {
        let left = self
            .session
            .client()?
            .execute(
                "sessionStorage.clear(); localStorage.clear(); \
                 return sessionStorage.length + localStorage.length;",
                vec![],
            )
            .await
            .map_err(|e| BrowserError::cmd(format!("clearing storage on {landing}"), e))?;
        match left.as_u64() {
            Some(0) => Ok(()),
            _ => Err(BrowserError::Dirty {
                what: format!("storage on {landing} not empty after clearing ({left})"),
            }),
        }
    }

    /// Lands on a page of the portal's origin: `/favicon.ico` (cheap), or,
    /// when that ends on a browser error page (an empty 404 is shown as
    /// Chromium's own page, of another origin), the login page.
    async fn open_portal_origin(&self) -> Result<String, BrowserError> {
        let client = self.session.client()?;
        let origin = self.origin()?;
        let mut tried = Vec::new();
        for path in ["/favicon.ico", self.profile.login.url.as_str()] {
            let landing = join_url(&self.base_url, path)?;
            client
                .goto(&landing)
                .await
                .map_err(|e| BrowserError::cmd(format!("opening {landing}"), e))?;
            let here = client
                .execute("return location.origin;", vec![])
                .await
                .map_err(|e| BrowserError::cmd(format!("reading the origin of {landing}"), e))?;
            if here.as_str() == Some(origin.as_str()) {
                debug!(%landing, "on the portal's origin");
                return Ok(landing);
            }
            tried.push(format!("{landing} ({here})"));
        }
        Err(BrowserError::OffOrigin {
            origin,
            tried: tried.join(", "),
        })
    }

    /// Opens the dashboard and decides, about a second after it loads,
    /// whether this copy is logged in.
    ///
    /// A pooled browser that [`reset_from`](Self::reset_from) found waiting
    /// on the dashboard (loaded less than its preload age ago) is not sent
    /// there again: the portal is asked for the dashboard in the page's
    /// background (a server-side answer about this session now, without
    /// rendering it) and the page is checked to still show it. Anything but
    /// a clear "logged in" there falls back to loading the dashboard.
    pub async fn check_session(&mut self) -> Result<SessionCheck, BrowserError> {
        let preloaded = self
            .preloaded_at
            .take()
            .is_some_and(|at| at.elapsed() <= self.preload_max_age);
        let confirmed = if preloaded {
            let client = self.session.client()?;
            match session::confirm_dashboard(client, &self.profile, &self.base_url).await {
                Ok(Ok(valid)) => Some(valid),
                Ok(Err(why)) => {
                    debug!(%why, "the preloaded dashboard is not confirmed; loading it");
                    None
                }
                Err(e) => {
                    debug!(error = %e, "the preloaded dashboard was not confirmed; loading it");
                    None
                }
            }
        } else {
            None
        };
        self.confirmed_preload = confirmed.is_some();
        let check = match confirmed {
            Some(valid) => Ok(valid),
            None => {
                session::check_session(self.session.client()?, &self.profile, &self.base_url).await
            }
        };
        self.opening = None;
        let check = check?;
        debug!(?check, "clone session checked");
        self.checked_url = match check {
            SessionCheck::Valid { .. } => {
                Some(join_url(&self.base_url, &self.profile.dashboard.url)?)
            }
            SessionCheck::Expired { .. } => None,
        };
        Ok(check)
    }

    /// Runs the profile's steps of one phase, in order, returning each
    /// step's timing. `read` steps fill `outputs`. `Phase::Submit` is
    /// refused: use [`prepare_submit`](Self::prepare_submit) and
    /// [`click_submit`](Self::click_submit).
    pub async fn run_phase(
        &mut self,
        phase: Phase,
        fields: &FieldValues,
        outputs: &mut Outputs,
    ) -> Result<Vec<StepTiming>, StepError> {
        if phase == Phase::Submit {
            // The submit click must go through prepare_submit/click_submit,
            // so the engine journals `submitted` between them and the click
            // is never retried.
            let step = self
                .profile
                .submit_step()
                .map_or("(submit)", |s| s.name.as_str());
            return Err(StepError::not_prepared(step));
        }
        let mut checked_url = self.checked_url.take();
        let runner = self.runner()?;
        let mut timings = Vec::new();
        let mut failed = None;
        for step in self.profile.steps_of(phase) {
            if !step.applies(fields) {
                debug!(step = %step.name, "step skipped: its `when` field is not set");
                timings.push(StepTiming {
                    step: step.name.clone(),
                    action: step.action,
                    phase: step.phase,
                    elapsed: Duration::ZERO,
                    skipped: true,
                });
                continue;
            }
            let started = Instant::now();
            // The session check has just loaded the dashboard and found it
            // logged in: a first step that opens it again would only ask
            // the portal for the same page.
            if let Some(loaded) = checked_url.take() {
                if step.action == crate::profile::Action::Goto
                    && step
                        .url
                        .as_deref()
                        .and_then(|u| join_url(&self.base_url, u).ok())
                        == Some(loaded)
                {
                    debug!(step = %step.name, "already on this page, loaded by the session check");
                    timings.push(StepTiming {
                        step: step.name.clone(),
                        action: step.action,
                        phase: step.phase,
                        elapsed: started.elapsed(),
                        skipped: false,
                    });
                    continue;
                }
            }
            match runner.run(step, fields, outputs).await {
                Ok(timing) => timings.push(timing),
                Err(e) => {
                    // The failed step's time counts too: a timeout is
                    // where an attempt's time often goes.
                    self.timings.extend(timings.iter().cloned());
                    self.timings.push(StepTiming {
                        step: step.name.clone(),
                        action: step.action,
                        phase: step.phase,
                        elapsed: started.elapsed(),
                        skipped: false,
                    });
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => {
                self.timings.extend(timings.iter().cloned());
                Ok(timings)
            }
        }
    }

    /// Readies the submit step: waits until its element is displayed and no
    /// loading mask is up, or (for `accept_alert`) until the confirm is
    /// open. Run before the engine journals `submitted`; a failure here is
    /// still a pre-submit failure.
    pub async fn prepare_submit(&mut self, fields: &FieldValues) -> Result<(), StepError> {
        let started = Instant::now();
        let runner = self.runner()?;
        let prepared = runner.prepare_submit(fields).await;
        if let Some(step) = self.profile.submit_step() {
            self.timings.push(StepTiming {
                step: format!("{} (ready)", step.name),
                action: step.action,
                phase: Phase::Submit,
                elapsed: started.elapsed(),
                skipped: false,
            });
        }
        self.submit = Some(prepared?);
        Ok(())
    }

    /// The submit step, once, on what [`prepare_submit`]
    /// (Self::prepare_submit) found (the click, or accepting the confirm);
    /// nothing else. Never retried: from here on any failure ends the job
    /// `failed_post_submission`.
    pub async fn click_submit(&mut self) -> Result<StepTiming, StepError> {
        let prepared = self.submit.take();
        let timing = self.runner()?.click_submit(prepared).await?;
        self.timings.push(timing.clone());
        Ok(timing)
    }

    /// The steps run (failed ones included, skipped ones not) since the
    /// last call, in order.
    pub fn take_timings(&mut self) -> Vec<StepTiming> {
        let mut taken = std::mem::take(&mut self.timings);
        taken.retain(|t| !t.skipped);
        taken
    }

    fn runner(&self) -> Result<StepRunner<'_>, StepError> {
        let client = self
            .session
            .client()
            .map_err(|e| StepError::browser_gone("(any)", e.to_string()))?;
        Ok(StepRunner::new(
            client,
            &self.session,
            &self.profile,
            &self.base_url,
        ))
    }

    /// How the login was carried over.
    pub fn mode(&self) -> CloneMode {
        self.mode
    }

    /// How many cookies were added from the master.
    pub fn cookies_added(&self) -> usize {
        self.cookies_added
    }

    /// Attempts this browser has been readied for: 1 for a fresh clone;
    /// for a pooled browser, its resets so far.
    pub fn attempts_served(&self) -> u32 {
        self.attempts_served
    }

    /// Whether the last [`check_session`](Self::check_session) confirmed
    /// a dashboard this pooled browser had preloaded (rather than loading
    /// one).
    pub fn confirmed_preload(&self) -> bool {
        self.confirmed_preload
    }

    /// The user agent it was started with.
    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }

    /// Parks a pooled browser between attempts: checks its process is
    /// alive, answers any alert the last page left open, and wipes it
    /// ([`wipe`](Self::wipe): a new blank tab for the old one, which stops
    /// the last page's scripts, and no cookie or storage left, each
    /// checked). So the next attempt starts on a clean browser without
    /// waiting for the wipe. An error means the browser must be replaced.
    pub async fn park(&mut self) -> Result<(), BrowserError> {
        if let Some(pid) = self.session.pid() {
            if !super::driver::pid_alive(pid) {
                return Err(BrowserError::Gone {
                    doing: "parking the pooled browser".into(),
                    message: format!("process {pid} has exited"),
                });
            }
        }
        self.submit = None;
        self.checked_url = None;
        // A page left with an open alert refuses the new tab: dismiss it.
        let _ = self.session.client()?.dismiss_alert().await;
        self.parked = Parked::Used;
        self.preloaded_at = None;
        self.wipe_within_timeout().await?;
        self.parked = Parked::Wiped;
        Ok(())
    }

    /// The job's folder (deleted on close).
    pub fn job_dir(&self) -> &Path {
        &self.job_dir
    }

    /// Chromium's process id (local mode).
    pub fn browser_pid(&self) -> Option<u32> {
        self.session.pid()
    }

    /// The WebDriver session id.
    pub fn session_id(&self) -> Option<&str> {
        self.session.session_id()
    }

    /// The WebDriver client, for what this type does not offer.
    pub fn client(&self) -> Result<&Client, BrowserError> {
        self.session.client()
    }

    /// A PNG of the current page, for failure artifacts.
    pub async fn screenshot(&self) -> Result<Vec<u8>, BrowserError> {
        self.session.screenshot().await
    }

    /// The current page's HTML, for failure artifacts.
    pub async fn page_source(&self) -> Result<String, BrowserError> {
        self.session.page_source().await
    }

    /// The current page's URL.
    pub async fn current_url(&self) -> Result<String, BrowserError> {
        self.client()?
            .current_url()
            .await
            .map(|u| u.to_string())
            .map_err(|e| BrowserError::cmd("reading the URL", e))
    }

    /// Ends the browser and deletes the job folder.
    pub async fn close(mut self) -> Result<(), BrowserError> {
        self.submit = None;
        self.session.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_leaves_out_locks_journals_and_caches() {
        let root = std::env::temp_dir().join(format!("fw-copy-{}", rand::random::<u64>()));
        let from = root.join("from");
        let to = root.join("to");
        let files = [
            "Local State",
            "SingletonLock",
            "SingletonSocket",
            "Default/Cookies",
            "Default/Cookies-journal",
            "Default/LOCK",
            "Default/x.lock",
            "Default/Local Storage/leveldb/000003.log",
            "Default/Cache/Cache_Data/data_0",
            "Default/Code Cache/js/index",
            "GPUCache/data_1",
            "Default/Service Worker/CacheStorage/a",
            "Default/Service Worker/Database/b",
        ];
        for f in files {
            let p = from.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f).unwrap();
        }
        copy_profile(&from, &to).unwrap();
        let kept = |f: &str| to.join(f).exists();
        assert!(kept("Local State"));
        assert!(kept("Default/Cookies"));
        assert!(kept("Default/Local Storage/leveldb/000003.log"));
        assert!(kept("Default/Service Worker/Database/b"));
        for gone in [
            "SingletonLock",
            "SingletonSocket",
            "Default/Cookies-journal",
            "Default/LOCK",
            "Default/x.lock",
            "Default/Cache",
            "Default/Code Cache",
            "GPUCache",
            "Default/Service Worker/CacheStorage",
        ] {
            assert!(!kept(gone), "{gone} was copied");
        }
        std::fs::remove_dir_all(root).unwrap();
    }
}
