//! The `formwright` command. Parsing lives here; the work lives in
//! `formwright::cli`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use formwright::cli;
use formwright::journal::JobId;

/// mimalloc: replay builds millions of small strings and vectors at start,
/// and the system allocator spends a large share of replay's time on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "formwright", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the example jobs end to end against the simulated portal in
    /// headless Chromium, and print what happened.
    Demo(cli::demo::DemoArgs),
    /// Run the daemon: the engine on real browsers and the HTTP API, until
    /// SIGTERM or SIGINT.
    Run(cli::run::RunArgs),
    /// Send jobs to a running daemon: FILE holds one job, an array of jobs
    /// or NDJSON (`-` reads standard input).
    Submit {
        file: String,
        #[command(flatten)]
        api: cli::client::ApiArgs,
    },
    /// List a running daemon's jobs, newest first.
    Jobs {
        /// Only jobs in this status (comma-separated for several).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// The page after the one that printed this cursor.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        api: cli::client::ApiArgs,
    },
    /// Show one job: status, attempts, failure, timeline.
    Status {
        id: String,
        #[command(flatten)]
        api: cli::client::ApiArgs,
    },
    /// Put a failed job back in the queue for a new round of attempts.
    Retry {
        id: String,
        /// Why; journaled. Needed with --confirm-post-submission.
        #[arg(long)]
        reason: Option<String>,
        /// The job failed after submission and you checked that the portal
        /// holds no proposal for it.
        #[arg(long)]
        confirm_post_submission: bool,
        #[command(flatten)]
        api: cli::client::ApiArgs,
    },
    /// Serve the simulated agent portal alone, for a person to click through.
    PortalSim {
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Check every invariant over a journal and print each job's timeline.
    Replay {
        /// The journal folder.
        #[arg(long)]
        journal: PathBuf,
        /// Print only the summary, not every timeline.
        #[arg(long)]
        summary: bool,
    },
    /// Write a journal's history as JSON.
    Export {
        #[arg(long)]
        journal: PathBuf,
        /// Only this job's events.
        #[arg(long)]
        job: Option<String>,
        #[arg(long, value_enum, default_value = "json")]
        format: cli::export::Format,
        /// Include names, phone numbers and identity numbers in clear.
        #[arg(long)]
        reveal_personal: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The journal, browser profiles (session cookies) and evidence hold
    // personal data and secrets: nothing formwright or its browsers create
    // is readable by other users.
    formwright::owner_only::narrow_umask();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match args.command {
        Command::Demo(demo) => {
            init_logs();
            let workers = usize::from(demo.workers);
            let report = runtime()?.block_on(cli::demo::run(demo))?;
            cli::demo::print(&report, workers, &mut stdout)?;
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Run(run) => {
            cli::run::run(run)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit { file, api } => {
            let client = cli::client::ApiClient::from_args(&api)?;
            let ok = runtime()?.block_on(cli::client::submit(&client, &file, &mut stdout))?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Jobs {
            status,
            limit,
            cursor,
            api,
        } => {
            let client = cli::client::ApiClient::from_args(&api)?;
            runtime()?.block_on(cli::client::jobs(
                &client,
                status.as_deref(),
                limit,
                cursor.as_deref(),
                &mut stdout,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { id, api } => {
            let client = cli::client::ApiClient::from_args(&api)?;
            runtime()?.block_on(cli::client::status(&client, &id, &mut stdout))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Retry {
            id,
            reason,
            confirm_post_submission,
            api,
        } => {
            let client = cli::client::ApiClient::from_args(&api)?;
            runtime()?.block_on(cli::client::retry(
                &client,
                &id,
                reason.as_deref(),
                confirm_post_submission,
                &mut stdout,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::PortalSim { port } => {
            init_logs();
            let config = formwright::portal_sim::SimConfig {
                port,
                ..Default::default()
            };
            eprintln!("simulated portal on http://127.0.0.1:{port}/Login/IMDLogin");
            eprintln!("log in as {} / {}", config.username, config.password);
            runtime()?.block_on(formwright::portal_sim::serve_forever(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { journal, summary } => {
            let passed = cli::replay::run(&journal, !summary, &mut stdout)?;
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Export {
            journal,
            job,
            format,
            reveal_personal,
        } => {
            let options = cli::export::Options {
                job: job.map(JobId),
                format,
                reveal_personal,
            };
            let skipped = cli::export::run(&journal, &options, &mut stdout)?;
            Ok(if skipped == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Human-readable logs on stderr; `RUST_LOG` filters (default: warnings).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
