//! Journal speed: appends of a batched event, the latency of a flushed
//! `submitted` append, replay speed over a 1,000,000-event journal, and the
//! bytes one completed job takes.
//!
//! `cargo bench --bench journal`. Criterion prints medians (`time`) and
//! events per second (`thrpt`); the size figure is printed first.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, BatchSize, Criterion, Throughput};

use formwright::book::{replay, Recorder};

/// The allocator the daemon runs with (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use formwright::journal::{Event, FailureKind, JobEvent, JobId, Journal, Subject};

/// The example `onlinePolicy` document, compacted: a realistic intake size.
fn document(policy: &str) -> String {
    let raw = include_str!("../examples/online-policy.json");
    let mut doc: serde_json::Value = serde_json::from_str(raw).expect("example parses");
    doc["policyId"] = serde_json::Value::String(policy.to_owned());
    doc.to_string()
}

/// Journals one job's whole life; `retry` adds a failed first attempt.
fn one_job(recorder: &Recorder, n: u64, retry: bool) -> u64 {
    let id = JobId(format!("POL-2026-{n:07}"));
    let at = 1_764_000_000_000 + n as i64;
    let mut events = vec![JobEvent::Accepted {
        document: document(&id.0),
        max_attempts: 3,
    }];
    let mut attempt = 1;
    if retry {
        events.push(JobEvent::AttemptStarted { attempt });
        events.push(JobEvent::AttemptFailed {
            attempt,
            kind: FailureKind::SessionExpired,
            stage: "clone check".into(),
            error: "the cloned session was expired".into(),
            retry_at: at + 60_000,
            artifacts: vec![],
        });
        attempt += 1;
    }
    events.push(JobEvent::AttemptStarted { attempt });
    events.push(JobEvent::Submitted { attempt });
    events.push(JobEvent::Completed {
        proposal_no: format!("R{n:09}"),
    });
    let count = events.len() as u64;
    for event in events {
        // The batched path: the bench measures the store, not fsync.
        recorder
            .journal()
            .append(&Subject::Job(id.clone()), &Event::Job(event), at)
            .expect("append");
    }
    count
}

fn completed_job_size() {
    let dir = tempfile::tempdir().unwrap();
    let (recorder, _) = Recorder::open(dir.path()).unwrap();
    one_job(&recorder, 1, false);
    let bytes = recorder.journal().stored_bytes();
    println!(
        "journal of one completed job (accepted, attempt, submitted, completed): {bytes} bytes"
    );
}

fn appends(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let subject = Subject::Job(JobId("POL-2026-0000001".into()));

    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(1));
    group.bench_function("batched attempt_started", |b| {
        b.iter(|| {
            let event = Event::Job(JobEvent::AttemptStarted { attempt: 1 });
            black_box(journal.append(&subject, &event, 0).unwrap())
        })
    });
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("flushed submitted", |b| {
        b.iter(|| {
            let event = Event::Job(JobEvent::Submitted { attempt: 1 });
            black_box(journal.append(&subject, &event, 0).unwrap())
        })
    });
    group.finish();
}

fn replays(c: &mut Criterion) {
    const EVENTS: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    {
        let (recorder, _) = Recorder::open(dir.path()).unwrap();
        let mut written = 0;
        let mut n = 0;
        while written < EVENTS {
            written += one_job(&recorder, n, n % 10 == 0);
            n += 1;
        }
        recorder.journal().flush().unwrap();
        println!("replay journal: {written} events, {n} jobs");
    }
    let journal = Journal::open(dir.path()).unwrap();
    let events = journal.last_seq();

    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    group.bench_function("1M events into the book", |b| {
        b.iter_batched(
            || (),
            |_| {
                let (book, report) = replay(&journal);
                assert_eq!(report.events, events);
                // Returned, so that freeing the book is not timed: replay
                // is the time until the state is there.
                book
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn figures(c: &mut Criterion) {
    completed_job_size();
    appends(c);
    replays(c);
}

criterion_group!(benches, figures);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_figures();
}

/// Reads criterion's medians back and prints the figures in one table.
fn print_figures() {
    let median_ns = |group: &str, name: &str| -> Option<f64> {
        let path = format!("target/criterion/{group}/{name}/new/estimates.json");
        let text = std::fs::read_to_string(path).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["median"]["point_estimate"].as_f64()
    };
    println!("\njournal figures (medians of this run)");
    if let Some(ns) = median_ns("append", "batched attempt_started") {
        println!(
            "  batched append:           {:>10.1} us  ({:.0} appends/s)",
            ns / 1e3,
            1e9 / ns
        );
    }
    if let Some(ns) = median_ns("append", "flushed submitted") {
        println!("  flushed submitted append: {:>10.3} ms", ns / 1e6);
    }
    if let Some(ns) = median_ns("replay", "1M events into the book") {
        println!(
            "  replay, 1,000,000 events: {:>10.2} s   ({:.0} events/s)",
            ns / 1e9,
            1e15 / ns
        );
    }
}
