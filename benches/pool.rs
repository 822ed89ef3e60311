//! `cargo bench --bench pool`: the clone strategies side by side.
//!
//! Runs the same N example jobs (`FORMWRIGHT_BENCH_JOBS`, default 12, at
//! most 20) end to end on the simulated portal with real headless
//! Chromium, once per strategy (`fresh`, `pooled`) and number of parallel
//! jobs (1 and 3), and prints one table per portal pacing:
//!
//! - no artificial delays (always): the portal's `no_delays` switch on (the
//!   loading mask goes as soon as its request is answered, type-ahead lists
//!   look up at once) and its fast-typing drop off, and the profile's
//!   `type_pause_ms` 0, so what is left of a job is formwright, the browser
//!   and the portal's answers;
//! - realistic (with `FORMWRIGHT_BENCH_REALISTIC=1`): the portal with its
//!   defaults (200-400 ms loading mask, 250 ms type-ahead delay, fast-typing
//!   drop on) and the profile as it is (150 ms pause between fields at
//!   login).
//!
//! The four runs are repeated `FORMWRIGHT_BENCH_ROUNDS` times (default 3),
//! interleaved (fresh/1, pooled/1, fresh/3, pooled/3, then again), so a
//! drift in the shared machine's speed hits both strategies alike; each
//! figure is the median over the rounds (peak memory: the highest), and
//! the ratios are of those medians, with each round's own ratio beside.
//! `FORMWRIGHT_BENCH_RUNS=pooled/1,fresh/3` picks some of the four runs;
//! `FORMWRIGHT_BENCH_STEPS=1` prints each run's time per step to stderr;
//! `FORMWRIGHT_BENCH_TYPING=keys` types the form key by key (the simulated
//! portal's profile inserts text whole); `FORMWRIGHT_BENCH_SPARE=N` sets
//! the pool's spare browsers; `FORMWRIGHT_BENCH_WEBDRIVER=URL` drives a
//! chromedriver or Grid already running instead of starting one.
//!
//! Each run takes its jobs only once the master is logged in and, for
//! `pooled`, every warm browser has started, so no timed attempt waits
//! for start-up. Columns:
//!
//! - jobs/min: completed jobs over the time from the first attempt's start
//!   to the last job's end;
//! - median and p95 seconds per job, first attempt's start to its outcome;
//! - browser overhead per job, median and p95 over the attempts: the
//!   `ready` span, from an attempt's start to its copy of the login found
//!   logged in on the dashboard (`clone` + `navigate` + `check`: all an
//!   attempt does before its first form step). It includes the portal
//!   answering those few pages; `portal ms` is the time the simulated
//!   portal spent answering all of a job's requests, measured server-side.
//!   A pooled browser preloads the dashboard while parked, so its attempt
//!   only confirms it (`navigate` is then the portal's answer to that);
//!   the wipe and preload medians are printed beside (`wipe`, `prel`):
//!   no attempt waits for them, but they take machine time, which
//!   jobs/min counts;
//! - peak memory of the daemon (RSS of this process: engine and simulated
//!   portal) and of all browsers together (the PSS of every process
//!   chromedriver started, summed, so pages Chromium's processes share are
//!   counted once; chromedriver itself not counted), sampled every 2 s
//!   (reading the PSS of some 50 Chromium processes costs the kernel about
//!   0.1 CPU-second, which would slow the runs it measures if done often).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use formwright::browser::CloneStrategy;
use formwright::journal::JobEvent;
use formwright::portal_sim::FaultPatch;
use formwright::rig::{Report, Rig, RigOptions};
use formwright::timing::{quantile, CHECK, CLONE, NAVIGATE, PRELOAD, READY, WIPE};

/// How the simulated portal paces a job.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pacing {
    /// No loading-mask time, no type-ahead delay, no fast-typing drop, no
    /// pause between fields.
    NoDelays,
    /// The portal's defaults and the profile as it is.
    Realistic,
}

impl Pacing {
    fn describe(self) -> &'static str {
        match self {
            Pacing::NoDelays => {
                "simulated portal with NO ARTIFICIAL DELAYS (fault switches no_delays on, \
                 fast_typing_drop off: no loading-mask time, no type-ahead delay; profile \
                 type_pause_ms 0)"
            }
            Pacing::Realistic => {
                "simulated portal with its REALISTIC defaults (loading mask 200-400 ms after \
                 each request, type-ahead 250 ms, fast-typing drop on; profile type_pause_ms \
                 150)"
            }
        }
    }
}

/// One run's figures.
struct Run {
    strategy: CloneStrategy,
    parallel: usize,
    completed: usize,
    jobs: usize,
    jobs_per_min: f64,
    median_s: f64,
    p95_s: f64,
    /// The `ready` span (clone + navigate + check) over the attempts.
    overhead_ms: f64,
    overhead_p95_ms: f64,
    clone_ms: f64,
    navigate_ms: f64,
    check_ms: f64,
    /// Pooled: the background wipe of a returned browser and preload of
    /// the dashboard, medians (no attempt waits for them).
    wipe_ms: f64,
    preload_ms: f64,
    /// The portal's answering time per job (all its requests).
    portal_ms_per_job: f64,
    daemon_peak_mb: f64,
    browsers_peak_mb: f64,
    browsers_started: String,
}

fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let jobs = env_number("FORMWRIGHT_BENCH_JOBS")
        .unwrap_or(12)
        .clamp(1, 20);
    let mut pacings = vec![Pacing::NoDelays];
    if std::env::var("FORMWRIGHT_BENCH_REALISTIC").is_ok_and(|v| v == "1") {
        pacings.push(Pacing::Realistic);
    }
    let rounds = env_number("FORMWRIGHT_BENCH_ROUNDS").unwrap_or(3).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let mut tables = Vec::new();
    for pacing in pacings {
        let mut by_config: Vec<Vec<Run>> = Vec::new();
        for round in 1..=rounds {
            let mut i = 0;
            for parallel in [1, 3] {
                for strategy in [CloneStrategy::Fresh, CloneStrategy::Pooled] {
                    if !wanted(strategy, parallel) {
                        continue;
                    }
                    eprintln!(
                        "round {round}/{rounds}: {jobs} jobs, {strategy}, {parallel} at a time ..."
                    );
                    let run = runtime.block_on(run(strategy, parallel, jobs, pacing))?;
                    eprintln!(
                        "  {:.1} jobs/min, median {:.1} s, overhead {:.0} ms",
                        run.jobs_per_min, run.median_s, run.overhead_ms
                    );
                    if by_config.len() <= i {
                        by_config.push(Vec::new());
                    }
                    by_config[i].push(run);
                    i += 1;
                }
            }
        }
        tables.push((pacing, by_config));
    }
    for (pacing, by_config) in &tables {
        print(by_config, jobs, *pacing);
    }
    Ok(())
}

async fn run(
    strategy: CloneStrategy,
    parallel: usize,
    jobs: usize,
    pacing: Pacing,
) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let mut options = RigOptions::new(dir.path())?;
    options.jobs.truncate(jobs);
    options.workers = parallel;
    options.clone_strategy = strategy;
    options.heartbeat = None;
    options.warm_before_intake = true;
    options.webdriver_url = std::env::var("FORMWRIGHT_BENCH_WEBDRIVER").ok();
    if std::env::var("FORMWRIGHT_BENCH_TYPING").is_ok_and(|v| v == "keys") {
        options.profile.typing = formwright::profile::Typing::Keys;
    }
    if let Some(spare) = env_number("FORMWRIGHT_BENCH_SPARE") {
        options.pool_spare = spare;
    }
    if pacing == Pacing::NoDelays {
        options.faults = FaultPatch {
            no_delays: Some(true),
            fast_typing_drop: Some(false),
            ..FaultPatch::default()
        };
        options.profile.login.type_pause_ms = 0;
    }
    // Returns once the master is logged in and the pool is warm.
    let rig = Rig::start(options).await?;

    let peaks = Peaks::start(rig.portal().driver_pid().await);
    let ended = rig.wait_ended(Duration::from_secs(1800), |_| {}).await;
    let (_, portal_time) = rig.sim().answered();
    let report = rig.finish().await?;
    if std::env::var("FORMWRIGHT_BENCH_STEPS").is_ok_and(|v| v == "1") {
        formwright::cli::demo::print_steps(&report, &mut std::io::stderr())?;
    }
    let (daemon_peak, browsers_peak) = peaks.stop().await;
    anyhow::ensure!(ended, "not every job ended");
    anyhow::ensure!(report.duplicates == 0, "duplicate proposals");

    let span = |name: &str| report.steps.iter().find(|s| s.step == name);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median_ms = |name: &str| span(name).map_or(0.0, |s| ms(s.median));
    let attempts = span(CLONE).map_or(0, |s| s.count);
    let completed = report.completed();
    let portal_ms_per_job = portal_time.as_secs_f64() * 1000.0 / completed.max(1) as f64;

    let mut seconds: Vec<Duration> = report
        .rows
        .iter()
        .filter_map(|r| r.seconds)
        .map(Duration::from_secs_f64)
        .collect();
    seconds.sort();
    let active = active_time(&report);
    Ok(Run {
        strategy,
        parallel,
        completed,
        jobs,
        jobs_per_min: completed as f64 / active.as_secs_f64().max(0.001) * 60.0,
        median_s: quantile(&seconds, 0.5).as_secs_f64(),
        p95_s: quantile(&seconds, 0.95).as_secs_f64(),
        overhead_ms: median_ms(READY),
        overhead_p95_ms: span(READY).map_or(0.0, |s| ms(s.p95)),
        clone_ms: median_ms(CLONE),
        navigate_ms: median_ms(NAVIGATE),
        check_ms: median_ms(CHECK),
        wipe_ms: median_ms(WIPE),
        preload_ms: median_ms(PRELOAD),
        portal_ms_per_job,
        daemon_peak_mb: daemon_peak as f64 / 1024.0,
        browsers_peak_mb: browsers_peak as f64 / 1024.0,
        browsers_started: match report.pool {
            Some(p) => format!(
                "{} ({} reused, {} preloaded)",
                p.started, p.reused, p.preloaded
            ),
            None => attempts.to_string(),
        },
    })
}

/// The whole number an environment variable holds, if set and one.
fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|n| n.parse().ok())
}

/// Whether `FORMWRIGHT_BENCH_RUNS` (e.g. `pooled/1,fresh/3`; all when
/// unset) asks for this run.
fn wanted(strategy: CloneStrategy, parallel: usize) -> bool {
    let Ok(runs) = std::env::var("FORMWRIGHT_BENCH_RUNS") else {
        return true;
    };
    let this = format!("{strategy}/{parallel}");
    runs.split(',').any(|r| r.trim() == this)
}

/// From the first attempt's start to the last job's end.
fn active_time(report: &Report) -> Duration {
    let mut first = i64::MAX;
    let mut last = i64::MIN;
    for job in report.replay.book.jobs() {
        for step in &job.timeline {
            if matches!(step.event, JobEvent::AttemptStarted { .. }) {
                first = first.min(step.at);
            }
        }
        if let Some(end) = job.finished_at {
            last = last.max(end);
        }
    }
    Duration::from_millis((last - first).max(0).unsigned_abs())
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One configuration's rounds as one row: each figure the median over the
/// rounds, peak memory the highest, the browsers of the last round.
fn summary(rounds: &[Run]) -> Run {
    let mid = |f: fn(&Run) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let top = |f: fn(&Run) -> f64| rounds.iter().map(f).fold(0.0, f64::max);
    let last = &rounds[rounds.len() - 1];
    Run {
        strategy: last.strategy,
        parallel: last.parallel,
        completed: rounds.iter().map(|r| r.completed).min().unwrap_or(0),
        jobs: last.jobs,
        jobs_per_min: mid(|r| r.jobs_per_min),
        median_s: mid(|r| r.median_s),
        p95_s: mid(|r| r.p95_s),
        overhead_ms: mid(|r| r.overhead_ms),
        overhead_p95_ms: mid(|r| r.overhead_p95_ms),
        clone_ms: mid(|r| r.clone_ms),
        navigate_ms: mid(|r| r.navigate_ms),
        check_ms: mid(|r| r.check_ms),
        wipe_ms: mid(|r| r.wipe_ms),
        preload_ms: mid(|r| r.preload_ms),
        portal_ms_per_job: mid(|r| r.portal_ms_per_job),
        daemon_peak_mb: top(|r| r.daemon_peak_mb),
        browsers_peak_mb: top(|r| r.browsers_peak_mb),
        browsers_started: last.browsers_started.clone(),
    }
}

fn print(by_config: &[Vec<Run>], jobs: usize, pacing: Pacing) {
    let runs: Vec<Run> = by_config.iter().map(|r| summary(r)).collect();
    let rounds = by_config.iter().map(Vec::len).max().unwrap_or(0);
    println!();
    println!(
        "clone strategies: {jobs} example jobs per run, {rounds} rounds (figures: median over \
         the rounds), release build"
    );
    println!("measured on the {}", pacing.describe());
    println!(
        "timed after warm-up: each run takes its jobs only once the master is logged in and \
         (pooled) its warm browsers have started"
    );
    println!(
        "{:<8} {:>8} {:>9} {:>9} {:>9} {:>12} {:>12} {:>9} {:>9} {:>9} {:>8} {:>8} {:>10} {:>10} {:>11} {:>14}",
        "strategy",
        "parallel",
        "jobs/min",
        "median s",
        "p95 s",
        "overhead ms",
        "ovh p95 ms",
        "clone ms",
        "navig ms",
        "check ms",
        "wipe ms",
        "prel ms",
        "portal ms",
        "daemon MB",
        "browsers MB",
        "browsers",
    );
    for r in &runs {
        println!(
            "{:<8} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>12.0} {:>12.0} {:>9.0} {:>9.0} {:>9.0} {:>8.0} {:>8.0} {:>10.1} {:>10.0} {:>11.0} {:>14}",
            r.strategy.as_str(),
            r.parallel,
            r.jobs_per_min,
            r.median_s,
            r.p95_s,
            r.overhead_ms,
            r.overhead_p95_ms,
            r.clone_ms,
            r.navigate_ms,
            r.check_ms,
            r.wipe_ms,
            r.preload_ms,
            r.portal_ms_per_job,
            r.daemon_peak_mb,
            r.browsers_peak_mb,
            r.browsers_started,
        );
        if r.completed < r.jobs {
            println!("  ({} of {} jobs completed)", r.completed, r.jobs);
        }
    }
    let by: HashMap<(usize, &str), &Run> = runs
        .iter()
        .map(|r| ((r.parallel, r.strategy.as_str()), r))
        .collect();
    let rounds_of: HashMap<(usize, &str), &Vec<Run>> = by_config
        .iter()
        .filter_map(|r| r.last().map(|l| ((l.parallel, l.strategy.as_str()), r)))
        .collect();
    for parallel in [1, 3] {
        if let (Some(f), Some(p)) = (by.get(&(parallel, "fresh")), by.get(&(parallel, "pooled"))) {
            let each: Vec<String> = match (
                rounds_of.get(&(parallel, "fresh")),
                rounds_of.get(&(parallel, "pooled")),
            ) {
                (Some(f), Some(p)) => f
                    .iter()
                    .zip(p.iter())
                    .map(|(f, p)| format!("{:.2}x", p.jobs_per_min / f.jobs_per_min.max(0.001)))
                    .collect(),
                _ => Vec::new(),
            };
            println!(
                "pooled vs fresh at {parallel} parallel: {:.2}x jobs/min (rounds: {}), median \
                 {:.2}x, overhead {:.0} -> {:.0} ms per job (median)",
                p.jobs_per_min / f.jobs_per_min.max(0.001),
                each.join(", "),
                p.median_s / f.median_s.max(0.001),
                f.overhead_ms,
                p.overhead_ms,
            );
        }
    }
    if pacing == Pacing::NoDelays {
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let overheads: Vec<String> = [1, 3]
            .iter()
            .filter_map(|n| by.get(&(*n, "pooled")).map(|p| (n, p.overhead_ms)))
            .map(|(n, ms)| format!("{ms:.0} ms at {n} parallel, {}", verdict(ms <= 150.0)))
            .collect();
        if !overheads.is_empty() {
            println!(
                "target: pooled overhead <= 150 ms per job: {}",
                overheads.join("; ")
            );
        }
        if let (Some(f), Some(p)) = (by.get(&(3, "fresh")), by.get(&(3, "pooled"))) {
            let speedup = p.jobs_per_min / f.jobs_per_min.max(0.001);
            println!(
                "target: pooled >= 2x fresh jobs/min at 3 parallel: {speedup:.2}x, {}",
                verdict(speedup >= 2.0),
            );
        }
    }
    println!(
        "overhead: the `ready` span per attempt, median and p95 (start of the attempt to its \
         copy of the login found logged in on the dashboard: clone + navigate + check, all \
         before the first form step; for a pooled browser that preloaded the dashboard while \
         parked, navigate is the portal confirming the session and no page is loaded); it \
         includes the portal answering those pages, less than `portal ms`, the portal's \
         server-side time for all of a job's requests. clone, navig, check: medians. wipe, \
         prel: pooled, medians of the background wipe after an attempt and preload of the \
         dashboard while parked, which no attempt waits for but which share the machine \
         (their cost is in jobs/min). MB: peak memory (daemon: RSS; browsers: PSS of every \
         Chromium process, summed). browsers: started (pooled: reuses, and attempts that \
         found their browser preloaded)"
    );
}

/// Peak RSS of this process and of chromedriver's descendants.
struct Peaks {
    stop: Arc<AtomicBool>,
    daemon: Arc<AtomicU64>,
    browsers: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Peaks {
    fn start(driver: Option<u32>) -> Peaks {
        let stop = Arc::new(AtomicBool::new(false));
        let daemon = Arc::new(AtomicU64::new(0));
        let browsers = Arc::new(AtomicU64::new(0));
        let task = {
            let (stop, daemon, browsers) = (
                Arc::clone(&stop),
                Arc::clone(&daemon),
                Arc::clone(&browsers),
            );
            tokio::task::spawn_blocking(move || {
                while !stop.load(Ordering::SeqCst) {
                    daemon.fetch_max(rss_kib(std::process::id()), Ordering::SeqCst);
                    if let Some(driver) = driver {
                        let sum: u64 = descendants(driver).into_iter().map(pss_kib).sum();
                        browsers.fetch_max(sum, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_secs(2));
                }
            })
        };
        Peaks {
            stop,
            daemon,
            browsers,
            task,
        }
    }

    /// The peaks in KiB: (this process, the browsers).
    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        (
            self.daemon.load(Ordering::SeqCst),
            self.browsers.load(Ordering::SeqCst),
        )
    }
}

fn rss_kib(pid: u32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A process's proportional set size: its private pages plus its share of
/// pages it shares, so a sum over Chromium's processes counts each page once.
fn pss_kib(pid: u32) -> u64 {
    let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return 0;
    };
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Every process below `root` (not `root` itself).
fn descendants(root: u32) -> Vec<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = parent(&entry.path()) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        for &child in children.get(&pid).map_or(&[][..], Vec::as_slice) {
            out.push(child);
            todo.push(child);
        }
    }
    out
}

fn parent(proc_dir: &Path) -> Option<u32> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    // The fields after the parenthesised command: state, then ppid.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
