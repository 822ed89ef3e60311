//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format
//! (prometheus-client).
//!
//! Every figure but one is computed from the book at scrape time, so it is
//! exactly what a replay of the journal says, survives restarts, and cannot
//! drift from the dashboard. Counters stay monotonic because the journal
//! only grows. The exception is `formwright_attempt_step_seconds{step,
//! phase}`, the time of each step of the attempts this process ran
//! ([`crate::timing`]): not journaled, it starts afresh with the process.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::{error, views, AppState};
use crate::book::Book;
use crate::engine::session::Health;
use crate::journal::{JobEvent, Level};
use crate::machine::job::Status;
use crate::timing::StepTimes;

type Labels = Vec<(String, String)>;

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_string(), value.to_string())]
}

/// The metrics of one book, and the step times when given, encoded.
pub fn render(
    book: &Book,
    health: Health,
    steps: Option<&StepTimes>,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("formwright");

    let jobs = Family::<Labels, Gauge>::default();
    for status in Status::ALL {
        jobs.get_or_create(&label("status", status.as_str())).set(0);
    }
    let attempts = Counter::<u64>::default();
    let failures = Family::<Labels, Counter>::default();
    let requeues = Counter::<u64>::default();
    let duration = Histogram::new(exponential_buckets(5.0, 2.0, 10));
    for job in book.jobs() {
        jobs.get_or_create(&label("status", job.status().as_str()))
            .inc();
        attempts.inc_by(u64::from(job.attempts_started));
        requeues.inc_by(u64::from(job.requeues));
        for step in &job.timeline {
            match &step.event {
                JobEvent::AttemptFailed { kind, .. } => {
                    failures.get_or_create(&label("type", kind.as_str())).inc();
                }
                JobEvent::PostSubmissionFailed { .. } => {
                    failures
                        .get_or_create(&label("type", "post_submission"))
                        .inc();
                }
                _ => {}
            }
        }
        if job.status() == Status::Completed {
            if let Some(ms) = views::duration_ms(job) {
                duration.observe(ms.max(0) as f64 / 1000.0);
            }
        }
    }

    let recoveries = Family::<Labels, Counter>::default();
    let tries = Family::<Labels, Counter>::default();
    for level in [Level::Soft, Level::Hard, Level::Nuclear] {
        recoveries
            .get_or_create(&label("level", level.as_str()))
            .inc_by(0);
        tries
            .get_or_create(&label("level", level.as_str()))
            .inc_by(0);
    }
    for r in &book.session.recoveries {
        if let Some(level) = r.tries.iter().map(|t| t.level).max() {
            recoveries
                .get_or_create(&label("level", level.as_str()))
                .inc();
        }
        for t in &r.tries {
            tries.get_or_create(&label("level", t.level.as_str())).inc();
        }
    }
    let up = Gauge::<i64>::default();
    up.set(i64::from(matches!(health, Health::Up(_))));
    let last_seq = Gauge::<i64>::default();
    last_seq.set(i64::try_from(book.last_seq).unwrap_or(i64::MAX));

    registry.register("jobs", "Jobs by status", jobs);
    registry.register("attempts", "Attempts started", attempts);
    registry.register(
        "attempt_failures",
        "Failed attempts by failure type (post_submission: after the save click)",
        failures,
    );
    registry.register("requeues", "Operator requeues of failed jobs", requeues);
    registry.register(
        "job_duration_seconds",
        "Completed jobs: first attempt's start to the outcome",
        duration,
    );
    registry.register(
        "recoveries",
        "Master-session recoveries by the highest level they reached",
        recoveries,
    );
    registry.register("recovery_tries", "Recovery tries by level", tries);
    registry.register(
        "master_session_up",
        "1 when the master session is logged in",
        up,
    );
    registry.register(
        "journal_last_seq",
        "Sequence number of the last journal event",
        last_seq,
    );

    if let Some(steps) = steps {
        registry.register(
            "attempt_step_seconds",
            "Time of each step of an attempt (clone, navigate, check, each form step), \
             and of the browser pool's background wipes and preloads (phase pool), \
             since this process started",
            steps.histograms(),
        );
    }

    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let health = state.0.desk.health();
    let steps = state.0.desk.step_times();
    let text = {
        let book = state.0.desk.recorder().book();
        render(&book, health, steps.as_deref())
    };
    match text {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_times_are_served_as_a_histogram_by_step_and_phase() {
        let book = Book::default();
        let without = render(&book, Health::Starting, None).unwrap();
        assert!(!without.contains("attempt_step_seconds"), "{without}");

        let steps = StepTimes::new();
        steps.record(
            crate::timing::CLONE,
            crate::timing::OPEN_PHASE,
            std::time::Duration::from_millis(80),
        );
        steps.record(
            "first name",
            "pre_submit",
            std::time::Duration::from_millis(300),
        );
        let text = render(&book, Health::Starting, Some(&steps)).unwrap();
        assert!(
            text.contains("# TYPE formwright_attempt_step_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"formwright_attempt_step_seconds_bucket{le="0.08",step="clone",phase="open"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"formwright_attempt_step_seconds_count{step="first name",phase="pre_submit"} 1"#
            ),
            "{text}"
        );
    }
}
