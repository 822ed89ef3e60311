//! `formwright demo`: the whole product on one machine. A thin face on
//! [`crate::rig::Rig`] (the simulated portal, the engine, real headless
//! Chromium, the example jobs): it shows progress, then prints what
//! happened: a row per job, the portal's ledger checked for duplicates, and
//! the journal replayed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::browser::CloneStrategy;
use crate::profile::Profile;
use crate::rig::{parse_jobs, Report, Rig, RigOptions};

#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Jobs to run: `onlinePolicy` documents as one object, a JSON array or
    /// NDJSON (default: the 20 built-in examples).
    #[arg(long)]
    pub jobs: Option<PathBuf>,
    /// The portal profile (default: the built-in simulated-portal profile).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Attempts running at once.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: u16,
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
    /// How each attempt gets its browser: `pooled` (a warm browser per
    /// worker and one spare, wiped after each attempt and waiting on the
    /// dashboard for the next) or `fresh` (a new browser on a copy of the
    /// master's profile per attempt).
    #[arg(long, value_enum, default_value_t = CloneStrategy::Pooled)]
    pub clone_strategy: CloneStrategy,
    /// `pooled`: how many seconds a dashboard a parked browser preloaded
    /// may serve an attempt as it is; 0: parked browsers wait on a blank
    /// page and every attempt loads the dashboard itself.
    #[arg(long, default_value_t = crate::browser::pool::DEFAULT_PRELOAD_MAX_AGE.as_secs())]
    pub preload_max_age_s: u64,
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

/// Runs the demo: a [`Rig`] with the arguments' jobs, profile and faults,
/// a progress bar until every job has ended, and the rig's report.
pub async fn run(args: DemoArgs) -> anyhow::Result<Report> {
    let mut options = RigOptions::new(&args.work_dir)?;
    if let Some(path) = &args.profile {
        options.profile = Profile::load(path)?;
    }
    if let Some(path) = &args.jobs {
        options.jobs = parse_jobs(&read(path)?)?;
    }
    options.workers = usize::from(args.workers);
    options.backoff = Duration::from_millis(args.backoff_ms);
    options.webdriver_url = args.webdriver_url.clone();
    options.clone_strategy = args.clone_strategy;
    options.pool_preload_max_age = Duration::from_secs(args.preload_max_age_s);
    if args.expire_every > 0 {
        options.faults.expire_sessions_every_n_saves = Some(args.expire_every);
    }

    let rig = Rig::start(options).await?;
    eprintln!("simulated portal at {}", rig.sim().url());
    let bar = progress_bar(rig.jobs().len(), args.quiet);
    let ended = rig
        .wait_ended(Duration::from_secs(args.timeout_s), |p| {
            bar.set_position(p.ended as u64);
            bar.set_message(format!(
                "{} completed, master session {:?}",
                p.completed, p.session
            ));
        })
        .await;
    if ended {
        bar.finish();
    } else {
        bar.abandon();
        eprintln!("gave up waiting after {} s", args.timeout_s);
    }
    Ok(rig.finish().await?)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn progress_bar(total: usize, quiet: bool) -> indicatif::ProgressBar {
    let bar = if quiet {
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
    bar
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
    print_steps(report, out)?;
    let completed = report.completed();
    let median = report.median_seconds().unwrap_or(0.0);
    let per_minute = report.jobs_per_minute();
    writeln!(
        out,
        "{completed} of {} jobs completed in {:.1} s with {workers} worker{} \
         ({per_minute:.1} jobs/min, median {median:.1} s per job); ledger: {} proposals, \
         {} duplicates; journal replay {}",
        report.rows.len(),
        report.wall.as_secs_f64(),
        if workers == 1 { "" } else { "s" },
        report.ledger.len(),
        report.duplicates,
        if report.replay_ok() { "OK" } else { "FAILED" },
    )
}

/// Prints where the attempts' time went: each span's count, median, 95th
/// percentile and share of all the attempts' time; the pool's background
/// spans (no attempt waits for them) have no share.
pub fn print_steps(report: &Report, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let background = |s: &crate::timing::StepSummary| s.phase == crate::timing::POOL_PHASE;
    let all: f64 = report
        .steps
        .iter()
        .filter(|s| !background(s))
        .map(|s| s.total.as_secs_f64())
        .sum();
    if report.steps.is_empty() || all <= 0.0 {
        return Ok(());
    }
    writeln!(
        out,
        "\ntime per step ({} browsers{}):",
        report.clone_strategy,
        report.pool.map_or(String::new(), |p| format!(
            ", {} started, {} replaced, {} reuses, {} on a preloaded dashboard",
            p.started, p.replaced, p.reused, p.preloaded
        )),
    )?;
    writeln!(
        out,
        "{:<32} {:<11} {:>6} {:>10} {:>10} {:>7}",
        "step", "phase", "count", "median ms", "p95 ms", "share"
    )?;
    for s in &report.steps {
        let share = if background(s) {
            "(bg)".to_string()
        } else {
            format!("{:.1}%", s.total.as_secs_f64() / all * 100.0)
        };
        writeln!(
            out,
            "{:<32} {:<11} {:>6} {:>10.0} {:>10.0} {:>7}",
            s.step,
            s.phase,
            s.count,
            s.median.as_secs_f64() * 1000.0,
            s.p95.as_secs_f64() * 1000.0,
            share,
        )?;
    }
    writeln!(out)
}
