//! `formwright replay`: reads a whole journal, checks every invariant,
//! prints each job's timeline and a summary.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::book::{self, Book, RecordError};
use crate::export::rfc3339;
use crate::invariants::{Checker, Violation};
use crate::journal::{Journal, JournalError};
use crate::machine::job::Status;

/// What a replay found. `passed()` is false when any record could not be
/// read, a machine refused an event, or an invariant is broken.
pub struct Verdict {
    pub book: Book,
    pub events: u64,
    pub unreadable: Vec<JournalError>,
    pub refused: Vec<(u64, RecordError)>,
    pub violations: Vec<Violation>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.unreadable.is_empty() && self.refused.is_empty() && self.violations.is_empty()
    }

    /// Sequence numbers at fault, sorted.
    pub fn offending_seqs(&self) -> Vec<u64> {
        let mut seqs: Vec<u64> = self
            .unreadable
            .iter()
            .filter_map(JournalError::seq)
            .chain(self.refused.iter().map(|(s, _)| *s))
            .chain(self.violations.iter().map(|v| v.seq))
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs
    }
}

/// Replays and checks the journal in `dir`.
pub fn check(dir: &Path) -> anyhow::Result<Verdict> {
    let journal = Journal::open_existing(dir)
        .with_context(|| format!("opening journal {}", dir.display()))?;
    let mut checker = Checker::new();
    let (book, report) = book::replay_observing(&journal, |record| checker.observe(record));
    Ok(Verdict {
        book,
        events: report.events,
        unreadable: report.unreadable,
        refused: report.refused,
        violations: checker.into_violations(),
    })
}

/// Prints timelines and the summary; returns whether the journal passed.
pub fn run(dir: &Path, timelines: bool, out: &mut impl Write) -> anyhow::Result<bool> {
    let verdict = check(dir)?;
    let book = &verdict.book;

    if timelines {
        for job in book.jobs() {
            writeln!(out, "job {}  [{}]", job.id, job.status().as_str())?;
            for step in &job.timeline {
                writeln!(
                    out,
                    "  {:>8}  {}  {}",
                    step.seq,
                    rfc3339(step.at),
                    step.note()
                )?;
            }
        }
        if !book.session.recoveries.is_empty() {
            writeln!(out, "master session recoveries")?;
            for r in &book.session.recoveries {
                let tries: Vec<String> = r
                    .tries
                    .iter()
                    .map(|t| format!("{} {}", t.level.as_str(), t.attempt))
                    .collect();
                writeln!(
                    out,
                    "  {:>8}  {}  by {}: {:?} after [{}]",
                    r.started_seq,
                    rfc3339(r.started_at),
                    r.trigger,
                    r.outcome,
                    tries.join(", ")
                )?;
            }
        }
    }

    let mut counts: BTreeMap<Status, usize> = BTreeMap::new();
    for job in book.jobs() {
        *counts.entry(job.status()).or_default() += 1;
    }
    let by_status: Vec<String> = counts
        .iter()
        .map(|(s, n)| format!("{} {n}", s.as_str()))
        .collect();
    writeln!(
        out,
        "{} events, {} jobs ({}), {} recoveries, master session {:?}",
        verdict.events,
        book.len(),
        by_status.join(", "),
        book.session.recoveries.len(),
        book.session.status()
    )?;

    for e in &verdict.unreadable {
        writeln!(out, "UNREADABLE {e}")?;
    }
    for (seq, e) in &verdict.refused {
        writeln!(out, "REFUSED sequence {seq}: {e}")?;
    }
    for v in &verdict.violations {
        writeln!(out, "VIOLATION {v}")?;
    }
    if verdict.passed() {
        writeln!(out, "journal OK: every invariant holds")?;
    } else {
        let seqs: Vec<String> = verdict
            .offending_seqs()
            .iter()
            .map(u64::to_string)
            .collect();
        writeln!(out, "journal FAILED at sequence {}", seqs.join(", "))?;
    }
    Ok(verdict.passed())
}
