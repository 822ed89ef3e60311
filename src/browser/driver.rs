//! The WebDriver server: a chromedriver formwright starts (local mode) or
//! one it is given (remote mode, e.g. Selenium Grid).
//!
//! Local chromedriver runs in its own process group, so killing the group
//! also ends every Chromium it started: a daemon or test that dies holding
//! browsers leaves none behind once its `Driver` is dropped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Map, Value as Json};
use tracing::{debug, info, warn};

use super::session::Session;
use super::{plain_http, BrowserConfig, BrowserError};

/// How long chromedriver may take to answer ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How often `/status` is polled while it starts.
const START_POLL: Duration = Duration::from_millis(50);

/// Window size of every browser: fixed, so pages lay out (and screenshots
/// look) the same in every run.
pub const WINDOW_SIZE: (u32, u32) = (1280, 900);

/// Page-load limit sent to WebDriver: a hung portal page fails the step
/// instead of blocking for WebDriver's default five minutes.
const PAGE_LOAD_TIMEOUT_MS: u64 = 30_000;

/// A WebDriver server and the means to open browsers on it.
#[derive(Debug)]
pub struct Driver {
    url: String,
    child: Option<tokio::process::Child>,
    config: BrowserConfig,
}

impl Driver {
    /// Starts chromedriver on a free port and waits until it is ready, or,
    /// with `config.webdriver_url`, checks that the given server answers.
    pub async fn start(config: &BrowserConfig) -> Result<Driver, BrowserError> {
        match &config.webdriver_url {
            Some(url) => {
                let url = with_slash(url);
                wait_ready(&url, None).await?;
                info!(%url, "using remote WebDriver");
                Ok(Driver {
                    url,
                    child: None,
                    config: config.clone(),
                })
            }
            None => Self::spawn(config).await,
        }
    }

    async fn spawn(config: &BrowserConfig) -> Result<Driver, BrowserError> {
        for binary in [&config.chromedriver, &config.chromium] {
            if !binary.is_file() {
                return Err(BrowserError::MissingBinary {
                    binary: binary.clone(),
                });
            }
        }
        let start_err = |message: String| BrowserError::DriverStart {
            binary: config.chromedriver.clone(),
            message,
        };

        // Bind port 0 to learn a free port, then hand it over. Another
        // process could take it in between; then chromedriver fails to
        // bind and the readiness wait reports its exit.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| start_err(format!("no free port: {e}")))?
            .port();

        // chromedriver and the browsers it starts inherit its environment:
        // keep formwright's secrets out of it, and Chromium's temporary
        // folders inside the work folder rather than the shared /tmp.
        let tmp = config.work_dir.join("tmp");
        crate::owner_only::create_dir_all(&tmp)
            .map_err(|e| start_err(format!("{}: {e}", tmp.display())))?;
        let mut command = tokio::process::Command::new(&config.chromedriver);
        for (name, _) in std::env::vars_os() {
            let secret = name
                .to_str()
                .is_some_and(|n| n.starts_with("FORMWRIGHT_") || n.starts_with("AWS_"));
            if secret {
                command.env_remove(name);
            }
        }
        let mut child = command
            .env("TMPDIR", &tmp)
            .arg(format!("--port={port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| start_err(e.to_string()))?;

        let url = format!("http://127.0.0.1:{port}/");
        if let Err(e) = wait_ready(&url, Some(&mut child)).await {
            kill_group(child.id());
            return Err(e);
        }
        info!(%url, pid = child.id(), "chromedriver started");
        Ok(Driver {
            url,
            child: Some(child),
            config: config.clone(),
        })
    }

    /// The WebDriver server's URL (ends with `/`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the server was given (remote mode) rather than started.
    pub fn is_remote(&self) -> bool {
        self.config.webdriver_url.is_some()
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &BrowserConfig {
        &self.config
    }

    /// chromedriver's process id (local mode).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Stops a local chromedriver and every browser it started. Remote
    /// servers are left alone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id());
            let _ = child.wait().await;
            info!(url = %self.url, "chromedriver stopped");
        }
    }

    /// The capabilities of every session: the fixed Chromium options,
    /// plus the profile folder (local mode) and the user agent (clones).
    pub fn capabilities(
        &self,
        user_data_dir: Option<&Path>,
        user_agent: Option<&str>,
    ) -> Map<String, Json> {
        let mut args: Vec<String> = Vec::new();
        if self.config.headless {
            args.push("--headless=new".into());
        }
        args.extend(
            [
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--password-store=basic",
            ]
            .map(String::from),
        );
        args.push(format!("--window-size={},{}", WINDOW_SIZE.0, WINDOW_SIZE.1));
        if let Some(dir) = user_data_dir {
            args.push(format!("--user-data-dir={}", dir.display()));
        }
        if let Some(ua) = user_agent {
            args.push(format!("--user-agent={ua}"));
        }

        let mut chrome = Map::new();
        if !self.config.chromium.as_os_str().is_empty() {
            chrome.insert(
                "binary".into(),
                self.config.chromium.display().to_string().into(),
            );
        }
        chrome.insert("args".into(), args.into());

        let mut caps = Map::new();
        caps.insert("browserName".into(), "chrome".into());
        caps.insert("pageLoadStrategy".into(), "normal".into());
        // Leave alerts open for the `accept_alert` step; other commands fail
        // with "unexpected alert open" instead of dismissing them unseen.
        caps.insert("unhandledPromptBehavior".into(), "ignore".into());
        caps.insert(
            "timeouts".into(),
            json!({ "pageLoad": PAGE_LOAD_TIMEOUT_MS, "script": 10_000, "implicit": 0 }),
        );
        caps.insert("goog:chromeOptions".into(), Json::Object(chrome));
        // The console log, read as failure evidence.
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        caps
    }

    /// Opens a browser. `user_data_dir` is used in local mode only;
    /// `owned_dir` is deleted when the session closes.
    pub(crate) async fn open_session(
        &self,
        label: &str,
        user_data_dir: Option<&Path>,
        user_agent: Option<&str>,
        owned_dir: Option<PathBuf>,
    ) -> Result<Session, BrowserError> {
        let local_dir = if self.is_remote() {
            None
        } else {
            user_data_dir
        };
        let caps = self.capabilities(local_dir, user_agent);
        let new_session = |message: String| BrowserError::NewSession {
            url: self.url.clone(),
            message,
        };
        let client: Client = match ClientBuilder::rustls() {
            Ok(mut builder) => builder.capabilities(caps).connect(&self.url).await,
            // No system root certificates: a plain-HTTP connector still
            // reaches a local or in-cluster WebDriver.
            Err(_) => {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&self.url)
                    .await
            }
        }
        .map_err(|e| new_session(e.to_string()))?;

        let session_id = client.session_id().await.ok().flatten();
        let pid = local_dir.and_then(find_browser_pid);
        debug!(label, ?session_id, ?pid, "browser opened");
        Ok(Session::new(label, client, pid, session_id, owned_dir))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            kill_group(child.id());
        }
    }
}

fn with_slash(url: &str) -> String {
    if url.ends_with('/') {
        url.to_string()
    } else {
        format!("{url}/")
    }
}

/// Polls `/status` until it says ready; a local child that exits first is
/// reported at once.
async fn wait_ready(
    url: &str,
    mut child: Option<&mut tokio::process::Child>,
) -> Result<(), BrowserError> {
    let started = Instant::now();
    let status_url = format!("{url}status");
    loop {
        if let Some(child) = child.as_deref_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(BrowserError::DriverNotReady {
                    url: url.to_string(),
                    waited: started.elapsed(),
                    last: format!("chromedriver exited with {status}"),
                });
            }
        }
        let reply = plain_http::send(
            http::Method::GET,
            &status_url,
            None,
            Vec::new(),
            Duration::from_secs(2),
        )
        .await;
        let last = match reply {
            Ok(r) => {
                let body: Json = serde_json::from_slice(&r.body).unwrap_or(Json::Null);
                if body["value"]["ready"] == Json::Bool(true) {
                    return Ok(());
                }
                format!("HTTP {}: {}", r.status, body["value"]["message"])
            }
            Err(e) => e,
        };
        if started.elapsed() > START_TIMEOUT {
            return Err(BrowserError::DriverNotReady {
                url: url.to_string(),
                waited: started.elapsed(),
                last,
            });
        }
        tokio::time::sleep(START_POLL).await;
    }
}

/// Kills a process group (chromedriver and the browsers it started).
pub(crate) fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    // SAFETY: kill(2) has no memory effects; a negative pid names the
    // process group chromedriver leads (spawned with process_group(0)).
    let rc = unsafe { libc::kill(-pid, libc::SIGKILL) };
    if rc != 0 {
        warn!(pid, "could not kill chromedriver's process group");
    }
}

/// Kills one process (a browser whose session could not be closed).
pub(crate) fn kill_pid(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Whether a process still runs (a zombie counts as gone).
pub(crate) fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.trim().chars().next());
            !matches!(state, Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

/// Claims `work_dir` for this process until the returned file is dropped
/// (or the process dies, however it dies): an exclusive `flock` on
/// `work_dir/formwright.lock`. A start ends every browser a previous run
/// left on its work folder ([`end_leftovers`]), so a second daemon on the
/// same folder would end the first one's browsers; it is refused instead.
pub(crate) fn claim_work_dir(work_dir: &Path) -> Result<std::fs::File, String> {
    let path = work_dir.join("formwright.lock");
    let fail =
        |e: std::io::Error| format!("cannot claim the work folder {}: {e}", work_dir.display());
    crate::owner_only::create_dir_all(work_dir).map_err(fail)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(fail)?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on a descriptor this function owns; no memory effects.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            format!(
                "the work folder {} is in use by another formwright process",
                work_dir.display()
            )
        } else {
            fail(e)
        });
    }
    Ok(file)
}

/// Ends what an earlier run on `work_dir` left running. A daemon killed
/// outright (SIGKILL, a crash, the OOM killer) cannot end its chromedriver
/// or the Chromium processes under it: they run on, and the old master
/// browser keeps its profile's lock, so a new browser on that profile exits
/// at once and the first login falls through to a fresh profile. They are
/// known by what only formwright gives them: Chromium's `--user-data-dir`
/// inside `work_dir`, chromedriver's `TMPDIR` (`work_dir/tmp`). Each is
/// killed with its process group (the old chromedriver's, which holds its
/// browsers), never this process's own. Returns how many were found; waits
/// (up to a few seconds) until they are gone.
pub(crate) fn end_leftovers(work_dir: &Path) -> usize {
    let own_pid = std::process::id();
    // SAFETY: getpgrp(2) has no memory effects and cannot fail.
    let own_group = unsafe { libc::getpgrp() };
    let profiles = format!("--user-data-dir={}/", work_dir.display());
    let tmp = format!("TMPDIR={}", work_dir.join("tmp").display());
    let mut found = Vec::new();
    for pid in pids() {
        if pid == own_pid {
            continue;
        }
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let args = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
        let browser = args
            .split(|b| *b == 0)
            .any(|a| a.starts_with(profiles.as_bytes()));
        let driver = !browser
            && std::fs::read(proc_dir.join("environ"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .any(|v| v == tmp.as_bytes());
        if browser || driver {
            found.push(pid);
        }
    }
    for &pid in &found {
        match process_group(pid) {
            Some(group) if group > 1 && group != own_group => {
                // SAFETY: kill(2) has no memory effects; a negative pid names
                // a process group.
                unsafe {
                    libc::kill(-group, libc::SIGKILL);
                }
            }
            _ => kill_pid(pid),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while found.iter().any(|&p| pid_alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    found.len()
}

/// Every process id in /proc.
fn pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// A process's group, from /proc.
fn process_group(pid: u32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command name: state, parent, group.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// The main Chromium process using a profile folder: the one whose command
/// line has `--user-data-dir=<dir>` and no `--type=` (helpers have one).
pub(crate) fn find_browser_pid(dir: &Path) -> Option<u32> {
    let wanted = format!("--user-data-dir={}", dir.display());
    for pid in pids() {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let has_dir = args.contains(&wanted.as_bytes());
        let helper = args.iter().any(|a| a.starts_with(b"--type="));
        if has_dir && !helper {
            return Some(pid);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_work_folder_is_refused_until_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let first = claim_work_dir(&work).unwrap();
        let refused = claim_work_dir(&work).unwrap_err();
        assert!(
            refused.contains("in use by another formwright process")
                && refused.contains(&work.display().to_string()),
            "{refused}"
        );
        drop(first);
        claim_work_dir(&work).expect("free again once the claim is dropped");
    }

    #[test]
    fn capabilities_carry_the_fixed_options() {
        let driver = Driver {
            url: "http://127.0.0.1:1/".into(),
            child: None,
            config: BrowserConfig::default(),
        };
        let caps = driver.capabilities(Some(Path::new("/tmp/p")), Some("UA/1"));
        let args = caps["goog:chromeOptions"]["args"].as_array().unwrap();
        let args: Vec<&str> = args.iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(args[0], "--headless=new");
        assert!(args.contains(&"--password-store=basic"));
        assert!(args.contains(&"--user-data-dir=/tmp/p"));
        assert!(args.contains(&"--user-agent=UA/1"));
        assert!(args.contains(&"--window-size=1280,900"));
        assert_eq!(caps["goog:chromeOptions"]["binary"], "/usr/bin/chromium");
        assert_eq!(caps["pageLoadStrategy"], "normal");
    }

    #[tokio::test]
    async fn missing_binary_says_what_to_install() {
        let config = BrowserConfig {
            chromedriver: "/nonexistent/chromedriver".into(),
            ..BrowserConfig::default()
        };
        let err = Driver::start(&config).await.unwrap_err().to_string();
        assert!(err.contains("chromium-driver"), "{err}");
        assert!(err.contains("/nonexistent/chromedriver"), "{err}");
    }
}
