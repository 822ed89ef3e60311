//! `formwright run`: the daemon. Loads the configuration, opens the
//! journal, starts the engine on real browsers and the HTTP API, and runs
//! until SIGTERM or SIGINT, then shuts down in order: no new attempts,
//! attempts past `submitted` finish (up to the drain time), the rest are
//! journaled interrupted, the API stops last.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::{self, ApiSettings};
use crate::artifacts::Evidence;
use crate::book::Recorder;
use crate::browser::portal::{LivePortal, LiveSettings};
use crate::browser::{BrowserConfig, Credentials};
use crate::config::{DaemonConfig, Secrets, ENV_CONFIG};
use crate::engine::Engine;
use crate::profile::Profile;

#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// The configuration file (see formwright.example.toml).
    #[arg(long, env = ENV_CONFIG)]
    pub config: Option<PathBuf>,
    /// Log one JSON object per line, whatever the configuration says.
    #[arg(long)]
    pub log_json: bool,
    /// Check the configuration, the profile and the secrets, then exit.
    #[arg(long)]
    pub check: bool,
}

/// A running daemon: the engine and the API over one journal.
pub struct Daemon {
    addr: SocketAddr,
    engine: Engine<LivePortal>,
    engine_task: JoinHandle<()>,
    api_task: JoinHandle<std::io::Result<()>>,
    api_stop: CancellationToken,
    drain: Duration,
    evidence: Evidence,
}

impl Daemon {
    /// Opens the journal, binds the API and starts the engine.
    pub async fn start(config: &DaemonConfig, secrets: Secrets) -> anyhow::Result<Daemon> {
        let profile = Profile::load(&config.profile)?;
        let base_url = if config.portal.base_url.is_empty() {
            profile.base_url.clone()
        } else {
            config.portal.base_url.clone()
        };

        let (recorder, report) = Recorder::open(&config.journal_dir)
            .with_context(|| format!("opening the journal {}", config.journal_dir.display()))?;
        for e in &report.unreadable {
            error!(error = %e, "journal value unreadable; skipped");
        }
        for (seq, e) in &report.refused {
            error!(seq, error = %e, "journal event refused on replay");
        }
        info!(
            events = report.events,
            jobs = recorder.book().len(),
            journal = %config.journal_dir.display(),
            "journal replayed"
        );
        let recorder = Arc::new(recorder);

        crate::owner_only::create_dir_all(&config.work_dir)
            .with_context(|| format!("creating {}", config.work_dir.display()))?;
        let evidence =
            Evidence::start(&config.artifacts, &config.work_dir, Arc::clone(&recorder)).await;
        let webdriver_url = Some(config.portal.webdriver_url.clone()).filter(|u| !u.is_empty());
        let portal = LivePortal::new(LiveSettings {
            browser: BrowserConfig {
                chromium: config.portal.chromium.clone(),
                chromedriver: config.portal.chromedriver.clone(),
                webdriver_url,
                work_dir: config.work_dir.join("browsers"),
                headless: true,
            },
            profile: profile.clone(),
            base_url,
            credentials: Credentials::new(
                config.portal.username.clone(),
                secrets.portal_password.expose(),
            ),
            spool: evidence.spool.clone(),
            clone: config.clone_settings(),
        })
        .map_err(|e| anyhow::anyhow!("setting up the browsers: {e}"))?;
        let engine_config = config.engine_config();
        let drain = engine_config.drain;
        let engine = Engine::new(Arc::clone(&recorder), Arc::new(portal), engine_config);

        let bind: std::net::IpAddr = config.api.bind.parse().context("api.bind")?;
        let listener = tokio::net::TcpListener::bind((bind, config.api.port))
            .await
            .with_context(|| format!("binding the API to {bind}:{}", config.api.port))?;
        let addr = listener.local_addr()?;
        let router = api::router(
            Arc::new(engine.clone()),
            ApiSettings {
                token: secrets.api_token,
                max_body_bytes: usize::try_from(config.api.max_body_bytes).unwrap_or(usize::MAX),
                profile,
                artifacts: Some(Arc::clone(&evidence.store)),
            },
        );
        let api_stop = CancellationToken::new();
        let stopped = api_stop.clone();
        let api_task = tokio::spawn(api::serve(listener, router, async move {
            stopped.cancelled().await
        }));
        info!(%addr, "API listening");

        let engine_task = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.run().await })
        };
        Ok(Daemon {
            addr,
            engine,
            engine_task,
            api_task,
            api_stop,
            drain,
            evidence,
        })
    }

    /// Where the API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn recorder(&self) -> &Arc<Recorder> {
        self.engine.recorder()
    }

    pub fn engine(&self) -> &Engine<LivePortal> {
        &self.engine
    }

    /// Stops in order and waits: the engine (bounded by the drain time,
    /// plus time to close the browsers), then the API; flushes the journal.
    pub async fn stop(self) -> anyhow::Result<()> {
        info!("shutting down: no new attempts");
        self.engine.shutdown();
        let bound = self.drain + Duration::from_secs(30);
        let mut engine_task = self.engine_task;
        if tokio::time::timeout(bound, &mut engine_task).await.is_err() {
            error!("the engine did not stop in time; leaving it");
            engine_task.abort();
        }
        self.evidence.stop().await;
        self.api_stop.cancel();
        match self.api_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "the API server ended with an error"),
            Err(e) => warn!(error = %e, "the API task failed"),
        }
        self.engine
            .recorder()
            .journal()
            .flush()
            .context("flushing the journal")?;
        info!("daemon stopped");
        Ok(())
    }
}

/// Sets up logging: human-readable on stderr, or JSON lines.
pub fn init_logs(json: bool, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// The whole command: returns once the daemon has stopped.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut loaded = DaemonConfig::load(args.config.as_deref(), &env)?;
    let config = loaded.config;
    init_logs(
        args.log_json || config.log_format == "json",
        &config.log_filter,
    );
    let secrets = Secrets::resolve(&config, &env, &mut loaded.warnings)?;
    for w in &loaded.warnings {
        warn!("{w}");
    }
    Profile::load(&config.profile)?;
    if args.check {
        eprintln!("configuration OK");
        return Ok(());
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let daemon = Daemon::start(&config, secrets).await?;
        info!(
            api = %daemon.addr(),
            workers = config.engine.workers,
            "formwright daemon started"
        );
        wait_for_signal().await?;
        daemon.stop().await
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
    Ok(())
}
