//! End-to-end acceptance tests: formwright on real headless Chromium against
//! the simulated portal, through the same [`Rig`] the demo runs.
//!
//! Each test waits for the jobs, then calls `finish` (which stops the
//! engine and closes every browser) before asserting anything. Should a
//! test panic earlier, dropping its rig stops the engine, and the browser
//! layer's drop guards kill what is left when the runtime ends;
//! `a_dropped_rig_closes_every_browser` checks the first half of that.
//!
//! The tests run two at a time by default (one per core). Their names sort
//! so that a long one starts beside the short fault scenarios.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use formwright::browser::CloneStrategy;
use formwright::journal::JobEvent;
use formwright::machine::job::Status;
use formwright::portal_sim::{AfterSave, LedgerEntry};
use formwright::rig::{Report, Rig, RigOptions};
use serde_json::Value;

/// Options for a test: the first `jobs` examples, short retry waits, no
/// heartbeat (so only jobs notice an expired session, deterministically),
/// and the default clone strategy (`pooled`) unless
/// `FORMWRIGHT_TEST_CLONE_STRATEGY=fresh` asks to run the suite on fresh
/// browsers.
fn options(dir: &Path, jobs: usize) -> RigOptions {
    logs();
    let mut options = RigOptions::new(dir).expect("the built-in profile and jobs load");
    options.jobs.truncate(jobs);
    options.backoff = Duration::from_millis(500);
    options.heartbeat = None;
    if let Ok(strategy) = std::env::var("FORMWRIGHT_TEST_CLONE_STRATEGY") {
        options.clone_strategy = match strategy.as_str() {
            "fresh" => CloneStrategy::Fresh,
            "pooled" => CloneStrategy::Pooled,
            other => panic!("FORMWRIGHT_TEST_CLONE_STRATEGY={other}: fresh or pooled"),
        };
    }
    options
}

fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Starts a rig, waits up to `timeout` for its jobs, and finishes it.
async fn run(options: RigOptions, timeout: Duration) -> Report {
    let rig = Rig::start(options).await.expect("the rig starts");
    let ended = rig.wait_ended(timeout, |_| {}).await;
    let report = rig.finish().await.expect("the rig finishes");
    print_rows(&report);
    assert!(ended, "not every job ended within {timeout:?}");
    report
}

fn print_rows(report: &Report) {
    for row in &report.rows {
        println!(
            "{} {} attempts={} proposal={:?} seconds={:?} {}",
            row.id,
            row.status.as_str(),
            row.attempts,
            row.proposal_no,
            row.seconds,
            row.reason.as_deref().unwrap_or("")
        );
    }
}

/// `formwright replay` (the built binary) on the report's journal.
fn assert_replay_passes(report: &Report) {
    assert!(report.replay_ok(), "the rig's own replay failed");
    let out = Command::new(env!("CARGO_BIN_EXE_formwright"))
        .arg("replay")
        .arg("--journal")
        .arg(&report.journal_dir)
        .arg("--summary")
        .output()
        .expect("formwright replay runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "formwright replay failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("journal OK"), "{stdout}");
}

// ---- the documents' values as the portal must receive them ---------------
//
// Written from the profile's documented transforms, not by calling them, so
// a wrong transform shows up here.

fn text(doc: &Value, key: &str) -> String {
    match doc.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// ISO `YYYY-MM-DD` as the portal's `DD/MM/YYYY`.
fn dmy(iso: &str) -> String {
    let parts: Vec<&str> = iso.split('-').collect();
    assert_eq!(parts.len(), 3, "not an ISO date: {iso}");
    format!("{}/{}/{}", parts[2], parts[1], parts[0])
}

fn expected_fields(doc: &Value) -> BTreeMap<&'static str, String> {
    let t = |key| text(doc, key);
    let financed = t("hasFinancier") == "true";
    let month: u32 = t("manufacturingMonth").parse().expect("a month number");
    let mut want = BTreeMap::from([
        ("Salutation", t("proposerTitle")),
        ("FirstName", t("fullName").trim().to_owned()),
        ("LastName", t("surname").trim().to_owned()),
        ("DateOfBirth", dmy(&t("dateOfBirth"))),
        ("Gender", t("gender")),
        ("MobileNo", t("mobileNumber")),
        ("EmailId", t("email")),
        ("FlatNo", t("flatDoorNo")),
        ("FloorNo", t("floorNo")),
        ("PremisesName", t("buildingName")),
        ("RoadName", t("roadStreetLane")),
        ("AreaName", t("areaAndLocality")),
        ("Pincode", t("pincode")),
        (
            "MakeModel",
            format!("{} {}", t("vehicleMake"), t("vehicleModel")).to_uppercase(),
        ),
        ("RTOCity", t("rtoCityLocation").to_uppercase()),
        ("MfgMonth", format!("{month:02}")),
        ("MfgYear", t("manufacturingYear")),
        ("EngineNo", t("engineNumber").to_uppercase()),
        ("ChassisNo", t("chassisNumber").to_uppercase()),
        ("PurchaseDate", dmy(&t("purchaseDate"))),
        ("RegistrationDate", dmy(&t("registrationDate"))),
        ("IsNewVehicle", "true".to_owned()),
        ("IsHypothecated", financed.to_string()),
        ("IDV", t("idv")),
        ("ZeroDep", t("zeroDepreciation")),
        ("PACover", t("paCover")),
        ("TPPD", t("tppdRestrict")),
        ("ODDiscount", t("ODDiscount")),
    ]);
    if financed {
        want.insert("FinancierType", t("financierType"));
        want.insert("FinancierName", t("financierName").to_uppercase());
        want.insert("FinancierAddress", t("financierAddress"));
    }
    want
}

/// Every field of every job against its one ledger entry; returns the
/// mismatches as `job field: ledger != expected`.
fn ledger_mismatches(
    jobs: &[(formwright::journal::JobId, Value)],
    ledger: &[LedgerEntry],
) -> Vec<String> {
    let mut wrong = Vec::new();
    for (id, doc) in jobs {
        let chassis = text(doc, "chassisNumber").to_uppercase();
        let entries: Vec<&LedgerEntry> = ledger
            .iter()
            .filter(|e| e.fields.get("ChassisNo") == Some(&chassis))
            .collect();
        let [entry] = entries.as_slice() else {
            wrong.push(format!("{id}: {} ledger entries", entries.len()));
            continue;
        };
        for (field, want) in expected_fields(doc) {
            let got = entry.fields.get(field).map_or("(absent)", String::as_str);
            if got != want {
                wrong.push(format!("{id} {field}: {got:?} != {want:?}"));
            }
        }
        let financed = text(doc, "hasFinancier") == "true";
        let financier = entry.fields.get("FinancierName").map_or("", String::as_str);
        if !financed && !financier.is_empty() {
            wrong.push(format!(
                "{id} FinancierName: {financier:?} on an unfinanced vehicle"
            ));
        }
        let state = entry.fields.get("StateCode").map_or("", String::as_str);
        if state.is_empty() {
            wrong.push(format!("{id} StateCode: empty"));
        }
    }
    wrong
}

/// The clone-check figures: "decided in N ms" from every attempt that
/// failed because its cloned session was expired.
fn clone_check_millis(report: &Report) -> Vec<u64> {
    let mut out = Vec::new();
    for job in report.replay.book.jobs() {
        for step in &job.timeline {
            let JobEvent::AttemptFailed { stage, error, .. } = &step.event else {
                continue;
            };
            if stage != "clone check" {
                continue;
            }
            let ms = error
                .split("decided in ")
                .nth(1)
                .and_then(|rest| rest.split(" ms").next())
                .and_then(|n| n.trim().parse().ok());
            match ms {
                Some(ms) => out.push(ms),
                None => panic!("{}: no \"decided in N ms\" in {error:?}", job.id),
            }
        }
    }
    out
}

/// The comparison above finds a wrong field, a missing one and a second
/// proposal; without a browser.
#[test]
fn the_ledger_comparison_can_fail() {
    let jobs: Vec<_> = formwright::rig::example_jobs()
        .expect("examples")
        .into_iter()
        .take(2)
        .collect();
    let entry = |doc: &Value| LedgerEntry {
        proposal_no: "R1".into(),
        at: chrono::Utc::now(),
        session: "S0001".into(),
        fields: expected_fields(doc)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain([("StateCode".to_owned(), "KA".to_owned())])
            .collect(),
        total_premium: 1,
        payment_link_sent: true,
    };
    let good: Vec<LedgerEntry> = jobs.iter().map(|(_, doc)| entry(doc)).collect();
    assert_eq!(ledger_mismatches(&jobs, &good), Vec::<String>::new());

    let mut wrong = good.clone();
    wrong[0]
        .fields
        .insert("DateOfBirth".into(), "1982-05-03".into());
    wrong[1].fields.remove("ODDiscount");
    let found = ledger_mismatches(&jobs, &wrong);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("DateOfBirth"), "{found:?}");
    assert!(found[1].contains("ODDiscount"), "{found:?}");

    let twice = [good.clone(), good[..1].to_vec()].concat();
    let found = ledger_mismatches(&jobs, &twice);
    assert_eq!(found, [format!("{}: 2 ledger entries", jobs[0].0)]);
}

// ---- the scenarios ---------------------------------------------------------

/// 1. Twenty example jobs complete; the ledger holds exactly twenty
///    proposals, each equal to its job's document; the journal replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_twenty_jobs_complete_and_the_ledger_matches_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = options(dir.path(), 20);
    let jobs = options.jobs.clone();
    assert_eq!(jobs.len(), 20);

    let report = run(options, Duration::from_secs(420)).await;

    assert!(report.all_completed(), "not every job completed");
    assert_eq!(report.ledger.len(), 20, "proposals in the ledger");
    assert_eq!(report.duplicates, 0);
    let wrong = ledger_mismatches(&jobs, &report.ledger);
    assert!(
        wrong.is_empty(),
        "ledger differs from the jobs:\n{}",
        wrong.join("\n")
    );
    for row in &report.rows {
        let entry = report
            .ledger
            .iter()
            .find(|e| Some(&e.proposal_no) == row.proposal_no.as_ref());
        assert!(
            entry.is_some(),
            "{}: proposal {:?} not in the ledger",
            row.id,
            row.proposal_no
        );
    }
    assert_replay_passes(&report);
}

/// 2. The portal logs every session out after the 5th proposal: every job
///    still completes, none twice; the expired clone is seen within 2 s of
///    navigation; the journal shows the recovery that brought it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn z2_an_expiry_after_the_fifth_proposal_is_healed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = options(dir.path(), 9);
    options.faults.expire_sessions_every_n_saves = Some(5);
    let jobs = options.jobs.clone();

    let report = run(options, Duration::from_secs(360)).await;

    assert!(report.all_completed(), "not every job completed");
    assert_eq!(report.ledger.len(), jobs.len(), "proposals in the ledger");
    assert_eq!(report.duplicates, 0);
    assert!(ledger_mismatches(&jobs, &report.ledger).is_empty());

    let millis = clone_check_millis(&report);
    println!("clone check: expired clone decided in {millis:?} ms");
    // The expiry is met by a clone check, or by a step that sees the login
    // form mid-form; either way the recovery below must show it healed.
    assert!(millis.iter().all(|&ms| ms < 2000), "{millis:?}");

    let session = &report.replay.book.session;
    let healed: Vec<_> = session
        .recoveries
        .iter()
        .filter(|r| r.outcome == formwright::book::RecoveryOutcome::Recovered)
        .collect();
    println!("recoveries: {:?}", session.recoveries);
    assert!(!healed.is_empty(), "no recovery brought the session back");
    assert!(healed
        .iter()
        .all(|r| r.tries.last().is_some_and(|t| t.error.is_none())));
    assert_replay_passes(&report);
}

/// 3. The page after save breaks (proposal recorded, then HTTP 500): the
///    job ends `failed_post_submission` after one attempt, and its proposal
///    is in the ledger once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_a_broken_page_after_save_fails_the_job_without_a_retry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = options(dir.path(), 1);
    options.faults.after_save = Some(AfterSave::Error500);
    let chassis = text(&options.jobs[0].1, "chassisNumber").to_uppercase();

    let report = run(options, Duration::from_secs(120)).await;

    let row = &report.rows[0];
    assert_eq!(row.status, Status::FailedPostSubmission, "{:?}", row.reason);
    assert_eq!(row.attempts, 1, "retried after submit");
    let saved = report
        .ledger
        .iter()
        .filter(|e| e.fields.get("ChassisNo") == Some(&chassis))
        .count();
    assert_eq!(saved, 1);
    assert_eq!(report.ledger.len(), 1);
    assert_replay_passes(&report);
}

/// 4. A required element is renamed by a portal release: the job ends
///    `failed_login_form` after exactly three attempts, the error names the
///    step and the selector, and nothing reaches the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b4_a_renamed_element_fails_the_job_after_three_attempts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = options(dir.path(), 1);
    options.backoff = Duration::from_millis(300);
    options.faults.renamed_ids = Some([("txtEngineNo".into(), "txtEngineNumber".into())].into());
    // Only to save time: the step gives up after 4 s instead of 15 s.
    for step in &mut options.profile.steps {
        if step.name == "engine number" {
            step.timeout_ms = Some(4000);
        }
    }

    let report = run(options, Duration::from_secs(180)).await;

    let row = &report.rows[0];
    assert_eq!(row.status, Status::FailedLoginForm, "{:?}", row.reason);
    assert_eq!(row.attempts, 3);
    let job = report.replay.book.jobs().next().expect("the job");
    let failure = job.last_failure.as_ref().expect("a failure");
    assert_eq!(failure.stage, "engine number");
    assert!(failure.error.contains("#txtEngineNo"), "{}", failure.error);
    let failed = job
        .timeline
        .iter()
        .filter(|s| matches!(s.event, JobEvent::AttemptFailed { .. }))
        .count();
    assert_eq!(failed, 3);
    assert!(report.ledger.is_empty(), "{:?}", report.ledger);
    assert_replay_passes(&report);
}

/// 5. The loading mask stays 3 s after every request: clicks wait for it,
///    and the job completes on its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b5_clicks_wait_for_a_held_loading_mask() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = options(dir.path(), 1);
    options.faults.mask_hold_ms = Some(3000);
    let jobs = options.jobs.clone();

    let report = run(options, Duration::from_secs(180)).await;

    let row = &report.rows[0];
    assert_eq!(row.status, Status::Completed, "{:?}", row.reason);
    assert_eq!(row.attempts, 1);
    assert!(ledger_mismatches(&jobs, &report.ledger).is_empty());
    assert_replay_passes(&report);
}

/// A rig dropped mid-run (as by a panicking test) stops the engine, which
/// closes the master and the job browsers and ends chromedriver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b6_a_dropped_rig_closes_every_browser() {
    let dir = tempfile::tempdir().expect("temp dir");
    let work = std::fs::canonicalize(dir.path()).expect("canonical path");
    let options = options(&work, 1);

    let (driver_tx, driver_rx) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let rig = Rig::start(options).await.expect("the rig starts");
        // Wait until the master and a job browser are up: the job is
        // filling and its folder (fresh) or the pool's (pooled) exists.
        let browser = &rig.portal().settings().browser;
        let job_dirs = [browser.work_dir.join("jobs"), browser.pool_dir()];
        let deadline = Instant::now() + Duration::from_secs(90);
        while !(filling(&rig) && job_dirs.iter().any(|d| has_entries(d))) {
            assert!(Instant::now() < deadline, "no job browser opened");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = driver_tx.send(rig.portal().driver_pid().await);
        panic!("a deliberate panic with the rig running");
    });
    let panicked = test.await.is_err_and(|e| e.is_panic());
    assert!(panicked, "the task should have panicked");
    let driver = driver_rx.await.expect("the task saw the browsers up");
    assert!(driver.is_some(), "a local chromedriver");

    let browsers = work.join("browsers");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = browsers_of(&browsers);
        let driver_alive = driver.is_some_and(alive);
        if left.is_empty() && !driver_alive {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left running: browsers {left:?}, chromedriver {driver:?} alive={driver_alive}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn filling(rig: &Rig) -> bool {
    let book = rig.recorder().book();
    let filling = book.jobs().any(|j| j.status() == Status::Filling);
    filling
}

fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// Processes whose command line names a folder under `dir` (the browsers
/// get `--user-data-dir` there).
fn browsers_of(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .filter(|&pid| alive(pid))
        .collect()
}

/// Running, not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.trim().chars().next());
        !matches!(state, Some('Z') | Some('X') | None)
    })
}
