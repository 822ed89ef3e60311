//! The portal password and the API token never show in logs, the journal,
//! exports or API answers (error bodies included). Runs the whole daemon
//! (`formwright run`'s `Daemon`) on real headless Chromium against the
//! simulated portal, with every log line captured at trace level.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{job, request};
use formwright::cli::run::Daemon;
use formwright::config::{DaemonConfig, Secrets, ENV_PORTAL_PASSWORD};
use formwright::export::record_to_json;
use formwright::journal::JobId;
use formwright::portal_sim::{PortalSim, SimConfig};

const PASSWORD: &str = "pw-Zq81-portal-secret";
const TOKEN: &str = "tok-7Hc2-api-secret-0123456789";

/// A log sink the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

fn assert_clean(what: &str, haystack: &[u8]) {
    for secret in [PASSWORD, TOKEN] {
        let found = haystack
            .windows(secret.len())
            .any(|w| w == secret.as_bytes());
        assert!(!found, "{what} contains a secret");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_journal_exports_and_answers() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter("formwright=trace,debug")
        .with_writer(logs.clone())
        .with_ansi(false)
        .init();

    let sim = PortalSim::start(SimConfig {
        password: PASSWORD.into(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("sim.toml");
    std::fs::write(&profile, common::SIM_PROFILE).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();

    let toml = format!(
        "journal_dir = {:?}\nwork_dir = {:?}\nprofile = {:?}\nlog_filter = \"trace\"\n\
         [portal]\nusername = \"agent01\"\nbase_url = {:?}\n\
         [engine]\nworkers = 1\nbackoff_s = 1\nheartbeat_s = 0\nshutdown_drain_s = 20\n\
         [api]\nport = 0\ntoken_file = {:?}\n",
        dir.path().join("journal"),
        dir.path().join("work"),
        profile,
        sim.url(),
        token_file,
    );
    let env = vec![(ENV_PORTAL_PASSWORD.to_string(), PASSWORD.to_string())];
    let mut loaded = DaemonConfig::from_parts(&toml, "test", &env).unwrap();
    let secrets = Secrets::resolve(&loaded.config, &env, &mut loaded.warnings).unwrap();
    tracing::info!(config = ?loaded.config, secrets = ?secrets, "starting");
    let daemon = Daemon::start(&loaded.config, secrets).await.unwrap();
    let base = format!("http://{}", daemon.addr());

    // Answers, good and bad, keep the secrets out.
    let mut bodies = Vec::new();
    let doc = job("POL-SEC-1");
    let r = request(
        "POST",
        &format!("{base}/api/jobs"),
        Some(TOKEN),
        Some(doc.to_string()),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    bodies.push(r.text);
    let near = &TOKEN[..TOKEN.len() - 2];
    for (method, path, token, body) in [
        ("GET", "/api/jobs", Some(near), None),
        ("GET", "/api/jobs", None, None),
        (
            "POST",
            "/api/jobs",
            Some(TOKEN),
            Some("{\"policyId\": ".to_string()),
        ),
        (
            "POST",
            "/api/jobs",
            Some(TOKEN),
            Some(format!("{{\"password\": \"{PASSWORD}\"}}")),
        ),
        ("GET", "/api/jobs/NOPE", Some(TOKEN), None),
        ("POST", "/api/jobs/POL-SEC-1/retry", Some(TOKEN), None),
        ("POST", "/api/jobs", Some(TOKEN), Some("x".repeat(300_000))),
    ] {
        let r = request(method, &format!("{base}{path}"), token, body, &[]).await;
        assert!(r.status >= 400, "{method} {path}: {}", r.status);
        bodies.push(r.text);
    }
    let mut changed = doc.clone();
    changed["idv"] = serde_json::json!("1");
    let r = request(
        "POST",
        &format!("{base}/api/jobs"),
        Some(TOKEN),
        Some(changed.to_string()),
        &[],
    )
    .await;
    assert_eq!(r.status, 409);
    bodies.push(r.text);

    // The job runs to the end in real Chromium, logging in with the password.
    let id = JobId::from("POL-SEC-1");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let ended = daemon
            .recorder()
            .book()
            .job(&id)
            .is_some_and(|j| j.status().is_terminal());
        if ended {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job did not end"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for path in [
        "/api/jobs/POL-SEC-1",
        "/api/session",
        "/api/recoveries",
        "/metrics",
        "/api/jobs/stats",
        "/",
    ] {
        let r = request("GET", &format!("{base}{path}"), Some(TOKEN), None, &[]).await;
        bodies.push(r.text);
    }
    let status = daemon.recorder().book().job(&id).unwrap().status();
    assert_eq!(status.as_str(), "completed");

    // Exports, personal data revealed even: still no secret.
    let records: Vec<_> = daemon
        .recorder()
        .journal()
        .iter()
        .map(|r| r.unwrap())
        .collect();
    let export: Vec<String> = records
        .iter()
        .map(|r| record_to_json(r, true).to_string())
        .collect();
    assert_clean("the export", export.join("\n").as_bytes());
    for r in &records {
        let raw = daemon.recorder().journal().raw(r.seq).unwrap().unwrap();
        assert_clean("a journal value", &raw);
    }
    daemon.stop().await.unwrap();
    sim.shutdown().await;

    // Every file sled wrote.
    for entry in walk(&dir.path().join("journal")) {
        assert_clean("a journal file", &std::fs::read(&entry).unwrap());
    }
    for body in &bodies {
        assert_clean("an API answer", body.as_bytes());
    }
    let logs = logs.0.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&logs);
    // The capture works: the daemon's own lines are there.
    assert!(text.contains("job accepted"), "no logs captured");
    assert!(text.contains("master session logged in"), "no login logged");
    assert!(text.contains("job{job=POL-SEC-1"), "no job span");
    assert_clean("the logs", &logs);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
