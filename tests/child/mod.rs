//! What the crash-torture and chaos runs share: `formwright run` as a child
//! process against a simulated portal that lives in the test process (so it
//! outlives every kill), its log read line by line, the whole process tree
//! killed with SIGKILL, and a stream of distinct jobs sent over the API.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use crate::common::{example_jobs, request, Reply, SIM_PROFILE, TOKEN};

pub const PASSWORD: &str = "torture-portal-password";

/// Prints a line of the run's figures. Straight to stderr, past the test
/// harness's capture, so CI's log shows them for a passing run too.
pub fn say(line: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A seed from `var`, or one made from the clock; printed either way so a
/// failing run can be replayed.
pub fn seed(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 % 1_000_000)
        });
    say(format!(
        "{var}={seed}  (set it to replay this run's aims and pauses)"
    ));
    seed
}

/// Fails loudly when the browsers the runs need are missing.
pub fn require_browsers() {
    for binary in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(binary).is_file(),
            "{binary} is missing: run scripts/setup (these runs never skip)"
        );
    }
}

/// The files of one daemon's home: configuration, profile, journal, work.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    /// Every daemon run's log, one after another, kept after the test.
    pub log_file: PathBuf,
}

impl Home {
    /// Writes a configuration for `sim_url`; `engine` is the `[engine]`
    /// section's body.
    pub fn new(name: &str, sim_url: &str, engine: &str) -> Home {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("sim.toml");
        std::fs::write(&profile, SIM_PROFILE).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("formwright.toml");
        let text = format!(
            "journal_dir = {:?}\nwork_dir = {:?}\nprofile = {:?}\n\
             log_filter = \"formwright=debug,warn\"\n\
             [portal]\nusername = \"agent01\"\nbase_url = {sim_url:?}\n\
             [engine]\n{engine}\n[api]\nport = {port}\n",
            dir.path().join("journal"),
            dir.path().join("work"),
            profile,
        );
        std::fs::write(&config, text).unwrap();
        let log_file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.log"));
        std::fs::write(&log_file, "").unwrap();
        Home {
            dir,
            config,
            port,
            log_file,
        }
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The daemon's log so far, one entry per line, shared with the thread
/// that reads its stderr.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<(Instant, String)>>>);

impl Log {
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn line(&self, i: usize) -> String {
        self.0.lock().unwrap()[i].1.clone()
    }

    /// The first line at or after `from` that contains `what`.
    pub fn find(&self, from: usize, what: &str) -> Option<(usize, String)> {
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, (_, l))| l.contains(what))
            .map(|(i, (_, l))| (i, l.clone()))
    }

    /// Whether a line at or after `from` passes `test`.
    pub fn any_line(&self, from: usize, test: impl Fn(&str) -> bool) -> bool {
        let lines = self.0.lock().unwrap();
        lines.iter().skip(from).any(|(_, l)| test(l))
    }

    pub fn any_since(&self, from: usize, what: &str) -> bool {
        self.find(from, what).is_some()
    }

    /// The last `n` lines, for a failure message.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.0.lock().unwrap();
        let start = lines.len().saturating_sub(n);
        lines[start..]
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One run of `formwright run`.
pub struct Daemon {
    child: Child,
    pub log: Log,
    pub started: Instant,
    log_file: PathBuf,
}

impl Daemon {
    /// Starts the daemon in its own process group.
    pub fn start(home: &Home) -> Daemon {
        let mut command = Command::new(env!("CARGO_BIN_EXE_formwright"));
        // The run's own settings (seeds, kill counts) are not the daemon's.
        for (name, _) in std::env::vars() {
            if name.starts_with("FORMWRIGHT_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .arg("run")
            .arg("--config")
            .arg(&home.config)
            .env("FORMWRIGHT_PORTAL_PASSWORD", PASSWORD)
            .env("FORMWRIGHT_API_TOKEN", TOKEN)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("formwright run starts");
        let log = Log::default();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.0.lock().unwrap().push((Instant::now(), line));
            }
        });
        Daemon {
            child,
            log,
            started: Instant::now(),
            log_file: home.log_file.clone(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the daemon process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for a line containing `what` at or after line `from`.
    pub async fn wait_for(
        &mut self,
        from: usize,
        what: &str,
        timeout: Duration,
    ) -> Option<(usize, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.log.find(from, what) {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "the daemon exited ({status}) while waiting for {what:?}:\n{}",
                    self.log.tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the master session is logged in, at start or after a
    /// recovery; panics (a daemon that will not come back) after `timeout`.
    pub async fn wait_ready(&mut self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            for what in ["master session logged in", "master session recovered"] {
                if let Some((i, _)) = self.log.find(0, what) {
                    return i;
                }
            }
            if let Some(status) = self.exited() {
                panic!(
                    "the daemon exited ({status}) before logging in:\n{}",
                    self.log.tail(40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not log in within {timeout:?} of its start:\n{}",
                self.log.tail(40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL to the daemon and to every process under it (chromedriver
    /// runs in a process group of its own, Chromium under it), so nothing
    /// of this run survives to hold the profile or the port.
    pub fn kill(mut self, work: &Path) {
        let tree = descendants(self.pid());
        kill(-(self.pid() as i32));
        for p in &tree {
            kill(-(p.pgrp as i32));
            kill(p.pid as i32);
        }
        let _ = self.child.wait();
        reap_strays(work);
    }

    /// SIGKILL to the daemon alone: chromedriver and Chromium run on, as
    /// after a crash, for the next start to end.
    pub fn kill_alone(mut self) {
        kill(self.pid() as i32);
        let _ = self.child.wait();
    }

    /// SIGTERM and a wait for a clean exit; panics after `timeout`.
    pub fn stop(mut self, timeout: Duration) -> std::process::ExitStatus {
        kill_with(self.pid() as i32, libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop within {timeout:?} of SIGTERM:\n{}",
                self.log.tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// chromedriver and every Chromium main process under the daemon.
    pub fn browsers(&self) -> (Vec<u32>, Vec<Proc>) {
        let tree = descendants(self.pid());
        let drivers = tree
            .iter()
            .filter(|p| p.comm == "chromedriver")
            .map(|p| p.pid)
            .collect();
        let browsers = tree.into_iter().filter(|p| p.is_browser_main()).collect();
        (drivers, browsers)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log_file)
        {
            let lines = self.log.0.lock().unwrap();
            let _ = writeln!(file, "==== daemon pid {} ====", self.child.id());
            for (_, line) in lines.iter() {
                let _ = writeln!(file, "{line}");
            }
        }
        // A panicking test still leaves no browser behind.
        if self.exited().is_none() {
            for p in descendants(self.pid()) {
                kill(-(p.pgrp as i32));
                kill(p.pid as i32);
            }
            kill(-(self.pid() as i32));
            let _ = self.child.wait();
        }
    }
}

/// One process, as /proc shows it.
#[derive(Clone, Debug)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    pub comm: String,
    pub cmdline: Vec<String>,
}

impl Proc {
    /// A Chromium browser process (not a renderer or other helper).
    pub fn is_browser_main(&self) -> bool {
        self.cmdline
            .iter()
            .any(|a| a.starts_with("--user-data-dir="))
            && !self.cmdline.iter().any(|a| a.starts_with("--type="))
    }

    /// The profile folder a browser runs on.
    pub fn user_data_dir(&self) -> Option<&str> {
        self.cmdline
            .iter()
            .find_map(|a| a.strip_prefix("--user-data-dir="))
    }
}

/// Every process on the machine that this user can read.
pub fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if rest.len() < 3 || matches!(rest[0], "Z" | "X") {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.push(Proc {
            pid,
            ppid: rest[1].parse().unwrap_or(0),
            pgrp: rest[2].parse().unwrap_or(0),
            comm,
            cmdline,
        });
    }
    out
}

/// Every process below `root`.
pub fn descendants(root: u32) -> Vec<Proc> {
    let all = processes();
    let mut children: BTreeMap<u32, Vec<&Proc>> = BTreeMap::new();
    for p in &all {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            out.push((*child).clone());
            todo.push(child.pid);
        }
    }
    out
}

/// Processes that use `work` (Chromium on one of its profiles, or a
/// chromedriver whose temporary folder is there), whatever their parent.
pub fn strays(work: &Path) -> Vec<Proc> {
    let work = work.display().to_string();
    processes()
        .into_iter()
        .filter(|p| {
            p.cmdline.iter().any(|a| a.contains(&work))
                || (p.comm == "chromedriver"
                    && std::fs::read(format!("/proc/{}/environ", p.pid))
                        .is_ok_and(|env| env.windows(work.len()).any(|w| w == work.as_bytes())))
        })
        .collect()
}

/// Kills whatever still uses `work`, until nothing does.
pub fn reap_strays(work: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = strays(work);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes using {} survive SIGKILL: {left:?}",
            work.display()
        );
        for p in left {
            kill(p.pid as i32);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn kill(pid: i32) {
    kill_with(pid, libc::SIGKILL);
}

fn kill_with(pid: i32, signal: i32) {
    if pid == 0 || pid == -1 {
        return;
    }
    // SAFETY: kill(2) has no memory effects.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Job number `n` of a run: an example document with its own id, engine
/// number and chassis number, so the ledger tells jobs apart.
pub fn job(examples: &[Value], prefix: &str, n: usize) -> (String, String, Value) {
    let mut doc = examples[n % examples.len()].clone();
    let id = format!("{prefix}-{n:04}");
    let chassis = format!("CH{prefix}{n:06}").to_uppercase();
    doc["policyId"] = Value::String(id.clone());
    doc["chassisNumber"] = Value::String(chassis.clone());
    doc["engineNumber"] = Value::String(format!("EN{prefix}{n:06}").to_uppercase());
    (id, chassis, doc)
}

/// Sends one job; true when the daemon took it (201 or 200).
pub async fn submit(api: &str, doc: &Value) -> Reply {
    request(
        "POST",
        &format!("{api}/api/jobs"),
        Some(TOKEN),
        Some(doc.to_string()),
        &[],
    )
    .await
}

/// Counts by status from `GET /api/jobs/stats`.
pub async fn stats(api: &str) -> Value {
    let r = request(
        "GET",
        &format!("{api}/api/jobs/stats"),
        Some(TOKEN),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

/// Prints a table: a header row and rows, columns padded.
pub fn table(title: &str, rows: &[(String, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    say(format!("\n{title}"));
    say("-".repeat(width + 12));
    for (k, v) in rows {
        say(format!("{k:<width$}  {v:>8}"));
    }
}
