//! Failure evidence on real headless Chromium and the simulated portal,
//! stored in a real S3-compatible server: moto's, started by each test on
//! a free port (`pip install 'moto[server]'`, which `scripts/setup` does).
//! A test fails loudly when moto cannot be started; none is skipped.
//!
//! Every job here fails on purpose: the portal serves the engine-number
//! field under another id, and that step gives up after 2 s.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use formwright::api::{self, ApiSettings};
use formwright::artifacts::{ArtifactStore, ArtifactsSection, Evidence, Store};
use formwright::book::Recorder;
use formwright::config::Secret;
use formwright::journal::{JobEvent, JobId};
use formwright::machine::job::Status;
use formwright::profile::Profile;
use formwright::rig::{Report, Rig, RigOptions};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const BUCKET: &str = "evidence";
const PREFIX: &str = "fw/test";
/// The secret key handed to the AWS chain: it must show up nowhere.
const AWS_SECRET: &str = "fw-test-secret-7c1e0b2d94a8";

/// A moto S3 server on 127.0.0.1; killed when dropped.
struct Moto {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Moto {
    fn start(dir: &Path) -> Moto {
        aws_env();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut moto = Moto {
            port,
            child: None,
            log: dir.join("moto.log"),
        };
        moto.restart();
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port: it comes back empty)
    /// and waits until it answers.
    fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(&self.log).expect("moto's log file");
        let spawned = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .or_else(|_| {
                Command::new("python3")
                    .args(["-m", "moto.server", "-H", "127.0.0.1"])
                    .args(["-p", &self.port.to_string()])
                    .stdin(Stdio::null())
                    .spawn()
            });
        let child = spawned.unwrap_or_else(|e| {
            panic!("moto cannot be started ({e}): run `pip install 'moto[server]'` (scripts/setup)")
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("moto exited with {status} before listening:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "moto did not listen on port {} within 30 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Test credentials for the standard AWS chain (its environment step),
/// and no instance metadata lookups.
fn aws_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", AWS_SECRET);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

fn s3_section(moto: &Moto) -> ArtifactsSection {
    ArtifactsSection {
        bucket: BUCKET.into(),
        prefix: PREFIX.into(),
        region: "us-east-1".into(),
        endpoint: moto.endpoint(),
        path_style: true,
        retry_max_s: 1,
        ..ArtifactsSection::default()
    }
}

/// One job that fails its only attempt at the "engine number" step.
fn failing_options(dir: &Path, artifacts: ArtifactsSection) -> RigOptions {
    aws_env();
    let mut options = RigOptions::new(dir).expect("the built-in profile and jobs load");
    options.jobs.truncate(1);
    options.max_attempts = 1;
    options.heartbeat = None;
    options.faults.renamed_ids = Some([("txtEngineNo".into(), "txtEngineNumber".into())].into());
    for step in &mut options.profile.steps {
        if step.name == "engine number" {
            step.timeout_ms = Some(2000);
        }
    }
    options.artifacts = artifacts;
    options
}

/// A client of the bucket, to create it and read it back.
async fn bucket_client(section: &ArtifactsSection) -> aws_sdk_s3::Client {
    let store = section.open_store(Path::new("/nonexistent")).await;
    match store {
        ArtifactStore::S3(s3) => s3.client().clone(),
        ArtifactStore::Local(_) => panic!("a bucket is configured"),
    }
}

async fn create_bucket(client: &aws_sdk_s3::Client) {
    client
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("moto creates the bucket");
}

async fn bucket_keys(client: &aws_sdk_s3::Client) -> Vec<String> {
    match client.list_objects_v2().bucket(BUCKET).send().await {
        Ok(list) => {
            let mut keys: Vec<String> = list
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect();
            keys.sort();
            keys
        }
        Err(_) => Vec::new(),
    }
}

async fn object(client: &aws_sdk_s3::Client, key: &str) -> Vec<u8> {
    let got = client
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key} is in the bucket: {e}"));
    let body: ByteStream = got.body;
    body.collect()
        .await
        .expect("the body")
        .into_bytes()
        .to_vec()
}

/// Waits until the bucket holds exactly `keys`.
async fn wait_for_keys(client: &aws_sdk_s3::Client, keys: &[String], secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let found = bucket_keys(client).await;
        if found == keys {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the bucket holds {found:?}, not {keys:?}, after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The keys the journal holds for the job's failed attempt, sorted.
fn journaled_keys(recorder: &Recorder, job: &JobId) -> Vec<String> {
    let book = recorder.book();
    let job = book.job(job).expect("the job is in the book");
    let mut keys: Vec<String> = job
        .timeline
        .iter()
        .flat_map(|s| match &s.event {
            JobEvent::AttemptFailed { artifacts, .. } => artifacts.clone(),
            _ => Vec::new(),
        })
        .collect();
    keys.sort();
    keys
}

fn upload_failures(recorder: &Recorder, job: &JobId) -> Vec<String> {
    let book = recorder.book();
    book.job(job)
        .expect("the job is in the book")
        .timeline
        .iter()
        .filter_map(|s| match &s.event {
            JobEvent::ArtifactUploadFailed { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

/// Checks the keys' layout: `{prefix}/{job}/1-engine-number-{time}.{ext}`
/// for png, html and json, one failure's worth.
fn assert_layout(keys: &[String], prefix: Option<&str>, job: &JobId) {
    let start = match prefix {
        Some(p) => format!("{p}/{job}/1-engine-number-"),
        None => format!("{job}/1-engine-number-"),
    };
    let exts: Vec<&str> = keys
        .iter()
        .map(|k| k.rsplit_once('.').map_or("", |(_, e)| e))
        .collect();
    assert_eq!(exts, vec!["html", "json", "png"], "{keys:?}");
    for key in keys {
        let time = key
            .strip_prefix(&start)
            .unwrap_or_else(|| panic!("{key} does not start with {start}"));
        let time = time.rsplit_once('.').map_or("", |(t, _)| t);
        assert!(
            chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%S%.3fZ").is_ok(),
            "{key}: {time} is not a UTC time"
        );
    }
}

/// A PNG signature, an IHDR first and an IEND last; returns its height.
fn assert_png(bytes: &[u8]) -> u32 {
    assert!(bytes.len() > 100, "a PNG of {} bytes", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "no PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    assert_eq!(&bytes[bytes.len() - 8..bytes.len() - 4], b"IEND");
    u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]])
}

/// The page as the browser saw it: the portal's proposal form, with the
/// renamed field that made the step fail.
fn assert_page(html: &str) {
    assert!(html.trim_start().starts_with("<html") || html.contains("<html"));
    assert!(html.contains("txtEngineNumber"), "not the failing page");
    assert!(!html.contains("id=\"txtEngineNo\""));
}

fn the_job(report_or_rig: &[JobId]) -> JobId {
    report_or_rig[0].clone()
}

async fn wait_ended(rig: &Rig) {
    assert!(
        rig.wait_ended(Duration::from_secs(90), |_| {}).await,
        "the job did not end"
    );
}

fn assert_failed_once(report: &Report) {
    let row = &report.rows[0];
    assert_eq!(row.status, Status::FailedLoginForm, "{:?}", row.reason);
    assert_eq!(row.attempts, 1);
    assert!(report.replay_ok(), "the journal does not replay clean");
}

/// The acceptance case: a failing job's screenshot, page and note land in
/// the bucket under the documented keys, the journal holds those keys, the
/// API links to them with pre-signed URLs, and `export` carries them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_leaves_its_evidence_in_s3() {
    let dir = tempfile::tempdir().expect("temp dir");
    let moto = Moto::start(dir.path());
    let section = s3_section(&moto);
    let client = bucket_client(&section).await;
    create_bucket(&client).await;

    let rig = Rig::start(failing_options(dir.path(), section))
        .await
        .expect("the rig starts");
    let job = the_job(rig.jobs());
    wait_ended(&rig).await;
    let keys = journaled_keys(rig.recorder(), &job);
    assert_layout(&keys, Some(PREFIX), &job);
    wait_for_keys(&client, &keys, 20).await;

    let png = object(&client, &keys[2]).await;
    let height = assert_png(&png);
    let html = String::from_utf8(object(&client, &keys[0]).await).expect("UTF-8 HTML");
    assert_page(&html);
    let note: Value = serde_json::from_slice(&object(&client, &keys[1]).await).expect("JSON");
    let url = note["url"].as_str().expect("the URL was taken");
    assert!(url.starts_with(&rig.sim().url()), "{url}");
    assert!(note["console"].is_array(), "no console log: {note}");
    assert_eq!(note["full_page"], true, "{note}");
    // The proposal form is longer than the 1280x900 window.
    assert!(
        height > 900,
        "the screenshot is {height} px high: not the full page"
    );
    assert!(upload_failures(rig.recorder(), &job).is_empty());

    // The API's view links each key to a pre-signed URL that serves it.
    let (base, stop) = serve_api(&rig).await;
    let view = api_get(&format!("{base}/api/jobs/{job}")).await.json();
    let evidence = view["evidence"].as_array().expect("evidence links");
    assert_eq!(evidence.len(), 3, "{view}");
    let html_link = evidence
        .iter()
        .find(|e| e["key"] == keys[0].as_str())
        .and_then(|e| e["url"].as_str())
        .expect("a link to the page");
    assert!(html_link.contains("X-Amz-Signature="), "{html_link}");
    let fetched = common::request("GET", html_link, None, None, &[]).await;
    assert_eq!(fetched.status, 200, "{}", fetched.text);
    assert_eq!(fetched.text, html);
    stop.cancel();

    let report = rig.finish().await.expect("the rig finishes");
    assert_failed_once(&report);
    let export = Command::new(env!("CARGO_BIN_EXE_formwright"))
        .args(["export", "--format", "ndjson", "--journal"])
        .arg(&report.journal_dir)
        .output()
        .expect("formwright export runs");
    let text = String::from_utf8_lossy(&export.stdout);
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    for key in &keys {
        assert!(text.contains(key.as_str()), "export lacks {key}");
    }
    assert!(
        !text.contains(AWS_SECRET),
        "the AWS secret key is in the export"
    );
}

/// `GET url` with the API's token.
async fn api_get(url: &str) -> common::Reply {
    common::request("GET", url, Some(common::TOKEN), None, &[]).await
}

/// The API over a rig's engine and its evidence store.
async fn serve_api(rig: &Rig) -> (String, CancellationToken) {
    let router = api::router(
        Arc::new(rig.engine().clone()),
        ApiSettings {
            token: Secret::new(common::TOKEN),
            max_body_bytes: 64 * 1024,
            profile: Profile::from_toml_str(common::SIM_PROFILE).unwrap(),
            artifacts: Some(Arc::clone(&rig.evidence().store)),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(api::serve(listener, router, async move {
        stopped.cancelled().await
    }));
    (base, stop)
}

/// S3 is down when the job fails: the outcome is the same, the failed
/// upload is journaled, and the evidence arrives once S3 is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_held_back_by_an_outage_arrives_when_s3_is_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut moto = Moto::start(dir.path());
    let section = s3_section(&moto);
    let client = bucket_client(&section).await;
    moto.stop();

    let rig = Rig::start(failing_options(dir.path(), section))
        .await
        .expect("the rig starts");
    let job = the_job(rig.jobs());
    wait_ended(&rig).await;
    let keys = journaled_keys(rig.recorder(), &job);
    assert_layout(&keys, Some(PREFIX), &job);
    wait_until("the failed uploads are journaled", 20, || {
        let mut failed = upload_failures(rig.recorder(), &job);
        failed.sort();
        failed == keys
    })
    .await;

    moto.restart();
    create_bucket(&client).await;
    wait_for_keys(&client, &keys, 30).await;
    assert_png(&object(&client, &keys[2]).await);
    assert_page(&String::from_utf8_lossy(&object(&client, &keys[0]).await));

    let report = rig.finish().await.expect("the rig finishes");
    assert_failed_once(&report);
    let job = report.replay.book.job(&job).expect("the job");
    for step in &job.timeline {
        if let JobEvent::ArtifactUploadFailed { error, .. } = &step.event {
            assert!(
                !error.contains(AWS_SECRET),
                "the AWS secret key is in the journal"
            );
        }
    }
}

/// S3 stays down until the daemon has stopped: the evidence waits in the
/// spool and the next start sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_spooled_during_an_outage_is_sent_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut moto = Moto::start(dir.path());
    let section = s3_section(&moto);
    let client = bucket_client(&section).await;
    moto.stop();

    let rig = Rig::start(failing_options(dir.path(), section.clone()))
        .await
        .expect("the rig starts");
    let job = the_job(rig.jobs());
    wait_ended(&rig).await;
    let keys = journaled_keys(rig.recorder(), &job);
    wait_until("a failed upload is journaled", 20, || {
        !upload_failures(rig.recorder(), &job).is_empty()
    })
    .await;
    let report = rig.finish().await.expect("the rig finishes");
    assert_failed_once(&report);

    // The restart: the journal opened again, the evidence side started on
    // the same folder, S3 back.
    moto.restart();
    create_bucket(&client).await;
    let work = std::fs::canonicalize(dir.path()).unwrap();
    let (recorder, _) = Recorder::open(&report.journal_dir).expect("the journal opens");
    let evidence = Evidence::start(&section, &work, Arc::new(recorder)).await;
    wait_for_keys(&client, &keys, 30).await;
    assert_png(&object(&client, &keys[2]).await);
    assert!(
        evidence.spool.pending().is_empty(),
        "the spool was not emptied"
    );
    evidence.stop().await;
}

/// With no configuration the evidence lands in `work_dir/artifacts`, and
/// the API serves it from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_store_needs_no_configuration() {
    // A library user's usual umask: what formwright creates must not rely
    // on the daemon narrowing it.
    // SAFETY: umask swaps the process's file-creation mask; nothing else.
    unsafe { libc::umask(0o022) };
    let dir = tempfile::tempdir().expect("temp dir");
    let rig = Rig::start(failing_options(dir.path(), ArtifactsSection::default()))
        .await
        .expect("the rig starts");
    let job = the_job(rig.jobs());
    wait_ended(&rig).await;
    let keys = journaled_keys(rig.recorder(), &job);
    assert_layout(&keys, None, &job);
    assert!(matches!(
        rig.evidence().store.as_ref(),
        ArtifactStore::Local(_)
    ));

    let root = std::fs::canonicalize(dir.path()).unwrap().join("artifacts");
    wait_until("the evidence is in the local folder", 10, || {
        keys.iter().all(|k| root.join(k).is_file())
    })
    .await;
    assert_png(&std::fs::read(root.join(&keys[2])).unwrap());
    assert_page(&std::fs::read_to_string(root.join(&keys[0])).unwrap());
    assert!(rig.evidence().spool.pending().is_empty());
    let link = rig.evidence().store.link(&keys[0]).await.expect("a link");
    assert_eq!(link, formwright::artifacts::Link::File(root.join(&keys[0])));

    let (base, stop) = serve_api(&rig).await;
    let served = api_get(&format!("{base}/api/artifacts/{}", keys[0])).await;
    assert_eq!(served.status, 200, "{}", served.text);
    assert_page(&served.text);
    assert_eq!(served.headers["content-security-policy"], "sandbox");
    let outside = api_get(&format!("{base}/api/artifacts/{job}/not-journaled.png")).await;
    assert_eq!(outside.status, 404);
    let dashboard = api_get(&format!("{base}/dashboard/live")).await;
    for key in &keys {
        let href = format!("href=\"/api/artifacts/{key}\"");
        assert!(dashboard.text.contains(&href), "the dashboard lacks {href}");
    }
    stop.cancel();

    let report = rig.finish().await.expect("the rig finishes");
    assert_failed_once(&report);

    // The journal and the evidence hold customers' data: their owner's
    // alone, whatever the test process's umask.
    let dir_path = std::fs::canonicalize(dir.path()).unwrap();
    for root in [dir_path.join("journal"), root] {
        let loose = readable_by_others(&root);
        assert!(loose.is_empty(), "readable by others: {loose:?}");
    }
}

/// Everything at or under `path` that its group or others may use.
fn readable_by_others(path: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path).unwrap();
    let mut loose = Vec::new();
    if meta.permissions().mode() & 0o077 != 0 {
        loose.push(format!(
            "{} {:o}",
            path.display(),
            meta.permissions().mode()
        ));
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            loose.extend(readable_by_others(&entry.unwrap().path()));
        }
    }
    loose
}

async fn wait_until(what: &str, secs: u64, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
