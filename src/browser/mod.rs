//! The browser layer: real Chromium over WebDriver (fantoccini).
//!
//! Layout:
//! - [`driver`]: starts chromedriver on a free port (or uses a given
//!   WebDriver URL, e.g. a Selenium Grid) and opens browser sessions with
//!   formwright's fixed Chromium options.
//! - [`master`]: the master browser that holds the portal login.
//! - [`clone`]: job browsers, each a fresh copy of the master's login, and
//!   the quick check that a copy is still logged in.
//! - [`pool`]: the `pooled` clone strategy: warm job browsers, one per
//!   worker slot and a spare, wiped after each attempt and waiting on the
//!   dashboard with the master's cookies for the next.
//! - [`steps`]: runs a profile's form steps in a job browser, with the
//!   submit click split out so the engine can journal `submitted` right
//!   before it.
//! - `session`: what every browser shares: closing it for sure (also on
//!   drop, so a panicking job never leaks a browser or a profile folder),
//!   raw WebDriver commands, page probes.
//!
//! Why clone by profile copy *and* cookies: Chromium writes its cookie store
//! to disk lazily (about every 30 s), so a profile copied right after a
//! login carries no session; cookies read over WebDriver carry it at once.
//! The copy still brings local storage and the like. See "Cloning the login
//! into a job browser" in the design.
//!
//! How the engine drives one attempt:
//!
//! ```text
//! JobBrowser::clone_from   fresh copy of the master's login (fresh), or
//!   Pool::take + ready     a warm browser preloaded with the master's
//!                          current cookies, or wiped and given them
//! check_session            Expired -> join/start a recovery, fail the attempt
//!                          (a preloaded dashboard is confirmed, not loaded)
//! run_phase(PreSubmit)     fill the form
//! prepare_submit           submit element displayed, no mask (or, for an
//!                          accept_alert submit, the save confirm open)
//!   [engine journals `submitted` and flushes]
//! click_submit             the one click (or the confirm accepted)
//! run_phase(PostSubmit)    read proposal_no (failures: failed_post_submission)
//! close                    always (pooled: Pool::give_back parks it or
//!                          replaces it); Drop is only the safety net
//! ```
//!
//! Known limits:
//! - The master's cookies are read through DevTools (every cookie of the
//!   portal's host). Without DevTools they are read with W3C Get All
//!   Cookies, which returns those of the master's current page: a cookie
//!   scoped to another path than the dashboard's is then not carried (the
//!   profile copy may still carry it in local mode).
//! - A pooled browser gets its cookies through DevTools, on no page. Other
//!   browsers (and a pooled one whose driver has no DevTools endpoint) get
//!   them over WebDriver, on `/favicon.ico` when that is a page of the
//!   portal's origin, else on the login page (an empty 404 shows Chromium's
//!   own error page, whose origin is not the portal's).
//! - `kendo_select` finds items in the list's DOM; a virtualised Kendo list
//!   that renders only the visible items would need scrolling (not done).
//! - Frames: `enter_frame` is relative to the current frame, `leave_frame`
//!   returns to the top document; shadow DOM is not reached.
//! - chromedriver's own log is discarded: at its default level it records
//!   typed text, which would put passwords and personal data on disk.

pub mod clone;
pub mod driver;
pub mod evidence;
pub mod master;
pub(crate) mod plain_http;
pub mod pool;
pub mod portal;
mod session;
pub mod steps;

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::error::CmdError;

pub use clone::{CloneMode, JobBrowser, SessionCheck};
pub use driver::Driver;
pub use master::{Credentials, LoginError, Master};
pub use pool::{CloneSettings, CloneStrategy, PoolStats};
pub use session::BrowserCookie;
pub use steps::{Outputs, StepError, StepFailure, StepTiming};

/// Where the browser binaries are and how sessions are opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserConfig {
    /// Chromium binary, sent as `goog:chromeOptions.binary`. In remote mode
    /// it names the binary on the remote node; an empty path leaves the
    /// choice to the node.
    pub chromium: PathBuf,
    /// chromedriver binary, started when `webdriver_url` is `None`.
    pub chromedriver: PathBuf,
    /// A running WebDriver server (remote mode: no shared disk, clones by
    /// cookie transfer alone).
    pub webdriver_url: Option<String>,
    /// Where local profiles and job folders go by default.
    pub work_dir: PathBuf,
    /// Run without a window (the default; `false` only for debugging).
    pub headless: bool,
}

impl BrowserConfig {
    /// The master's profile folder under `work_dir`.
    pub fn master_profile_dir(&self) -> PathBuf {
        self.work_dir.join("master-profile")
    }

    /// Where the job browsers' folders go.
    pub fn jobs_dir(&self) -> PathBuf {
        self.work_dir.join("jobs")
    }

    /// The folder of the warm pool's browsers, each in its own subfolder.
    pub fn pool_dir(&self) -> PathBuf {
        self.work_dir.join("pool")
    }

    /// A fresh folder for one attempt of one job under `work_dir`; the job
    /// browser deletes it when it closes.
    pub fn job_dir(&self, job_id: &str, attempt: u32) -> PathBuf {
        let safe: String = job_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.jobs_dir().join(format!("{safe}-{attempt}"))
    }
}

impl Default for BrowserConfig {
    fn default() -> Self {
        BrowserConfig {
            chromium: PathBuf::from("/usr/bin/chromium"),
            chromedriver: PathBuf::from("/usr/bin/chromedriver"),
            webdriver_url: None,
            work_dir: std::env::temp_dir().join("formwright"),
            headless: true,
        }
    }
}

/// Errors of the browser layer outside form steps (those are
/// [`StepError`]s). Each carries the URL, path or selector involved.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// A browser binary is missing.
    #[error(
        "{} not found: install the `chromium` and `chromium-driver` packages \
         (or set webdriver_url to a running WebDriver)",
        .binary.display()
    )]
    MissingBinary {
        /// The path looked at.
        binary: PathBuf,
    },
    /// chromedriver could not be started.
    #[error("cannot start chromedriver {}: {message}", .binary.display())]
    DriverStart {
        /// The binary.
        binary: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The WebDriver server did not answer ready in time.
    #[error("WebDriver at {url} not ready after {} ms: {last}", .waited.as_millis())]
    DriverNotReady {
        /// The server.
        url: String,
        /// How long it was polled.
        waited: Duration,
        /// The last answer or error.
        last: String,
    },
    /// A browser session could not be opened.
    #[error("cannot open a browser at {url}: {message}")]
    NewSession {
        /// The WebDriver server.
        url: String,
        /// What the server said.
        message: String,
    },
    /// A WebDriver command failed.
    #[error("{doing}: {source}")]
    Command {
        /// What formwright was doing, with the URL or selector.
        doing: String,
        /// fantoccini's error.
        source: CmdError,
    },
    /// The browser or its session is gone (crashed, killed, closed).
    #[error("the browser is gone ({doing}): {message}")]
    Gone {
        /// What formwright was doing.
        doing: String,
        /// What WebDriver said.
        message: String,
    },
    /// A page did not show what was waited for.
    #[error("{doing}: {what} did not appear within {} ms (at {url})", .waited.as_millis())]
    TimedOut {
        /// What formwright was doing.
        doing: String,
        /// What was waited for (a selector).
        what: String,
        /// The page's URL.
        url: String,
        /// How long.
        waited: Duration,
    },
    /// The session check saw neither the dashboard nor the login form.
    #[error(
        "session check at {url}: neither {ready} nor {login} appeared within {} ms",
        .waited.as_millis()
    )]
    CheckUndecided {
        /// The page's URL.
        url: String,
        /// `dashboard.ready`.
        ready: String,
        /// `login.username`.
        login: String,
        /// How long after navigation started.
        waited: Duration,
    },
    /// No page of the portal's origin could be opened to add cookies on.
    #[error("cannot land on a page of {origin} to add cookies (tried {tried})")]
    OffOrigin {
        /// The portal's origin.
        origin: String,
        /// The URLs tried and the origin each ended on.
        tried: String,
    },
    /// A file operation on a profile or job folder failed.
    #[error("{doing} {}: {source}", .path.display())]
    Io {
        /// What formwright was doing.
        doing: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A pooled browser could not be wiped, or the wipe could not be
    /// verified; the pool replaces it.
    #[error("the pooled browser cannot be reused: {what}")]
    Dirty {
        /// What was left or what failed.
        what: String,
    },
    /// A URL could not be built from the base URL and a profile path.
    #[error("bad URL {base} + {path}: {message}")]
    BadUrl {
        /// The base URL.
        base: String,
        /// The profile path.
        path: String,
        /// The parse error.
        message: String,
    },
}

impl BrowserError {
    /// Whether the browser (or its WebDriver session) is gone; the engine
    /// then fails the attempt without taking a screenshot.
    pub fn is_browser_gone(&self) -> bool {
        match self {
            BrowserError::Gone { .. } => true,
            BrowserError::Command { source, .. } => cmd_is_gone(source),
            _ => false,
        }
    }

    /// Wraps a WebDriver error, sorting "browser gone" out.
    pub(crate) fn cmd(doing: impl Into<String>, source: CmdError) -> BrowserError {
        let doing = doing.into();
        if cmd_is_gone(&source) {
            BrowserError::Gone {
                doing,
                message: source.to_string(),
            }
        } else {
            BrowserError::Command { doing, source }
        }
    }
}

/// Whether a WebDriver error means the browser or session no longer exists.
pub(crate) fn cmd_is_gone(e: &CmdError) -> bool {
    match e {
        CmdError::Lost(_) | CmdError::Failed(_) | CmdError::FailedC(_) => true,
        CmdError::Standard(w) => {
            let m = w.message.to_ascii_lowercase();
            e.is_invalid_session_id()
                || e.is_no_such_window()
                || [
                    "chrome not reachable",
                    "disconnected",
                    "session deleted",
                    "target crashed",
                    "tab crashed",
                    "not connected to devtools",
                    "no such session",
                ]
                .iter()
                .any(|p| m.contains(p))
        }
        _ => false,
    }
}

/// Joins a profile path to the portal's base URL.
pub(crate) fn join_url(base: &str, path: &str) -> Result<String, BrowserError> {
    let bad = |message: String| BrowserError::BadUrl {
        base: base.to_string(),
        path: path.to_string(),
        message,
    };
    let base_url = url::Url::parse(base).map_err(|e| bad(e.to_string()))?;
    base_url
        .join(path)
        .map(|u| u.to_string())
        .map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_dirs_are_safe_names_under_the_work_dir() {
        let c = BrowserConfig {
            work_dir: "/w".into(),
            ..BrowserConfig::default()
        };
        assert_eq!(
            c.job_dir("a/../b c", 2),
            PathBuf::from("/w/jobs/a____b_c-2")
        );
        assert_eq!(c.master_profile_dir(), PathBuf::from("/w/master-profile"));
    }

    #[test]
    fn joins_paths_to_the_base() {
        let j = |b: &str, p: &str| join_url(b, p).unwrap();
        assert_eq!(
            j("http://h:1", "/Login/IMDLogin"),
            "http://h:1/Login/IMDLogin"
        );
        assert_eq!(j("http://h:1/portal/", "/x?a=1"), "http://h:1/x?a=1");
        assert_eq!(j("http://h:1", "http://other/x"), "http://other/x");
        assert!(join_url("not a url", "/x").is_err());
    }
}
