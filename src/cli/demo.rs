//! `formwright demo`: the whole product on one machine. Starts the simulated
//! portal and the engine with real headless Chromium, feeds it the example
//! jobs, shows progress, and prints what happened: a row per job, the
//! portal's ledger checked for duplicates, and the journal replayed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::book::Recorder;
use crate::browser::portal::{LivePortal, LiveSettings};
use crate::browser::{BrowserConfig, Credentials};
use crate::engine::session::SessionConfig;
use crate::engine::{Engine, EngineConfig, Intake};
use crate::journal::{JobEvent, JobId};
use crate::machine::job::Status;
use crate::portal_sim::{PortalSim, SimConfig};
use crate::profile::Profile;

/// The simulated portal's profile and the example jobs, built in so the demo
/// runs from any folder.
pub const SIM_PROFILE: &str = include_str!("../../profiles/sim.toml");
pub const EXAMPLE_JOBS: &str = include_str!("../../examples/jobs.json");

#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Jobs to run: a JSON array of `onlinePolicy` documents (default: the
    /// 20 built-in examples).
    #[arg(long)]
    pub jobs: Option<PathBuf>,
    /// The portal profile (default: the built-in simulated-portal profile).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Attempts running at once.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Where the journal, browser profiles and failure evidence go. The
    /// journal there is started afresh.
    #[arg(long, default_value = "demo-output")]
    pub work_dir: PathBuf,
    /// Wait before retrying a failed attempt, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub backoff_ms: u64,
    /// Fault: the portal expires every session after each N-th proposal.
    #[arg(long, default_value_t = 0)]
    pub expire_every: u32,
    /// Use this WebDriver server instead of starting chromedriver.
    #[arg(long)]
    pub webdriver_url: Option<String>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_s: u64,
    /// No progress bar (for logs and CI).
    #[arg(long)]
    pub quiet: bool,
}

/// One finished job, as the table shows it.
pub struct Row {
    pub id: JobId,
    pub status: Status,
    pub attempts: u32,
    pub proposal_no: Option<String>,
    /// From the first attempt's start to the outcome.
    pub seconds: Option<f64>,
    pub reason: Option<String>,
}

/// What a demo run measured.
pub struct Report {
    pub rows: Vec<Row>,
    pub wall: Duration,
    pub ledger_proposals: usize,
    pub duplicates: usize,
    pub replay_ok: bool,
}

impl Report {
    pub fn all_completed(&self) -> bool {
        self.rows.iter().all(|r| r.status == Status::Completed)
    }

    pub fn passed(&self) -> bool {
        self.all_completed() && self.duplicates == 0 && self.replay_ok
    }
}

fn load_text(path: &Option<PathBuf>, builtin: &'static str) -> anyhow::Result<String> {
    match path {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())),
        None => Ok(builtin.to_owned()),
    }
}

/// Parses a JSON array of job documents; each needs a `policyId`.
pub fn parse_jobs(text: &str) -> anyhow::Result<Vec<(JobId, serde_json::Value)>> {
    let docs: Vec<serde_json::Value> = serde_json::from_str(text).context("parsing the jobs")?;
    docs.into_iter()
        .enumerate()
        .map(
            |(i, doc)| match doc.get("policyId").and_then(|v| v.as_str()) {
                Some(id) if !id.is_empty() => Ok((JobId(id.to_owned()), doc)),
                _ => bail!("job [{i}]: `policyId` is missing or not a string"),
            },
        )
        .collect()
}

pub async fn run(args: DemoArgs) -> anyhow::Result<Report> {
    let profile_text = load_text(&args.profile, SIM_PROFILE)?;
    let profile = Profile::from_toml_str(&profile_text).context("loading the portal profile")?;
    let jobs = parse_jobs(&load_text(&args.jobs, EXAMPLE_JOBS)?)?;
    for (id, doc) in &jobs {
        profile
            .extract(doc)
            .map_err(|e| anyhow::anyhow!("job {id} does not fit the profile: {e}"))?;
    }

    let sim = PortalSim::start(SimConfig::default())
        .await
        .context("starting the simulated portal")?;
    if args.expire_every > 0 {
        sim.faults().expire_sessions_every(args.expire_every);
    }
    eprintln!("simulated portal at {}", sim.url());

    let work = absolute(&args.work_dir)?;
    let journal_dir = work.join("journal");
    if journal_dir.exists() {
        std::fs::remove_dir_all(&journal_dir)
            .with_context(|| format!("clearing {}", journal_dir.display()))?;
    }
    let (recorder, _) = Recorder::open(&journal_dir)?;
    let recorder = Arc::new(recorder);

    let sim_config = SimConfig::default();
    let portal = LivePortal::new(LiveSettings {
        browser: BrowserConfig {
            webdriver_url: args.webdriver_url.clone(),
            work_dir: work.join("browsers"),
            ..BrowserConfig::default()
        },
        profile,
        base_url: sim.url(),
        credentials: Credentials::new(sim_config.username.clone(), sim_config.password.clone()),
        artifacts_dir: work.join("artifacts"),
    })
    .map_err(|e| anyhow::anyhow!("captcha solver: {e}"))?;
    let engine = Engine::new(
        Arc::clone(&recorder),
        Arc::new(portal),
        EngineConfig {
            workers: args.workers,
            backoff: Duration::from_millis(args.backoff_ms),
            heartbeat: Some(Duration::from_secs(30)),
            session: SessionConfig {
                try_pause: Duration::from_millis(500),
                cooldown: Duration::from_secs(10),
            },
            ..EngineConfig::default()
        },
    );

    for (id, doc) in &jobs {
        match engine.intake(id, &doc.to_string())? {
            Intake::Accepted { .. } | Intake::Existing => {}
        }
    }

    let started = Instant::now();
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run().await })
    };
    let finished = watch_progress(&recorder, jobs.len(), &args).await;
    engine.shutdown();
    let _ = runner.await;
    let wall = started.elapsed();
    if !finished {
        eprintln!("gave up waiting after {} s", args.timeout_s);
    }

    let ledger = sim.ledger();
    let mut by_chassis: BTreeMap<String, usize> = BTreeMap::new();
    for entry in &ledger {
        let chassis = entry.fields.get("ChassisNo").cloned().unwrap_or_default();
        *by_chassis.entry(chassis).or_default() += 1;
    }
    let duplicates = by_chassis.values().map(|n| n.saturating_sub(1)).sum();
    sim.shutdown().await;

    let rows = rows(&recorder, &jobs);
    drop(engine);
    let replay_ok = match Arc::try_unwrap(recorder) {
        Ok(recorder) => {
            drop(recorder);
            super::replay::check(&journal_dir)?.passed()
        }
        Err(_) => false,
    };
    Ok(Report {
        rows,
        wall,
        ledger_proposals: ledger.len(),
        duplicates,
        replay_ok,
    })
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(std::fs::canonicalize(path)?)
}

/// Shows a progress bar until every job has ended; false on timeout.
async fn watch_progress(recorder: &Recorder, total: usize, args: &DemoArgs) -> bool {
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} jobs ended  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    loop {
        let (ended, completed, session) = {
            let book = recorder.book();
            let ended = book.jobs().filter(|j| j.status().is_terminal()).count();
            let completed = book
                .jobs()
                .filter(|j| j.status() == Status::Completed)
                .count();
            (ended, completed, book.session.status())
        };
        bar.set_position(ended as u64);
        bar.set_message(format!("{completed} completed, master session {session:?}"));
        if ended >= total {
            bar.finish();
            return true;
        }
        if Instant::now() >= deadline {
            bar.abandon();
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn rows(recorder: &Recorder, jobs: &[(JobId, serde_json::Value)]) -> Vec<Row> {
    let book = recorder.book();
    jobs.iter()
        .filter_map(|(id, _)| book.job(id))
        .map(|job| {
            let first_start = job
                .timeline
                .iter()
                .find(|s| matches!(s.event, JobEvent::AttemptStarted { .. }))
                .map(|s| s.at);
            let seconds = match (first_start, job.finished_at) {
                (Some(a), Some(b)) => Some((b - a) as f64 / 1000.0),
                _ => None,
            };
            Row {
                id: job.id.clone(),
                status: job.status(),
                attempts: job.attempts_started,
                proposal_no: job.proposal_no.clone(),
                seconds,
                reason: job
                    .last_failure
                    .as_ref()
                    .filter(|_| job.status() != Status::Completed)
                    .map(|f| format!("{}: {}", f.stage, f.error)),
            }
        })
        .collect()
}

/// Prints the table and the summary line.
pub fn print(
    report: &Report,
    workers: usize,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<18} {:<24} {:>8} {:<16} {:>8}",
        "job", "status", "attempts", "proposal", "seconds"
    )?;
    for row in &report.rows {
        writeln!(
            out,
            "{:<18} {:<24} {:>8} {:<16} {:>8}",
            row.id.0,
            row.status.as_str(),
            row.attempts,
            row.proposal_no.as_deref().unwrap_or("-"),
            row.seconds.map_or("-".into(), |s| format!("{s:.1}")),
        )?;
        if let Some(reason) = &row.reason {
            writeln!(out, "    why: {reason}")?;
        }
    }
    let completed = report
        .rows
        .iter()
        .filter(|r| r.status == Status::Completed)
        .count();
    let mut secs: Vec<f64> = report.rows.iter().filter_map(|r| r.seconds).collect();
    secs.sort_by(f64::total_cmp);
    let median = secs.get(secs.len() / 2).copied().unwrap_or(0.0);
    let per_minute = completed as f64 / report.wall.as_secs_f64().max(0.001) * 60.0;
    writeln!(
        out,
        "{completed} of {} jobs completed in {:.1} s with {workers} workers \
         ({per_minute:.1} jobs/min, median {median:.1} s per job); ledger: {} proposals, \
         {} duplicates; journal replay {}",
        report.rows.len(),
        report.wall.as_secs_f64(),
        report.ledger_proposals,
        report.duplicates,
        if report.replay_ok { "OK" } else { "FAILED" },
    )
}
