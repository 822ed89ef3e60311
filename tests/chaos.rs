//! Chaos run: `formwright run` as a child process on real headless Chromium
//! against the simulated portal, under a steady stream of jobs, while a
//! seeded schedule expires the portal's sessions, slows its pages, answers
//! 500 after saves, drops connections, fails logins, and kills Chromium
//! processes and chromedriver. At the end every job has completed or failed
//! with a classified reason, no proposal is in the portal's ledger twice,
//! the journal replays clean, and no browser outlives the daemon.
//!
//! `FORMWRIGHT_CHAOS_SEED` replays a run.

mod child;
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use child::{Daemon, Home};
use formwright::journal::JobId;
use formwright::machine::job::Status;
use formwright::portal_sim::{AfterSave, FaultPatch, PortalSim, SimConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How long jobs keep arriving and faults keep coming.
const LOAD: Duration = Duration::from_secs(90);
/// How long the jobs left then may take to end.
const DRAIN: Duration = Duration::from_secs(60);
/// Jobs kept open (pending or running) under load.
const OPEN_JOBS: u64 = 3;

const ENGINE: &str = "workers = 2\nmax_attempts = 3\nbackoff_s = 1\nbackoff_max_s = 4\n\
                      heartbeat_s = 2\nrecovery_try_pause_s = 1\nrecovery_cooldown_s = 5\n\
                      shutdown_drain_s = 20";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    ExpireSessions,
    SlowPages,
    Error500AfterSave,
    DropConnections,
    FailLogins,
    KillJobChromium,
    KillMasterChromium,
    KillChromedriver,
}

impl Fault {
    const ALL: [Fault; 8] = [
        Fault::ExpireSessions,
        Fault::SlowPages,
        Fault::Error500AfterSave,
        Fault::DropConnections,
        Fault::FailLogins,
        Fault::KillJobChromium,
        Fault::KillMasterChromium,
        Fault::KillChromedriver,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::ExpireSessions => "sessions expired",
            Fault::SlowPages => "slow pages (a few s)",
            Fault::Error500AfterSave => "500 after the next save",
            Fault::DropConnections => "connections dropped",
            Fault::FailLogins => "logins failed",
            Fault::KillJobChromium => "job Chromium killed",
            Fault::KillMasterChromium => "master Chromium killed",
            Fault::KillChromedriver => "chromedriver killed",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_chaos_every_job_ends_classified_and_none_twice() {
    child::require_browsers();
    let seed = child::seed("FORMWRIGHT_CHAOS_SEED");
    let mut rng = StdRng::seed_from_u64(seed);
    let run_started = Instant::now();

    let sim = PortalSim::start(SimConfig {
        password: child::PASSWORD.into(),
        ..SimConfig::default()
    })
    .await
    .expect("the simulated portal starts");
    let home = Home::new("chaos", &sim.url(), ENGINE);
    let api = home.api();
    let examples = child::example_jobs();
    let prefix = format!("C{}", seed % 100_000);

    let mut daemon = Daemon::start(&home);
    daemon.wait_ready(Duration::from_secs(120)).await;

    let mut accepted: BTreeMap<String, String> = BTreeMap::new();
    let mut injected: BTreeMap<Fault, usize> = BTreeMap::new();
    // The first faults go through every kind once, in a seeded order.
    let mut plan: Vec<Fault> = Fault::ALL.to_vec();
    for i in (1..plan.len()).rev() {
        plan.swap(i, rng.gen_range(0..=i));
    }
    let load_started = Instant::now();
    let mut next_fault = Instant::now() + Duration::from_secs(3);
    let mut revert: Option<Revert> = None;
    while load_started.elapsed() < LOAD {
        assert!(
            daemon.exited().is_none(),
            "the daemon died:\n{}",
            daemon.log.tail(40)
        );
        let stats = child::stats(&api).await;
        let open = stats["total"].as_u64().unwrap_or(0) - stats["ended"].as_u64().unwrap_or(0);
        if open < OPEN_JOBS {
            let (id, chassis, doc) = child::job(&examples, &prefix, accepted.len());
            let reply = child::submit(&api, &doc).await;
            assert_eq!(reply.status, 201, "intake of {id}: {}", reply.text);
            accepted.insert(id, chassis);
        }
        if let Some(r) = revert.take() {
            let saved = sim.ledger().len() > r.saves;
            if Instant::now() >= r.at || (r.until_a_save && saved) {
                sim.faults().apply(r.patch);
            } else {
                revert = Some(r);
            }
        }
        if Instant::now() >= next_fault && revert.is_none() {
            let fault = if plan.is_empty() {
                Fault::ALL[rng.gen_range(0..Fault::ALL.len())]
            } else {
                plan.remove(0)
            };
            if inject(fault, &daemon, &sim, &mut rng, &mut revert) {
                *injected.entry(fault).or_default() += 1;
                child::say(format!(
                    "{:>5.1} s: {}",
                    run_started.elapsed().as_secs_f64(),
                    fault.name()
                ));
            } else {
                // Nothing to aim at yet (no job browser open): again soon.
                plan.insert(0, fault);
            }
            next_fault = Instant::now() + Duration::from_millis(rng.gen_range(3000..7000));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if let Some(r) = revert.take() {
        sim.faults().apply(r.patch);
    }

    let drain_until = Instant::now() + DRAIN;
    loop {
        let stats = child::stats(&api).await;
        if stats["total"] == stats["ended"] || Instant::now() >= drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = daemon.stop(Duration::from_secs(60));
    let strays = child::strays(&home.work());
    child::reap_strays(&home.work());
    let ledger = sim.ledger();
    sim.shutdown().await;

    // ---- the end checks ---------------------------------------------------
    let verdict = formwright::cli::replay::check(&home.journal()).expect("the journal opens");
    let book = &verdict.book;
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut open = Vec::new();
    let mut unclassified = Vec::new();
    let mut lost = Vec::new();
    for id in accepted.keys() {
        let Some(job) = book.job(&JobId(id.clone())) else {
            lost.push(id.clone());
            continue;
        };
        let failure = job.last_failure.as_ref();
        let outcome = match job.status() {
            Status::Completed => "completed".to_string(),
            Status::FailedLoginForm => {
                let kind = failure.and_then(|f| f.kind);
                if kind.is_none() || kind == Some(formwright::journal::FailureKind::Other) {
                    unclassified.push(format!("{id}: {:?}", failure));
                }
                format!("failed_login_form: {}", kind.map_or("none", |k| k.as_str()))
            }
            Status::FailedPostSubmission => {
                let stage = failure.map_or("", |f| f.stage.as_str());
                if stage.is_empty() {
                    unclassified.push(format!("{id}: {:?}", failure));
                }
                format!("failed_post_submission: {stage}")
            }
            other => {
                open.push(format!("{id}: {}", other.as_str()));
                other.as_str().to_string()
            }
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    let mut per_chassis: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in &ledger {
        let chassis = entry.fields.get("ChassisNo").map_or("", String::as_str);
        *per_chassis.entry(chassis).or_default() += 1;
    }
    let duplicates: Vec<_> = per_chassis.iter().filter(|(_, n)| **n > 1).collect();

    let mut rows: Vec<(String, String)> = vec![("seed".into(), seed.to_string())];
    for fault in Fault::ALL {
        let n = injected.get(&fault).copied().unwrap_or(0);
        rows.push((format!("fault: {}", fault.name()), n.to_string()));
    }
    rows.push(("jobs".into(), accepted.len().to_string()));
    for (outcome, n) in &outcomes {
        rows.push((format!("job: {outcome}"), n.to_string()));
    }
    rows.push(("proposals in the ledger".into(), ledger.len().to_string()));
    rows.push(("duplicates".into(), duplicates.len().to_string()));
    rows.push(("lost".into(), lost.len().to_string()));
    rows.push((
        "wall s".into(),
        format!("{:.0}", run_started.elapsed().as_secs_f64()),
    ));
    child::say(format!("daemon logs: {}", home.log_file.display()));
    child::table("chaos run", &rows);

    assert!(status.success(), "the daemon exited with {status}");
    assert!(
        strays.is_empty(),
        "browsers outlived the daemon: {strays:?}"
    );
    assert!(verdict.passed(), "the journal does not replay clean");
    assert!(
        lost.is_empty(),
        "accepted jobs missing from the journal: {lost:?}"
    );
    assert!(open.is_empty(), "jobs that never ended: {open:?}");
    assert!(
        unclassified.is_empty(),
        "failures without a reason: {unclassified:?}"
    );
    assert!(
        duplicates.is_empty(),
        "proposals raised twice: {duplicates:?}"
    );
    assert!(
        outcomes.get("completed").copied().unwrap_or(0) > 0,
        "no job completed under chaos"
    );
    for fault in Fault::ALL {
        assert!(
            injected.contains_key(&fault),
            "{} never injected",
            fault.name()
        );
    }
}

/// How a lasting fault ends.
struct Revert {
    /// The switches back as they were.
    patch: FaultPatch,
    /// At the latest then.
    at: Instant,
    /// Or once the ledger holds more than `saves` proposals.
    until_a_save: bool,
    saves: usize,
}

/// Injects one fault; false when it had nothing to act on. A fault that
/// lasts sets `revert` to how it ends.
fn inject(
    fault: Fault,
    daemon: &Daemon,
    sim: &PortalSim,
    rng: &mut StdRng,
    revert: &mut Option<Revert>,
) -> bool {
    let saves = sim.ledger().len();
    match fault {
        Fault::ExpireSessions => {
            sim.faults().expire_sessions_now();
        }
        Fault::SlowPages => {
            sim.faults().apply(FaultPatch {
                page_delay_ms: Some(rng.gen_range(300..1500)),
                ..FaultPatch::default()
            });
            *revert = Some(Revert {
                patch: FaultPatch {
                    page_delay_ms: Some(0),
                    ..FaultPatch::default()
                },
                at: Instant::now() + Duration::from_millis(rng.gen_range(2000..5000)),
                until_a_save: false,
                saves,
            });
        }
        Fault::Error500AfterSave => {
            sim.faults().break_after_save(AfterSave::Error500);
            *revert = Some(Revert {
                patch: FaultPatch {
                    after_save: Some(AfterSave::Normal),
                    ..FaultPatch::default()
                },
                at: Instant::now() + Duration::from_secs(30),
                until_a_save: true,
                saves,
            });
        }
        Fault::DropConnections => sim.faults().drop_next_requests(rng.gen_range(1..4)),
        Fault::FailLogins => sim.faults().fail_next_logins(rng.gen_range(1..3)),
        Fault::KillJobChromium | Fault::KillMasterChromium => {
            let (_, browsers) = daemon.browsers();
            let master = fault == Fault::KillMasterChromium;
            let aimed: Vec<_> = browsers
                .iter()
                .filter(|b| {
                    b.user_data_dir()
                        .is_some_and(|d| d.ends_with("master-profile") == master)
                })
                .collect();
            if aimed.is_empty() {
                return false;
            }
            child::kill(aimed[rng.gen_range(0..aimed.len())].pid as i32);
        }
        Fault::KillChromedriver => {
            let (drivers, _) = daemon.browsers();
            if drivers.is_empty() {
                return false;
            }
            for pid in drivers {
                child::kill(pid as i32);
            }
        }
    }
    true
}
