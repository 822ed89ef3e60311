//! The `formwright` command. Parsing lives here; the work lives in
//! `formwright::cli`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use formwright::cli;
use formwright::journal::JobId;

#[derive(Parser)]
#[command(name = "formwright", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
