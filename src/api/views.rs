//! The JSON shapes the API answers with, built from the book. Times are
//! RFC 3339 (UTC); a job's document is never included (it holds personal
//! data, and the client has it).

use serde_json::{json, Value};

use crate::book::{Book, JobRecord, Recovery};
use crate::engine::session::Health;
use crate::export::rfc3339;
use crate::journal::{JobEvent, Millis};
use crate::machine::job::Status;

fn time(at: Option<Millis>) -> Value {
    at.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

/// Attempts started since the job's last requeue (its current round).
pub fn round_attempts(job: &JobRecord) -> u32 {
    let mut n = 0;
    for step in &job.timeline {
        match step.event {
            JobEvent::AttemptStarted { .. } => n += 1,
            JobEvent::Requeued { .. } => n = 0,
            _ => {}
        }
    }
    n
}

/// Retries: attempts after the first of their round.
pub fn retries(job: &JobRecord) -> u32 {
    job.timeline
        .iter()
        .filter(|s| matches!(s.event, JobEvent::AttemptStarted { attempt } if attempt > 1))
        .count() as u32
}

/// From the first attempt's start to the outcome, for ended jobs.
pub fn duration_ms(job: &JobRecord) -> Option<i64> {
    let first = job
        .timeline
        .iter()
        .find(|s| matches!(s.event, JobEvent::AttemptStarted { .. }))?;
    Some(job.finished_at? - first.at)
}

/// The failure type: the failure kind, or `post_submission`.
pub fn failure_type(job: &JobRecord) -> Option<&'static str> {
    let f = job.last_failure.as_ref()?;
    Some(f.kind.map_or("post_submission", |k| k.as_str()))
}

/// A one-line reason for the dashboard's table.
pub fn failure_line(job: &JobRecord) -> Option<String> {
    let f = job.last_failure.as_ref()?;
    Some(format!(
        "{} at {}: {}",
        failure_type(job).unwrap_or("failure"),
        f.stage,
        f.error
    ))
}

/// A job without its timeline, as lists show it.
pub fn job_summary(job: &JobRecord) -> Value {
    let status = job.status();
    json!({
        "id": job.id.0,
        "status": status.as_str(),
        "attempts": round_attempts(job),
        "max_attempts": job.machine.max_attempts(),
        "attempts_total": job.attempts_started,
        "requeues": job.requeues,
        "proposal_no": job.proposal_no,
        "failure": job.last_failure.as_ref().map(|f| json!({
            "type": failure_type(job),
            "stage": f.stage,
            "error": f.error,
        })),
        "accepted_at": rfc3339(job.accepted_at),
        "updated_at": rfc3339(job.updated_at),
        "finished_at": time(job.finished_at),
        "next_attempt_at": match status {
            Status::Pending => time(job.machine.not_before()),
            _ => Value::Null,
        },
    })
}

/// A job in full: the summary plus failure evidence and the timeline.
pub fn job_detail(job: &JobRecord) -> Value {
    let mut out = job_summary(job);
    let artifacts: Vec<&String> = job
        .timeline
        .iter()
        .flat_map(|s| match &s.event {
            JobEvent::AttemptFailed { artifacts, .. }
            | JobEvent::PostSubmissionFailed { artifacts, .. } => artifacts.iter(),
            _ => [].iter(),
        })
        .collect();
    let timeline: Vec<Value> = job
        .timeline
        .iter()
        .map(|s| {
            json!({
                "seq": s.seq,
                "at": rfc3339(s.at),
                "event": s.name(),
                "note": s.note(),
            })
        })
        .collect();
    if let (Value::Object(map), Some(f)) = (&mut out, &job.last_failure) {
        map.insert(
            "failure".into(),
            json!({
                "type": failure_type(job),
                "stage": f.stage,
                "error": f.error,
                "artifacts": f.artifacts,
            }),
        );
    }
    if let Value::Object(map) = &mut out {
        map.insert("submitted_at".into(), time(job.submitted_at));
        map.insert("artifacts".into(), json!(artifacts));
        map.insert("timeline".into(), Value::Array(timeline));
    }
    out
}

/// Counts and rates over every job.
pub fn stats(book: &Book) -> Value {
    let mut counts = serde_json::Map::new();
    for status in Status::ALL {
        counts.insert(status.as_str().into(), json!(0));
    }
    let (mut total, mut attempts, mut retried, mut requeues) = (0u64, 0u64, 0u64, 0u64);
    let mut durations: Vec<i64> = Vec::new();
    for job in book.jobs() {
        total += 1;
        let key = job.status().as_str();
        let n = counts.get(key).and_then(Value::as_u64).unwrap_or(0);
        counts.insert(key.into(), json!(n + 1));
        attempts += u64::from(job.attempts_started);
        retried += u64::from(retries(job));
        requeues += u64::from(job.requeues);
        if job.status() == Status::Completed {
            durations.extend(duration_ms(job));
        }
    }
    let count = |s: Status| counts.get(s.as_str()).and_then(Value::as_u64).unwrap_or(0);
    let completed = count(Status::Completed);
    let ended = completed + count(Status::FailedLoginForm) + count(Status::FailedPostSubmission);
    let mean = (!durations.is_empty())
        .then(|| durations.iter().sum::<i64>() as f64 / durations.len() as f64 / 1000.0);
    json!({
        "total": total,
        "by_status": counts,
        "ended": ended,
        "success_rate": (ended > 0).then(|| completed as f64 / ended as f64),
        "mean_seconds_per_job": mean,
        "attempts": attempts,
        "retries": retried,
        "requeues": requeues,
    })
}

pub fn recovery(r: &Recovery) -> Value {
    json!({
        "started_seq": r.started_seq,
        "started_at": rfc3339(r.started_at),
        "finished_at": time(r.finished_at),
        "trigger": r.trigger,
        "outcome": r.outcome,
        "highest_level": r.tries.iter().map(|t| t.level).max().map(|l| l.as_str()),
        "tries": r.tries.iter().map(|t| json!({
            "level": t.level.as_str(),
            "try": t.attempt,
            "duration_ms": t.duration_ms,
            "error": t.error,
        })).collect::<Vec<_>>(),
    })
}

pub fn health_str(h: Health) -> &'static str {
    match h {
        Health::Up(_) => "up",
        Health::Recovering => "recovering",
        Health::Down => "down",
        Health::Starting => "starting",
    }
}

pub fn session(book: &Book, health: Health, halted: Option<String>) -> Value {
    let s = &book.session;
    let rung = s.machine.rung();
    json!({
        "state": s.status(),
        "health": health_str(health),
        "level": rung.map(|(l, _)| l.as_str()),
        "try": rung.map(|(_, t)| t),
        "last_login_at": time(s.last_login_at),
        "current_recovery": s.current_recovery().map(recovery),
        "recoveries": s.recoveries.len(),
        "engine_halted": halted,
    })
}
