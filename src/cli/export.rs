//! `formwright export`: the journal as a JSON array or as NDJSON.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::export::record_to_json;
use crate::journal::{JobId, Journal, Subject};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Ndjson,
}

pub struct Options {
    pub job: Option<JobId>,
    pub format: Format,
    pub reveal_personal: bool,
}

/// Writes the export; returns how many unreadable records were skipped
/// (each is reported on stderr with its sequence number).
pub fn run(dir: &Path, options: &Options, out: &mut impl Write) -> anyhow::Result<usize> {
    let journal = Journal::open_existing(dir)
        .with_context(|| format!("opening journal {}", dir.display()))?;
    let mut skipped = 0;
    let mut first = true;
    if options.format == Format::Json {
        write!(out, "[")?;
    }
    for item in journal.iter() {
        let record = match item {
            Ok(r) => r,
            Err(e) => {
                eprintln!("skipped: {e}");
                skipped += 1;
                continue;
            }
        };
        if let Some(want) = &options.job {
            if record.subject != Subject::Job(want.clone()) {
                continue;
            }
        }
        let value = record_to_json(&record, options.reveal_personal);
        match options.format {
            Format::Ndjson => writeln!(out, "{value}")?,
            Format::Json => {
                let sep = if first { "\n  " } else { ",\n  " };
                write!(out, "{sep}{value}")?;
            }
        }
        first = false;
    }
    if options.format == Format::Json {
        writeln!(out, "{}]", if first { "" } else { "\n" })?;
    }
    if let (Some(job), true) = (&options.job, first) {
        anyhow::bail!("the journal has no events of job {job}");
    }
    Ok(skipped)
}
