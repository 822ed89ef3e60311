//! The master session heals itself, with real Chromium against the simulated
//! portal: one recovery for many expired jobs, a killed master browser, a
//! corrupted profile, logins refused until everything fails, the heartbeat.
//! Each test prints the time each recovery level took.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use formwright::book::{Recovery, RecoveryOutcome};
use formwright::browser::portal::{backup_path, LivePortal};
use formwright::browser::CloneStrategy;
use formwright::engine::alerts::AlertConfig;
use formwright::engine::session::{Health, SessionConfig};
use formwright::engine::Engine;
use formwright::journal::{JobId, Level};
use formwright::machine::job::Status;
use formwright::portal_sim::PortalSim;
use formwright::rig::{example_jobs, Rig, RigOptions};

/// The rig with no jobs at first, and the example jobs to take later.
struct Stage {
    rig: Rig,
    jobs: Vec<(JobId, String)>,
    _dir: tempfile::TempDir,
}

impl Stage {
    async fn start(config: Config) -> Stage {
        let dir = tempfile::tempdir().unwrap();
        let mut options = RigOptions::new(dir.path()).unwrap();
        options.jobs = Vec::new();
        options.heartbeat = config.heartbeat;
        options.backoff = Duration::from_millis(500);
        options.session = config.session;
        options.alerts = config.alerts;
        // The default clone strategy (pooled), unless
        // FORMWRIGHT_TEST_CLONE_STRATEGY=fresh runs the suite on fresh
        // browsers.
        if let Ok(strategy) = std::env::var("FORMWRIGHT_TEST_CLONE_STRATEGY") {
            options.clone_strategy = match strategy.as_str() {
                "fresh" => CloneStrategy::Fresh,
                "pooled" => CloneStrategy::Pooled,
                other => panic!("FORMWRIGHT_TEST_CLONE_STRATEGY={other}: fresh or pooled"),
            };
        }
        let rig = Rig::start(options).await.unwrap();
        let jobs = example_jobs()
            .unwrap()
            .into_iter()
            .map(|(id, doc)| (id, doc.to_string()))
            .collect();
        Stage {
            rig,
            jobs,
            _dir: dir,
        }
    }

    fn sim(&self) -> &PortalSim {
        self.rig.sim()
    }

    fn engine(&self) -> &Engine<LivePortal> {
        self.rig.engine()
    }

    fn portal(&self) -> &LivePortal {
        self.rig.portal()
    }

    /// Takes the first `n` example jobs; returns their ids.
    fn intake(&self, n: usize) -> Vec<JobId> {
        self.jobs[..n]
            .iter()
            .map(|(id, doc)| {
                self.engine().intake(id, doc).unwrap();
                id.clone()
            })
            .collect()
    }

    fn status(&self, id: &JobId) -> Status {
        self.engine().recorder().book().job(id).unwrap().status()
    }

    fn recoveries(&self) -> Vec<Recovery> {
        self.engine().recorder().book().session.recoveries.clone()
    }

    async fn wait_up(&self, generation: u64, within: Duration) {
        let mut health = self.engine().session().subscribe();
        let reached = tokio::time::timeout(
            within,
            health.wait_for(|h| matches!(h, Health::Up(g) if *g >= generation)),
        )
        .await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "the master never reached generation {generation}: {:?}",
            self.engine().session().health()
        );
    }

    /// Stops everything; asserts the ledger holds no proposal twice and the
    /// journal replays clean.
    async fn finish(self) {
        let report = self.rig.finish().await.unwrap();
        assert_eq!(report.duplicates, 0, "duplicates in the ledger");
        assert!(report.replay_ok(), "the journal replays clean");
    }
}

struct Config {
    heartbeat: Option<Duration>,
    session: SessionConfig,
    alerts: AlertConfig,
}

fn config() -> Config {
    Config {
        heartbeat: None,
        session: SessionConfig {
            try_pause: Duration::from_millis(200),
            cooldown: Duration::from_secs(2),
        },
        alerts: AlertConfig::default(),
    }
}

fn tries(recovery: &Recovery) -> Vec<(Level, u32, bool)> {
    recovery
        .tries
        .iter()
        .map(|t| (t.level, t.attempt, t.error.is_none()))
        .collect()
}

/// Every rung failing, but the nuclear try's outcome as given.
fn whole_ladder(nuclear_logs_in: bool) -> Vec<(Level, u32, bool)> {
    use Level::*;
    vec![
        (Soft, 1, false),
        (Soft, 2, false),
        (Soft, 3, false),
        (Hard, 1, false),
        (Hard, 2, false),
        (Nuclear, 1, nuclear_logs_in),
    ]
}

fn print_durations(what: &str, recovery: &Recovery) {
    for t in &recovery.tries {
        println!(
            "{what}: {} try {} took {} ms ({})",
            t.level.as_str(),
            t.attempt,
            t.duration_ms,
            if t.error.is_none() {
                "logged in"
            } else {
                "failed"
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_met_by_three_jobs_is_one_soft_recovery() {
    let stage = Stage::start(config()).await;
    stage.wait_up(1, Duration::from_secs(60)).await;
    let jobs = stage.intake(3);

    // Expire the portal's sessions while all three are filling.
    let filling = async {
        while !jobs.iter().all(|id| stage.status(id) == Status::Filling) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), filling)
        .await
        .expect("three jobs filling at once");
    assert!(stage.sim().faults().expire_sessions_now() > 0);

    assert!(stage.engine().wait_idle(Duration::from_secs(240)).await);
    for id in &jobs {
        assert_eq!(stage.status(id), Status::Completed, "{id}");
    }
    let recoveries = stage.recoveries();
    assert_eq!(recoveries.len(), 1, "{recoveries:?}");
    assert_eq!(tries(&recoveries[0]), vec![(Level::Soft, 1, true)]);
    assert!(recoveries[0].trigger.starts_with("job "));
    assert!(
        stage.portal().masters_opened() <= 2,
        "a recovery opens at most one browser"
    );
    assert_eq!(stage.sim().ledger().len(), 3);
    print_durations("expired session", &recoveries[0]);
    stage.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_browser_is_replaced_by_a_hard_recovery() {
    let stage = Stage::start(config()).await;
    stage.wait_up(1, Duration::from_secs(60)).await;
    let pid = stage
        .portal()
        .master_pid()
        .await
        .expect("local chromium pid");
    // SAFETY-free: kill(2) on a pid we started; SIGKILL as a crash would.
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let jobs = stage.intake(2);
    assert!(stage.engine().wait_idle(Duration::from_secs(240)).await);
    for id in &jobs {
        assert_eq!(stage.status(id), Status::Completed, "{id}");
    }
    let recoveries = stage.recoveries();
    assert_eq!(recoveries.len(), 1, "{recoveries:?}");
    let seen = tries(&recoveries[0]);
    assert_eq!(
        seen,
        vec![
            (Level::Soft, 1, false),
            (Level::Soft, 2, false),
            (Level::Soft, 3, false),
            (Level::Hard, 1, true)
        ]
    );
    print_durations("killed master", &recoveries[0]);
    stage.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_profile_is_healed_by_a_nuclear_recovery() {
    let stage = Stage::start(Config {
        heartbeat: Some(Duration::from_millis(500)),
        ..config()
    })
    .await;
    stage.wait_up(1, Duration::from_secs(60)).await;

    // Garbage over the master's profile files, and a portal that refuses
    // every login until a fresh profile is used: soft x3 and hard x2 fail,
    // nuclear gets in.
    let profile_dir = stage.portal().settings().browser.master_profile_dir();
    let mut corrupted = 0;
    for entry in walk(&profile_dir) {
        if std::fs::write(&entry, b"\x00garbage\xff").is_ok() {
            corrupted += 1;
        }
    }
    assert!(corrupted > 0, "the master profile had files");
    stage.sim().faults().fail_all_logins(true);

    // Watch for the backup while the nuclear try runs.
    let backup = backup_path(&profile_dir);
    let backup_seen = Arc::new(Mutex::new(false));
    let watcher = {
        let (backup, seen) = (backup.clone(), Arc::clone(&backup_seen));
        let faults = stage.sim().faults();
        tokio::spawn(async move {
            for _ in 0..6000 {
                if backup.exists() {
                    *seen.lock().unwrap() = true;
                    faults.fail_all_logins(false);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    stage.sim().faults().expire_sessions_now();
    stage.wait_up(2, Duration::from_secs(180)).await;
    watcher.abort();

    let recoveries = stage.recoveries();
    let last = recoveries.last().unwrap();
    assert_eq!(tries(last), whole_ladder(true));
    assert_eq!(last.trigger, "heartbeat");
    assert!(
        *backup_seen.lock().unwrap(),
        "the backup existed during the try"
    );
    assert!(
        !backup.exists(),
        "a successful nuclear try deletes the backup"
    );
    let alerts = stage.engine().session().alerts().history();
    assert!(alerts
        .iter()
        .any(|a| a.text.contains("fresh browser profile")));

    let jobs = stage.intake(1);
    assert!(stage.engine().wait_idle(Duration::from_secs(120)).await);
    assert_eq!(stage.status(&jobs[0]), Status::Completed);
    print_durations("corrupted profile", last);
    stage.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_always_refused_end_down_with_one_alert_and_heal_later() {
    let receiver = WebhookReceiver::start().await;
    let stage = Stage::start(Config {
        alerts: AlertConfig {
            webhook: Some(receiver.url.clone()),
            ..AlertConfig::default()
        },
        session: SessionConfig {
            try_pause: Duration::from_millis(100),
            cooldown: Duration::from_secs(4),
        },
        ..config()
    })
    .await;
    stage.wait_up(1, Duration::from_secs(60)).await;
    let profile_dir = stage.portal().settings().browser.master_profile_dir();

    stage.sim().faults().fail_all_logins(true);
    stage.sim().faults().expire_sessions_now();
    let jobs = stage.intake(2);

    let down = async {
        while stage.engine().session().health() != Health::Down {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(180), down)
        .await
        .expect("the session goes down");
    let recoveries = stage.recoveries();
    let first = recoveries.first().unwrap();
    assert_eq!(tries(first), whole_ladder(false));
    assert_eq!(first.outcome, RecoveryOutcome::Down);
    assert!(profile_dir.exists(), "the backup was put back");
    assert!(!backup_path(&profile_dir).exists());
    for id in &jobs {
        let status = stage.status(id);
        assert!(
            matches!(status, Status::Pending | Status::Filling),
            "an outage fails no job: {id} is {status:?}"
        );
    }
    let alerts = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].contains("DOWN"), "{}", alerts[0]);
    assert!(alerts[0].contains("\"severity\":\"critical\""));

    // The portal lets logins through again: after the cool-down a new
    // ladder brings the session back and the jobs complete.
    stage.sim().faults().fail_all_logins(false);
    assert!(stage.engine().wait_idle(Duration::from_secs(240)).await);
    for id in &jobs {
        assert_eq!(stage.status(id), Status::Completed, "{id}");
    }
    assert!(stage
        .recoveries()
        .iter()
        .any(|r| r.outcome == RecoveryOutcome::Recovered));
    assert_eq!(receiver.bodies().len(), 1, "no second critical alert");
    print_durations("logins refused", first);
    stage.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_heals_an_expiry_with_no_job_in_flight() {
    let stage = Stage::start(Config {
        heartbeat: Some(Duration::from_millis(500)),
        ..config()
    })
    .await;
    stage.wait_up(1, Duration::from_secs(60)).await;
    let started = Instant::now();
    assert!(stage.sim().faults().expire_sessions_now() > 0);
    stage.wait_up(2, Duration::from_secs(60)).await;
    let recoveries = stage.recoveries();
    assert_eq!(recoveries.len(), 1);
    assert_eq!(recoveries[0].trigger, "heartbeat");
    assert_eq!(tries(&recoveries[0]), vec![(Level::Soft, 1, true)]);
    println!(
        "heartbeat: expiry healed {} ms after it happened",
        started.elapsed().as_millis()
    );
    stage.finish().await;
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.is_file() {
            files.push(path);
        }
    }
    files
}

/// A local webhook receiver: records every POST body.
struct WebhookReceiver {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl WebhookReceiver {
    async fn start() -> WebhookReceiver {
        let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
        let app = {
            let bodies = Arc::clone(&bodies);
            axum::Router::new().route(
                "/hook",
                axum::routing::post(move |body: String| {
                    let bodies = Arc::clone(&bodies);
                    async move {
                        bodies.lock().unwrap().push(body);
                        "ok"
                    }
                }),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        WebhookReceiver { url, bodies }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        while self.bodies().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.bodies()
    }
}
