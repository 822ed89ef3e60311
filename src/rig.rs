//! formwright with the simulated portal on one machine: what the demo and
//! the integration tests run.
//!
//! A [`Rig`] starts the simulated portal with its fault switches already
//! set, opens a fresh journal, builds the live portal (real headless
//! Chromium) and the engine, takes the jobs and runs them:
//!
//! ```text
//! Rig::start(options)   portal sim + faults, journal, LivePortal, Engine,
//!                       intake, engine running
//! rig.wait_ended(..)    until every job is terminal (or a timeout)
//! rig.finish()          engine and browsers stopped, ledger read, portal
//!                       stopped, journal replayed from disk -> Report
//! ```
//!
//! While it runs, [`Rig::sim`] flips fault switches and reads the ledger,
//! and [`Rig::recorder`] shows the book. A rig dropped without `finish` (a
//! test that panicked) asks the engine to stop, and the engine then closes
//! the master and every job browser; if the runtime itself goes away first,
//! the browser layer's drop guards kill what is left.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::artifacts::{ArtifactsSection, Evidence};
use crate::book::Recorder;
use crate::browser::portal::{LivePortal, LiveSettings};
use crate::browser::{BrowserConfig, CloneSettings, CloneStrategy, Credentials, PoolStats};
use crate::cli::replay::Verdict;
use crate::engine::alerts::AlertConfig;
use crate::engine::session::SessionConfig;
use crate::engine::{Engine, EngineConfig, IntakeError};
use crate::journal::{now_millis, JobEvent, JobId, JournalError, Millis};
use crate::machine::job::Status;
use crate::machine::session::SessionStatus;
use crate::portal_sim::{FaultPatch, LedgerEntry, PortalSim, SimConfig};
use crate::profile::{Profile, ProfileError};
use crate::timing::StepSummary;

/// The simulated portal's profile, built in so a rig runs from any folder.
pub const SIM_PROFILE: &str = include_str!("../profiles/sim.toml");
/// The 20 example jobs (`onlinePolicy` documents), built in likewise.
pub const EXAMPLE_JOBS: &str = include_str!("../examples/jobs.json");

/// Why a rig could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    #[error("loading the portal profile: {0}")]
    Profile(#[from] ProfileError),
    #[error("reading the jobs: {0}")]
    Jobs(String),
    #[error("job {job} does not fit the profile: {reason}")]
    JobDoesNotFit { job: JobId, reason: String },
    #[error("preparing the work folder {}: {source}", .path.display())]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the simulated portal: {0}")]
    Sim(std::io::Error),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("setting up the browsers: {0}")]
    Captcha(String),
    #[error("intake: {0}")]
    Intake(#[from] IntakeError),
    #[error("replaying the journal: {0}")]
    Replay(String),
    #[error("the master's login and the warm browsers were not ready within {0:?}")]
    NotWarm(Duration),
}

/// How a rig is set up. Start from [`RigOptions::new`] and change fields.
#[derive(Clone, Debug)]
pub struct RigOptions {
    /// The jobs, fed to intake in this order.
    pub jobs: Vec<(JobId, serde_json::Value)>,
    /// The portal profile; its `base_url` is replaced by the simulator's.
    pub profile: Profile,
    /// Journal (started afresh), browser profiles and failure evidence.
    pub work_dir: PathBuf,
    /// Attempts running at once.
    pub workers: usize,
    /// Attempts a job may use before it ends `failed_login_form`.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each later one.
    pub backoff: Duration,
    /// How often the master's login is checked; `None` turns it off.
    pub heartbeat: Option<Duration>,
    /// Pauses of the master session's recovery ladder.
    pub session: SessionConfig,
    /// A running WebDriver server instead of a local chromedriver.
    pub webdriver_url: Option<String>,
    /// The simulator's port and account.
    pub sim: SimConfig,
    /// Fault switches set on the portal before the engine starts.
    pub faults: FaultPatch,
    /// Where alerts go (none by default: logged only).
    pub alerts: AlertConfig,
    /// Where failure evidence goes (by default `work_dir/artifacts`).
    pub artifacts: ArtifactsSection,
    /// How each attempt gets its browser (`pooled` by default: one warm
    /// browser per worker and `pool_spare` more).
    pub clone_strategy: CloneStrategy,
    /// A pooled browser is replaced after this many attempts.
    pub pool_recycle_after: u32,
    /// Pooled browsers kept beyond one per worker.
    pub pool_spare: usize,
    /// How long a dashboard a parked browser preloaded serves an attempt
    /// as it is; zero turns preloading off.
    pub pool_preload_max_age: Duration,
    /// Takes the jobs only once the master is logged in and the warm
    /// browsers (`pooled`) have started, so no attempt waits for start-up;
    /// by default they are taken at once.
    pub warm_before_intake: bool,
}

impl RigOptions {
    /// The 20 example jobs on the simulated portal's profile, 3 workers, 3
    /// attempts, 2 s backoff, a 30 s heartbeat, no faults.
    pub fn new(work_dir: impl Into<PathBuf>) -> Result<RigOptions, RigError> {
        Ok(RigOptions {
            jobs: example_jobs()?,
            profile: Profile::from_toml_str(SIM_PROFILE)?,
            work_dir: work_dir.into(),
            workers: 3,
            max_attempts: 3,
            backoff: Duration::from_secs(2),
            heartbeat: Some(Duration::from_secs(30)),
            session: SessionConfig {
                try_pause: Duration::from_millis(500),
                cooldown: Duration::from_secs(10),
            },
            webdriver_url: None,
            sim: SimConfig::default(),
            faults: FaultPatch::default(),
            alerts: AlertConfig::default(),
            artifacts: ArtifactsSection::default(),
            clone_strategy: CloneStrategy::default(),
            pool_recycle_after: CloneSettings::default().recycle_after,
            pool_spare: CloneSettings::default().spare,
            pool_preload_max_age: CloneSettings::default().preload_max_age,
            warm_before_intake: false,
        })
    }
}

/// The built-in example jobs.
pub fn example_jobs() -> Result<Vec<(JobId, serde_json::Value)>, RigError> {
    parse_jobs(EXAMPLE_JOBS)
}

/// Parses job documents (one object, an array or NDJSON); each needs a
/// `policyId`.
pub fn parse_jobs(text: &str) -> Result<Vec<(JobId, serde_json::Value)>, RigError> {
    let docs = crate::documents::parse(text).map_err(|e| RigError::Jobs(format!("{e:#}")))?;
    docs.into_iter()
        .enumerate()
        .map(
            |(i, doc)| match doc.get("policyId").and_then(|v| v.as_str()) {
                Some(id) if !id.is_empty() => Ok((JobId(id.to_owned()), doc)),
                _ => Err(RigError::Jobs(format!(
                    "job [{i}]: `policyId` is missing or not a string"
                ))),
            },
        )
        .collect()
}

/// How far the jobs are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The rig's jobs.
    pub total: usize,
    /// Jobs in a terminal state.
    pub ended: usize,
    /// Jobs completed (a subset of `ended`).
    pub completed: usize,
    /// The master session's state.
    pub session: SessionStatus,
}

/// One job as it ended, as the demo's table shows it.
#[derive(Clone, Debug)]
pub struct Row {
    pub id: JobId,
    pub status: Status,
    /// Attempts started.
    pub attempts: u32,
    /// The number the portal gave, when the job read it.
    pub proposal_no: Option<String>,
    /// From the first attempt's start to the outcome.
    pub seconds: Option<f64>,
    /// The last failure, for a job that did not complete.
    pub reason: Option<String>,
}

/// What a finished rig measured and found.
pub struct Report {
    pub rows: Vec<Row>,
    /// From the engine's start (before the master's login) to the last
    /// job's end; to `finish` when some job never ended.
    pub wall: Duration,
    /// Every proposal the portal saved, oldest first.
    pub ledger: Vec<LedgerEntry>,
    /// Proposals saved more than once for one chassis number, counted
    /// beyond the first.
    pub duplicates: usize,
    pub journal_dir: PathBuf,
    /// The journal read back from disk after the engine stopped: its book,
    /// unreadable records, refused events, broken invariants.
    pub replay: Verdict,
    /// Whether the replayed book equals the one the live engine had.
    pub replay_matches_live: bool,
    /// How the attempts got their browsers.
    pub clone_strategy: CloneStrategy,
    /// What the warm pool did (`pooled`).
    pub pool: Option<PoolStats>,
    /// Where the attempts' time went, step by step, in attempt order.
    pub steps: Vec<StepSummary>,
}

impl Report {
    pub fn all_completed(&self) -> bool {
        self.rows.iter().all(|r| r.status == Status::Completed)
    }

    /// The journal replays clean and to the state the engine had.
    pub fn replay_ok(&self) -> bool {
        self.replay.passed() && self.replay_matches_live
    }

    /// Every job completed, no proposal twice, the journal replays clean.
    pub fn passed(&self) -> bool {
        self.all_completed() && self.duplicates == 0 && self.replay_ok()
    }

    pub fn completed(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.status == Status::Completed)
            .count()
    }

    /// The median of the jobs' seconds, first attempt to outcome.
    pub fn median_seconds(&self) -> Option<f64> {
        let mut secs: Vec<f64> = self.rows.iter().filter_map(|r| r.seconds).collect();
        secs.sort_by(f64::total_cmp);
        secs.get(secs.len() / 2).copied()
    }

    /// Completed jobs per minute of wall time.
    pub fn jobs_per_minute(&self) -> f64 {
        self.completed() as f64 / self.wall.as_secs_f64().max(0.001) * 60.0
    }
}

/// How long [`RigOptions::warm_before_intake`] waits for the first login
/// and the warm browsers.
const WARM_TIMEOUT: Duration = Duration::from_secs(180);

/// formwright and the simulated portal, running. See the module docs.
pub struct Rig {
    sim: PortalSim,
    engine: Engine<LivePortal>,
    /// The engine's portal, kept for its browser-side accessors.
    portal: Arc<LivePortal>,
    recorder: Arc<Recorder>,
    /// The task running [`Engine::run`].
    runner: JoinHandle<()>,
    /// The rig's jobs in intake order: what `wait_ended` waits for.
    jobs: Vec<JobId>,
    journal_dir: PathBuf,
    /// When the jobs were taken.
    started: Instant,
    /// `started` as journal time.
    started_at: Millis,
    /// The spool, the store and the uploader of failure evidence.
    evidence: Evidence,
    /// Stops the engine if the rig is dropped without `finish`.
    _stop: StopOnDrop,
}

/// Asks the engine to stop when dropped: the engine then ends every
/// browser itself, so a panicking test leaves none behind.
struct StopOnDrop(Engine<LivePortal>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

impl Rig {
    /// Starts the portal, sets its faults, opens a fresh journal in
    /// `work_dir/journal`, takes the jobs and starts the engine.
    pub async fn start(options: RigOptions) -> Result<Rig, RigError> {
        let RigOptions {
            jobs,
            profile,
            work_dir,
            workers,
            max_attempts,
            backoff,
            heartbeat,
            session,
            webdriver_url,
            sim: sim_config,
            faults,
            alerts,
            artifacts,
            clone_strategy,
            pool_recycle_after,
            pool_spare,
            pool_preload_max_age,
            warm_before_intake,
        } = options;
        for (id, doc) in &jobs {
            profile.extract(doc).map_err(|e| RigError::JobDoesNotFit {
                job: id.clone(),
                reason: e.to_string(),
            })?;
        }

        let work = absolute(&work_dir)?;
        let journal_dir = work.join("journal");
        if journal_dir.exists() {
            // A journal another run still holds is refused (and kept), not
            // deleted under it.
            drop(crate::journal::Journal::open(&journal_dir)?);
            std::fs::remove_dir_all(&journal_dir).map_err(|source| RigError::WorkDir {
                path: journal_dir.clone(),
                source,
            })?;
        }

        let sim = PortalSim::start(sim_config.clone())
            .await
            .map_err(RigError::Sim)?;
        sim.faults().apply(faults);

        let (recorder, _) = Recorder::open(&journal_dir)?;
        let recorder = Arc::new(recorder);
        let evidence = Evidence::start(&artifacts, &work, Arc::clone(&recorder)).await;
        let portal = LivePortal::new(LiveSettings {
            browser: BrowserConfig {
                webdriver_url,
                work_dir: work.join("browsers"),
                ..BrowserConfig::default()
            },
            profile,
            base_url: sim.url(),
            credentials: Credentials::new(sim_config.username, sim_config.password),
            spool: evidence.spool.clone(),
            clone: CloneSettings {
                strategy: clone_strategy,
                pool_size: workers.max(1),
                recycle_after: pool_recycle_after,
                spare: pool_spare,
                preload_max_age: pool_preload_max_age,
            },
        })
        .map_err(RigError::Captcha)?;
        let portal = Arc::new(portal);
        let engine = Engine::new(
            Arc::clone(&recorder),
            Arc::clone(&portal),
            EngineConfig {
                workers,
                max_attempts,
                backoff,
                heartbeat,
                session,
                alerts,
                ..EngineConfig::default()
            },
        );

        let intake = |engine: &Engine<LivePortal>| -> Result<(), RigError> {
            for (id, doc) in &jobs {
                engine.intake(id, &doc.to_string())?;
            }
            Ok(())
        };
        if !warm_before_intake {
            intake(&engine)?;
        }
        let runner = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.run().await })
        };
        if warm_before_intake {
            let warm = async {
                while !portal.is_warm().await {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            if tokio::time::timeout(WARM_TIMEOUT, warm).await.is_err() {
                engine.shutdown();
                let _ = runner.await;
                return Err(RigError::NotWarm(WARM_TIMEOUT));
            }
            if let Err(e) = intake(&engine) {
                engine.shutdown();
                let _ = runner.await;
                return Err(e);
            }
        }
        let (started, started_at) = (Instant::now(), now_millis());
        Ok(Rig {
            sim,
            _stop: StopOnDrop(engine.clone()),
            engine,
            portal,
            recorder,
            runner,
            jobs: jobs.into_iter().map(|(id, _)| id).collect(),
            journal_dir,
            started,
            started_at,
            evidence,
        })
    }

    /// The simulated portal: its URL, fault switches and ledger.
    pub fn sim(&self) -> &PortalSim {
        &self.sim
    }

    pub fn engine(&self) -> &Engine<LivePortal> {
        &self.engine
    }

    /// The live portal: the browsers' side, e.g. the master's process id.
    pub fn portal(&self) -> &LivePortal {
        &self.portal
    }

    /// Where failure evidence is spooled and stored.
    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }

    /// The journal and the book the engine keeps.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Every proposal the portal has saved so far.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.sim.ledger()
    }

    pub fn journal_dir(&self) -> &Path {
        &self.journal_dir
    }

    /// The rig's jobs, in intake order.
    pub fn jobs(&self) -> &[JobId] {
        &self.jobs
    }

    /// How far the rig's jobs are, from the book.
    pub fn progress(&self) -> Progress {
        let book = self.recorder.book();
        let mut progress = Progress {
            total: self.jobs.len(),
            ended: 0,
            completed: 0,
            session: book.session.status(),
        };
        for status in self
            .jobs
            .iter()
            .filter_map(|id| book.job(id))
            .map(|j| j.status())
        {
            progress.ended += usize::from(status.is_terminal());
            progress.completed += usize::from(status == Status::Completed);
        }
        progress
    }

    /// Waits until every job of the rig has ended; false after `timeout`.
    /// `on_progress` sees each look at the book (four a second).
    pub async fn wait_ended(
        &self,
        timeout: Duration,
        mut on_progress: impl FnMut(&Progress),
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let progress = self.progress();
            on_progress(&progress);
            if progress.ended >= progress.total {
                return true;
            }
            if Instant::now() >= deadline || self.runner.is_finished() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the engine (it closes every browser), reads the ledger, stops
    /// the portal, and replays the journal from disk.
    pub async fn finish(self) -> Result<Report, RigError> {
        let Rig {
            sim,
            engine,
            portal,
            recorder,
            runner,
            jobs,
            journal_dir,
            started,
            started_at,
            evidence,
            _stop,
        } = self;
        engine.shutdown();
        if let Err(e) = runner.await {
            tracing::error!(error = %e, "the engine's task ended badly");
        }
        let wall = match last_end(&recorder, &jobs) {
            Some(end) => Duration::from_millis((end - started_at).max(0).unsigned_abs()),
            None => started.elapsed(),
        };

        // The uploader holds the journal too; what it has not sent stays
        // spooled for the next start.
        evidence.stop().await;
        let ledger = sim.ledger();
        sim.shutdown().await;

        let rows = rows(&recorder, &jobs);
        let live = recorder.book().fingerprint();
        let steps = portal.step_times().summary();
        let (clone_strategy, pool) = (portal.clone_strategy(), portal.pool_stats());
        // The journal is opened again from disk, so every handle on the
        // live one must be gone first.
        drop((_stop, engine, portal));
        drop(recorder);
        let replay = crate::cli::replay::check(&journal_dir)
            .map_err(|e| RigError::Replay(format!("{e:#}")))?;
        let replay_matches_live = replay.book.fingerprint() == live;
        Ok(Report {
            rows,
            wall,
            duplicates: duplicates(&ledger),
            ledger,
            journal_dir,
            replay,
            replay_matches_live,
            clone_strategy,
            pool,
            steps,
        })
    }
}

fn absolute(path: &Path) -> Result<PathBuf, RigError> {
    let fail = |source| RigError::WorkDir {
        path: path.to_owned(),
        source,
    };
    crate::owner_only::create_dir_all(path).map_err(fail)?;
    std::fs::canonicalize(path).map_err(fail)
}

/// Proposals beyond the first for each chassis number in the ledger.
pub fn duplicates(ledger: &[LedgerEntry]) -> usize {
    let mut by_chassis: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in ledger {
        let chassis = entry.fields.get("ChassisNo").map_or("", String::as_str);
        *by_chassis.entry(chassis).or_default() += 1;
    }
    by_chassis.values().map(|n| n.saturating_sub(1)).sum()
}

/// When the last of `jobs` ended, if every one has.
fn last_end(recorder: &Recorder, jobs: &[JobId]) -> Option<Millis> {
    let book = recorder.book();
    let ends = jobs
        .iter()
        .map(|id| book.job(id).and_then(|j| j.finished_at));
    ends.collect::<Option<Vec<_>>>()?.into_iter().max()
}

fn rows(recorder: &Recorder, jobs: &[JobId]) -> Vec<Row> {
    let book = recorder.book();
    jobs.iter()
        .filter_map(|id| book.job(id))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_jobs_parse_and_fit_the_sim_profile() {
        let options = RigOptions::new("/tmp/unused").expect("options");
        assert_eq!(options.jobs.len(), 20);
        for (id, doc) in &options.jobs {
            assert!(options.profile.extract(doc).is_ok(), "{id}");
        }
    }

    #[test]
    fn jobs_without_a_policy_id_are_refused() {
        let e = parse_jobs(r#"[{"policyId": "A"}, {"x": 1}]"#).unwrap_err();
        assert!(e.to_string().contains("job [1]"), "{e}");
    }

    #[test]
    fn duplicates_count_proposals_beyond_the_first_per_chassis() {
        let entry = |chassis: &str| LedgerEntry {
            proposal_no: "R1".into(),
            at: chrono::Utc::now(),
            session: "S0001".into(),
            fields: [("ChassisNo".to_owned(), chassis.to_owned())].into(),
            total_premium: 1,
            payment_link_sent: false,
        };
        let ledger = [entry("A"), entry("B"), entry("A"), entry("A")];
        assert_eq!(duplicates(&ledger), 2);
        assert_eq!(duplicates(&ledger[..2]), 0);
    }
}
