//! Crash torture: `formwright run` as a child process on real headless
//! Chromium against the simulated portal, with a stream of jobs over the
//! API, killed with SIGKILL (its whole process tree) at seeded random
//! moments aimed at each stage, and restarted on the same journal and work
//! folder, again and again. At the end every accepted job is in the journal
//! (terminal or still pending), the portal's ledger holds no proposal twice
//! and none for a job whose journal lacks `submitted`, and `formwright
//! replay` passes.
//!
//! `FORMWRIGHT_TORTURE_SEED` replays a run; `FORMWRIGHT_TORTURE_KILLS`
//! (default 30, what CI runs) sets the number of kills: 1000 locally for
//! the long run (README, "Crash torture").

mod child;
mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use child::{Daemon, Home};
use formwright::journal::JobEvent;
use formwright::machine::job::Status;
use formwright::portal_sim::{FaultPatch, PortalSim, SimConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Where a kill landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// An attempt running, from its clone of the login to `submitted`.
    Filling,
    /// Within a few milliseconds of `submitted` reaching the disk, before
    /// the click reached the portal.
    JustSubmitted,
    /// The save request on its way: `submitted` journaled, no proposal in
    /// the portal's ledger yet.
    Click,
    /// The proposal saved, its number not yet read back.
    AfterSave,
    /// A recovery of the master session running.
    Recovery,
    /// The stage aimed at had moved on by the time of the kill.
    Elsewhere,
}

impl Stage {
    const AIMED: [Stage; 5] = [
        Stage::Filling,
        Stage::JustSubmitted,
        Stage::Click,
        Stage::AfterSave,
        Stage::Recovery,
    ];

    fn name(self) -> &'static str {
        match self {
            Stage::Filling => "filling",
            Stage::JustSubmitted => "just after submitted",
            Stage::Click => "during the click",
            Stage::AfterSave => "after the save, number unread",
            Stage::Recovery => "during a recovery",
            Stage::Elsewhere => "elsewhere",
        }
    }
}

/// The save request is held this long at the portal: the click's window.
const SAVE_DELAY: Duration = Duration::from_millis(1200);

/// Jobs kept open (pending or running) while the run goes on.
const OPEN_JOBS: u64 = 3;

const ENGINE: &str = "workers = 2\nmax_attempts = 4\nbackoff_s = 0\nheartbeat_s = 1\n\
                      recovery_try_pause_s = 1\nrecovery_cooldown_s = 5\nshutdown_drain_s = 20";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_every_stage_loses_no_job_and_raises_no_proposal_twice() {
    child::require_browsers();
    let seed = child::seed("FORMWRIGHT_TORTURE_SEED");
    let kills: usize = std::env::var("FORMWRIGHT_TORTURE_KILLS")
        .ok()
        .and_then(|k| k.trim().parse().ok())
        .unwrap_or(30);
    let mut rng = StdRng::seed_from_u64(seed);
    let run_started = Instant::now();

    let sim = PortalSim::start(SimConfig {
        password: child::PASSWORD.into(),
        ..SimConfig::default()
    })
    .await
    .expect("the simulated portal starts");
    sim.faults().apply(FaultPatch {
        save_delay_ms: Some(SAVE_DELAY.as_millis() as u64),
        ..FaultPatch::default()
    });
    let home = Home::new("torture", &sim.url(), ENGINE);
    let api = home.api();
    let examples = child::example_jobs();
    let prefix = format!("T{}", seed % 100_000);

    // job id -> chassis number, for every job the API took.
    let mut accepted: BTreeMap<String, String> = BTreeMap::new();
    let mut landed: BTreeMap<Stage, usize> = BTreeMap::new();
    let mut restart_secs: Vec<f64> = Vec::new();
    let mut alone = 0;

    // The first kills aim at each stage once, in a seeded order; the rest
    // at a seeded random stage, weighted towards the cheap ones.
    let mut plan: Vec<Stage> = Stage::AIMED.to_vec();
    for i in (1..plan.len()).rev() {
        plan.swap(i, rng.gen_range(0..=i));
    }

    for kill in 0..kills {
        let mut daemon = Daemon::start(&home);
        let ready = daemon.wait_ready(Duration::from_secs(120)).await;
        restart_secs.push(daemon.started.elapsed().as_secs_f64());
        top_up(&api, &examples, &prefix, &mut accepted).await;

        let aim = plan.get(kill).copied().unwrap_or_else(|| {
            // A kill past `submitted` waits for a whole form to be filled
            // (about 15 s); the others come a few seconds after the login,
            // which keeps the 30 kills of CI within about four minutes.
            match rng.gen_range(0..32) {
                0..=14 => Stage::Filling,
                15..=28 => Stage::Recovery,
                29 => Stage::JustSubmitted,
                30 => Stage::Click,
                _ => Stage::AfterSave,
            }
        });
        let stage = aim_and_kill(&mut daemon, ready, aim, &sim, &accepted, &mut rng).await;
        // Mostly the whole process tree, as a service manager kills it;
        // sometimes the daemon alone, as a crash does, leaving its browsers
        // for the next start to end.
        if rng.gen_ratio(1, 4) {
            daemon.kill_alone();
            alone += 1;
        } else {
            daemon.kill(&home.work());
        }
        *landed.entry(stage).or_default() += 1;
        child::say(format!(
            "kill {:>4}/{kills}: aimed at {:<30} landed {:<30} ({:.0} s in)",
            kill + 1,
            aim.name(),
            stage.name(),
            run_started.elapsed().as_secs_f64()
        ));
    }

    // A last, undisturbed run: what is left finishes (or stays pending),
    // then a clean stop.
    let mut daemon = Daemon::start(&home);
    daemon.wait_ready(Duration::from_secs(120)).await;
    let settle = Instant::now() + Duration::from_secs(30);
    while Instant::now() < settle {
        let stats = child::stats(&api).await;
        if stats["total"] == stats["ended"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = daemon.stop(Duration::from_secs(60));
    assert!(status.success(), "the last daemon exited with {status}");
    let strays = child::strays(&home.work());
    child::reap_strays(&home.work());
    assert!(
        strays.is_empty(),
        "browsers outlived the daemon: {strays:?}"
    );
    let ledger = sim.ledger();
    sim.shutdown().await;

    // ---- the end checks ---------------------------------------------------
    let verdict = formwright::cli::replay::check(&home.journal()).expect("the journal opens");
    let book = &verdict.book;
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    let mut lost = Vec::new();
    for id in accepted.keys() {
        match book.job(&formwright::journal::JobId(id.clone())) {
            Some(job) => *by_status.entry(job.status().as_str()).or_default() += 1,
            None => lost.push(id.clone()),
        }
    }

    // Ledger entries by job, through the chassis number.
    let job_of: BTreeMap<&str, &str> = accepted
        .iter()
        .map(|(id, chassis)| (chassis.as_str(), id.as_str()))
        .collect();
    let mut proposals: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut strangers = Vec::new();
    for entry in &ledger {
        let chassis = entry.fields.get("ChassisNo").map_or("", String::as_str);
        match job_of.get(chassis) {
            Some(id) => proposals
                .entry(id)
                .or_default()
                .push(entry.proposal_no.as_str()),
            None => strangers.push(entry.proposal_no.clone()),
        }
    }
    let duplicates: Vec<_> = proposals.iter().filter(|(_, p)| p.len() > 1).collect();
    let mut unsubmitted = Vec::new();
    let mut wrong_number = Vec::new();
    for (id, numbers) in &proposals {
        let job = book.job(&formwright::journal::JobId((*id).to_string()));
        let submitted = job.is_some_and(|j| {
            j.timeline
                .iter()
                .any(|s| matches!(s.event, JobEvent::Submitted { .. }))
        });
        if !submitted {
            unsubmitted.push(id.to_string());
        }
        if let Some(job) = job.filter(|j| j.status() == Status::Completed) {
            if job.proposal_no.as_deref() != numbers.first().copied() {
                wrong_number.push(id.to_string());
            }
        }
    }
    // A job that completed read its number from a proposal the portal holds.
    let completed_without_proposal: Vec<_> = book
        .jobs()
        .filter(|j| j.status() == Status::Completed && !proposals.contains_key(j.id.0.as_str()))
        .map(|j| j.id.0.clone())
        .collect();
    let leftover_folders = std::fs::read_dir(home.work().join("browsers/jobs"))
        .map(|d| d.count())
        .unwrap_or(0);

    let replay = Command::new(env!("CARGO_BIN_EXE_formwright"))
        .args(["replay", "--summary", "--journal"])
        .arg(home.journal())
        .output()
        .expect("formwright replay runs");

    let mut rows: Vec<(String, String)> = Vec::new();
    rows.push(("seed".into(), seed.to_string()));
    for stage in [
        Stage::Filling,
        Stage::JustSubmitted,
        Stage::Click,
        Stage::AfterSave,
        Stage::Recovery,
        Stage::Elsewhere,
    ] {
        let n = landed.get(&stage).copied().unwrap_or(0);
        rows.push((format!("kills {}", stage.name()), n.to_string()));
    }
    rows.push(("kills".into(), kills.to_string()));
    rows.push(("  of the daemon alone".into(), alone.to_string()));
    rows.push(("jobs".into(), accepted.len().to_string()));
    for status in Status::ALL {
        let n = by_status.get(status.as_str()).copied().unwrap_or(0);
        rows.push((status.as_str().into(), n.to_string()));
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for id in accepted.keys() {
        let Some(job) = book.job(&formwright::journal::JobId(id.clone())) else {
            continue;
        };
        let why = match (job.status(), job.last_failure.as_ref()) {
            (Status::FailedLoginForm, Some(f)) => {
                format!(
                    "  failed_login_form: {}",
                    f.kind.map_or("?", |k| k.as_str())
                )
            }
            (Status::FailedPostSubmission, Some(f)) => {
                format!("  failed_post_submission: {}", f.stage)
            }
            _ => continue,
        };
        *reasons.entry(why).or_default() += 1;
    }
    rows.extend(reasons.into_iter().map(|(k, v)| (k, v.to_string())));
    rows.push(("proposals in the ledger".into(), ledger.len().to_string()));
    rows.push(("duplicates".into(), duplicates.len().to_string()));
    rows.push(("lost".into(), lost.len().to_string()));
    rows.push((
        "restart to login, median s".into(),
        format!("{:.1}", median(&mut restart_secs)),
    ));
    rows.push((
        "wall s".into(),
        format!("{:.0}", run_started.elapsed().as_secs_f64()),
    ));
    child::say(format!("daemon logs: {}", home.log_file.display()));
    child::table("crash torture", &rows);

    assert!(
        replay.status.success(),
        "formwright replay failed:\n{}{}",
        String::from_utf8_lossy(&replay.stdout),
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(verdict.passed(), "the journal does not replay clean");
    assert!(
        lost.is_empty(),
        "accepted jobs missing from the journal: {lost:?}"
    );
    assert!(
        duplicates.is_empty(),
        "proposals raised twice: {duplicates:?}"
    );
    assert!(strangers.is_empty(), "proposals of no job: {strangers:?}");
    assert!(
        unsubmitted.is_empty(),
        "proposals of jobs whose journal never says submitted: {unsubmitted:?}"
    );
    assert!(
        wrong_number.is_empty(),
        "completed with another number: {wrong_number:?}"
    );
    assert!(
        completed_without_proposal.is_empty(),
        "completed without a proposal on the portal: {completed_without_proposal:?}"
    );
    assert_eq!(
        by_status.get("filling").copied().unwrap_or(0)
            + by_status.get("submitted").copied().unwrap_or(0),
        0,
        "after a clean stop no job is left mid-attempt"
    );
    assert_eq!(leftover_folders, 0, "job folders left in the work folder");
    if kills >= Stage::AIMED.len() {
        for stage in Stage::AIMED {
            assert!(
                landed.get(&stage).copied().unwrap_or(0) > 0,
                "no kill landed {}",
                stage.name()
            );
        }
    }
}

/// Sends new jobs until `OPEN_JOBS` are open.
async fn top_up(
    api: &str,
    examples: &[serde_json::Value],
    prefix: &str,
    accepted: &mut BTreeMap<String, String>,
) {
    let stats = child::stats(api).await;
    let open = stats["total"].as_u64().unwrap_or(0) - stats["ended"].as_u64().unwrap_or(0);
    for _ in open..OPEN_JOBS {
        let (id, chassis, doc) = child::job(examples, prefix, accepted.len());
        let reply = child::submit(api, &doc).await;
        assert_eq!(reply.status, 201, "intake of {id}: {}", reply.text);
        accepted.insert(id, chassis);
    }
}

/// Waits for the moment `aim` names (with a seeded random delay), and says
/// where the daemon was when the caller kills it.
async fn aim_and_kill(
    daemon: &mut Daemon,
    ready: usize,
    aim: Stage,
    sim: &PortalSim,
    accepted: &BTreeMap<String, String>,
    rng: &mut StdRng,
) -> Stage {
    const WAIT: Duration = Duration::from_secs(90);
    let stuck = |what: &str, daemon: &Daemon| -> ! {
        panic!(
            "no {what} within {WAIT:?} of the daemon's login (stuck?):\n{}",
            daemon.log.tail(40)
        )
    };
    match aim {
        Stage::Filling => {
            // `attempt_started` is journaled just before the engine opens
            // the attempt's browser, which it logs first thing.
            let Some((at, _)) = daemon.wait_for(ready, "attempt started", WAIT).await else {
                stuck("attempt", daemon)
            };
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..4000))).await;
            if daemon.log.any_since(at, "submitted is durable") {
                Stage::Elsewhere
            } else {
                Stage::Filling
            }
        }
        Stage::JustSubmitted | Stage::Click | Stage::AfterSave => {
            let Some((at, line)) = daemon.wait_for(ready, "submitted is durable", WAIT).await
            else {
                stuck("submitted", daemon)
            };
            let job = job_in(&line).unwrap_or_default();
            let chassis = accepted.get(&job);
            let saved = || {
                sim.ledger()
                    .iter()
                    .any(|e| e.fields.get("ChassisNo") == chassis)
            };
            match aim {
                Stage::JustSubmitted => {
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(0..15))).await
                }
                Stage::Click => {
                    let pause = rng.gen_range(150..SAVE_DELAY.as_millis() as u64 - 100);
                    tokio::time::sleep(Duration::from_millis(pause)).await
                }
                _ => {
                    let deadline = Instant::now() + SAVE_DELAY + Duration::from_secs(10);
                    while !saved() && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(0..150))).await;
                }
            }
            let span = format!("job{{job={job} ");
            let completed = daemon
                .log
                .any_line(at, |l| l.contains(&span) && l.contains(": completed"));
            if completed {
                Stage::Elsewhere
            } else if saved() {
                Stage::AfterSave
            } else {
                aim
            }
        }
        Stage::Recovery => {
            sim.faults().expire_sessions_now();
            let Some((at, _)) = daemon.wait_for(ready, "recovery try", WAIT).await else {
                stuck("recovery", daemon)
            };
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..1000))).await;
            if daemon.log.any_since(at, "master session recovered") {
                Stage::Elsewhere
            } else {
                Stage::Recovery
            }
        }
        Stage::Elsewhere => unreachable!("not aimed at"),
    }
}

/// The job id of a log line in a job's span (`job{job=ID attempt=..}`).
fn job_in(line: &str) -> Option<String> {
    let start = line.find("job{job=")? + "job{job=".len();
    let rest = &line[start..];
    let end = rest.find([' ', '}'])?;
    Some(rest[..end].to_string())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// A daemon killed outright leaves its job browsers' folders; the next
/// start deletes them before any attempt runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_deletes_the_job_folders_a_killed_run_left() {
    child::require_browsers();
    let sim = PortalSim::start(SimConfig {
        password: child::PASSWORD.into(),
        ..SimConfig::default()
    })
    .await
    .expect("the simulated portal starts");
    let home = Home::new("torture-restart", &sim.url(), ENGINE);
    let stale = home.work().join("browsers/jobs/OLD-1/profile/Default");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("Cookies"), "x").unwrap();

    let mut daemon = Daemon::start(&home);
    daemon.wait_ready(Duration::from_secs(120)).await;
    let left = home.work().join("browsers/jobs/OLD-1").exists();
    daemon.kill(&home.work());
    sim.shutdown().await;
    assert!(!left, "the killed run's job folder is still there");
}

/// SIGKILL to the daemon alone (a crash, the OOM killer, `kill -9` by
/// hand) leaves chromedriver and Chromium running on the work folder; the
/// next start ends them and logs in on the same profile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_the_daemon_alone_was_killed_ends_its_browsers() {
    child::require_browsers();
    let sim = PortalSim::start(SimConfig {
        password: child::PASSWORD.into(),
        ..SimConfig::default()
    })
    .await
    .expect("the simulated portal starts");
    let home = Home::new("torture-orphans", &sim.url(), ENGINE);
    let mut daemon = Daemon::start(&home);
    daemon.wait_ready(Duration::from_secs(120)).await;
    let (_, doc) = {
        let (id, _, doc) = child::job(&child::example_jobs(), "ORPH", 0);
        (id, doc)
    };
    assert_eq!(child::submit(&home.api(), &doc).await.status, 201);
    daemon
        .wait_for(
            0,
            "login cloned into a job browser",
            Duration::from_secs(60),
        )
        .await
        .expect("an attempt starts");
    let (_, browsers) = daemon.browsers();
    assert!(browsers.len() >= 2, "master and job browsers: {browsers:?}");
    daemon.kill_alone();
    let orphans: Vec<u32> = child::strays(&home.work()).iter().map(|p| p.pid).collect();
    assert!(!orphans.is_empty(), "nothing survived the daemon");

    let mut daemon = Daemon::start(&home);
    daemon.wait_ready(Duration::from_secs(60)).await;
    let survivors: Vec<u32> = orphans
        .iter()
        .copied()
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    let recovered = daemon.log.any_since(0, "recovery try");
    daemon.kill(&home.work());
    sim.shutdown().await;
    assert!(
        survivors.is_empty(),
        "the last run's browsers still run: {survivors:?}"
    );
    assert!(!recovered, "the first login needed a recovery");
}
