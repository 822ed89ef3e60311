//! The job routes: intake, reads, stats, the operator's retry, and the
//! master session's reads.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tracing::{info, info_span, warn};

use super::{error, views, AppState};
use crate::book::RecordError;
use crate::engine::{Intake, IntakeError};
use crate::journal::{now_millis, JobEvent, JobId};
use crate::machine::job::Status;

/// Longest `policyId` taken.
const MAX_ID_LEN: usize = 64;
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// One bad field of a refused job.
fn problem(path: &str, field: Option<&str>, message: impl Into<String>) -> Value {
    json!({ "path": path, "field": field, "message": message.into() })
}

/// A profile key path (`aadharCard.key`, `items.0`) as a JSON path.
fn json_path(key_path: &str) -> String {
    let mut out = String::from("$");
    for part in key_path.split('.') {
        if !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            out.push('.');
            out.push_str(part);
        }
    }
    out
}

/// Ids name folders of evidence and appear in URLs: they start with a
/// letter or digit (so never `.` or `..`) and hold no separators.
fn valid_id(id: &str) -> bool {
    id.len() <= MAX_ID_LEN
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A body, or the answer to a body that could not be read (413 when over
/// the limit).
fn body_or_refusal(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, Box<Response>> {
    body.map_err(|rejection| {
        Box::new(if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is over the limit of {} bytes",
                    state.0.max_body_bytes
                ),
            )
        } else {
            error(rejection.status(), rejection.body_text())
        })
    })
}

/// Parses JSON, or answers 400 naming the line and column.
fn parse_json(bytes: &[u8]) -> Result<Value, Box<Response>> {
    serde_json::from_slice(bytes).map_err(|e| {
        Box::new(
            (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": format!("malformed JSON at line {}, column {}: {e}", e.line(), e.column()),
                "line": e.line(),
                "column": e.column(),
            })),
        )
            .into_response(),
        )
    })
}

/// `POST /api/jobs`: one job document. Nothing is journaled for a job that
/// is refused.
pub(super) async fn intake(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let bytes = match body_or_refusal(&state, body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let doc = match parse_json(&bytes) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Value::Object(fields) = &doc else {
        return error(
            StatusCode::BAD_REQUEST,
            "a job is one JSON object (an onlinePolicy document)",
        );
    };

    let mut problems = Vec::new();
    let id = match fields.get("policyId") {
        Some(Value::String(id)) if valid_id(id) => Some(JobId(id.clone())),
        Some(Value::String(id)) if id.is_empty() => {
            problems.push(problem("$.policyId", None, "required but empty"));
            None
        }
        Some(Value::String(_)) => {
            problems.push(problem(
                "$.policyId",
                None,
                format!("1 to {MAX_ID_LEN} characters: letters, digits, '.', '_' or '-', starting with a letter or digit"),
            ));
            None
        }
        Some(_) => {
            problems.push(problem("$.policyId", None, "must be text"));
            None
        }
        None => {
            problems.push(problem("$.policyId", None, "required but missing"));
            None
        }
    };
    if let Err(errors) = state.0.profile.extract(&doc) {
        problems.extend(
            errors
                .0
                .iter()
                .map(|e| problem(&json_path(&e.path), Some(&e.field), e.message.clone())),
        );
    }
    let Some(id) = id.filter(|_| problems.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": format!("the job has {} bad field(s)", problems.len()),
                "fields": problems,
            })),
        )
            .into_response();
    };

    // Stored in one canonical form (keys sorted, no spaces), so the same
    // document sent again compares equal however it was formatted.
    let document = doc.to_string();
    let _span = info_span!("job", job = %id).entered();
    match state.0.desk.intake(&id, &document) {
        Ok(Intake::Accepted { seq }) => {
            info!(seq, "job accepted");
            let view = job_view(&state, &id);
            let location = format!("/api/jobs/{}", id.0);
            (
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                Json(view),
            )
                .into_response()
        }
        Ok(Intake::Existing) => {
            info!("job sent again; already accepted");
            (StatusCode::OK, Json(job_view(&state, &id))).into_response()
        }
        Err(IntakeError::Conflict(_)) => {
            warn!("job id sent again with a different document; refused");
            error(
                StatusCode::CONFLICT,
                format!(
                    "job {id} already exists with a different document; \
                     a changed job needs a new policyId"
                ),
            )
        }
        Err(IntakeError::Halted(why)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the engine has stopped taking work: {why}"),
        ),
        Err(IntakeError::Record(e)) => record_failure(&e),
    }
}

fn record_failure(e: &RecordError) -> Response {
    match e {
        RecordError::Refused { source, .. } => error(StatusCode::CONFLICT, source.to_string()),
        RecordError::Journal(j) => {
            tracing::error!(error = %j, "the journal refused a write");
            // The engine halts on this (see `Engine::intake`): the client
            // may send the job again once an operator has made room.
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the journal could not be written, so the engine has stopped taking work: {j}"
                ),
            )
        }
    }
}

fn job_view(state: &AppState, id: &JobId) -> Value {
    let book = state.0.desk.recorder().book();
    book.job(id).map_or(Value::Null, views::job_detail)
}

/// `GET /api/jobs/{id}`.
pub(super) async fn one(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let detail = {
        let book = state.0.desk.recorder().book();
        match book.job(&JobId(id)) {
            Some(job) => views::job_detail(job),
            None => return error(StatusCode::NOT_FOUND, "no job with this id"),
        }
    };
    Json(super::evidence::with_links(&state, detail).await).into_response()
}

/// `GET /api/jobs?status=S[,S]&limit=N&cursor=C`: newest first. The cursor
/// is the position of the last job of the previous page in intake order,
/// so pages stay stable while new jobs arrive.
pub(super) async fn list(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut statuses = Vec::new();
    if let Some(text) = query.get("status").filter(|s| !s.is_empty()) {
        for name in text.split(',') {
            match Status::parse(name.trim()) {
                Some(s) => statuses.push(s),
                None => {
                    let known: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("unknown status {name:?}; one of {}", known.join(", ")),
                    );
                }
            }
        }
    }
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
            )
        }
    };
    let cursor = match query.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match c.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => return error(StatusCode::BAD_REQUEST, "cursor is not one this API gave"),
        },
    };

    let book = state.0.desk.recorder().book();
    let mut page = Vec::new();
    let mut next = None;
    let candidates = book
        .jobs()
        .rev()
        .map(|j| (j.timeline.first().map_or(0, |s| s.seq), j))
        .filter(|(seq, _)| cursor.is_none_or(|c| *seq < c))
        .filter(|(_, j)| statuses.is_empty() || statuses.contains(&j.status()));
    for (seq, job) in candidates {
        if page.len() == limit {
            next = page.last().map(|(s, _): &(u64, Value)| s.to_string());
            break;
        }
        page.push((seq, views::job_summary(job)));
    }
    let jobs: Vec<Value> = page.into_iter().map(|(_, v)| v).collect();
    Json(json!({ "jobs": jobs, "next_cursor": next })).into_response()
}

/// `GET /api/jobs/stats`.
pub(super) async fn stats(State(state): State<AppState>) -> Response {
    let book = state.0.desk.recorder().book();
    Json(views::stats(&book)).into_response()
}

/// `GET /api/session`.
pub(super) async fn session(State(state): State<AppState>) -> Response {
    let (health, halted) = (state.0.desk.health(), state.0.desk.halted());
    let book = state.0.desk.recorder().book();
    Json(views::session(&book, health, halted)).into_response()
}

/// `GET /api/recoveries?limit=N`: newest first.
pub(super) async fn recoveries(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let book = state.0.desk.recorder().book();
    let list: Vec<Value> = book
        .session
        .recoveries
        .iter()
        .rev()
        .take(limit)
        .map(views::recovery)
        .collect();
    Json(json!({ "recoveries": list, "total": book.session.recoveries.len() })).into_response()
}

/// `POST /api/jobs/{id}/retry` with `{"reason": "...",
/// "confirm_post_submission": true}`: puts a failed job back in the queue
/// for a new round of attempts. A job that failed after submission may
/// already have a proposal on the portal, so it needs the confirmation and
/// a reason, both journaled.
pub(super) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let bytes = match body_or_refusal(&state, body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let request = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match parse_json(&bytes) {
            Ok(v) => v,
            Err(r) => return *r,
        }
    };
    let reason = match request.get("reason") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(_) => {
            return error(StatusCode::BAD_REQUEST, "reason must be text");
        }
    };
    let confirmed = match request.get("confirm_post_submission") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "confirm_post_submission must be true or false",
            )
        }
    };
    if reason.chars().count() > 500 {
        return error(StatusCode::BAD_REQUEST, "reason is over 500 characters");
    }

    let id = JobId(id);
    let status = match state.0.desk.recorder().book().job(&id) {
        Some(job) => job.status(),
        None => return error(StatusCode::NOT_FOUND, "no job with this id"),
    };
    let event = match status {
        Status::FailedLoginForm => JobEvent::Requeued {
            reason: if reason.is_empty() {
                "retried by an operator".into()
            } else {
                reason
            },
            confirmed_post_submission: false,
        },
        Status::FailedPostSubmission if !confirmed => {
            return error(
                StatusCode::CONFLICT,
                "the job failed after submission: the proposal may already exist on the \
                 portal. Check the portal first; to retry anyway send \
                 confirm_post_submission: true and a reason",
            )
        }
        Status::FailedPostSubmission if reason.is_empty() => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({
                    "error": "a confirmed retry after submission needs a reason",
                    "fields": [problem("$.reason", None, "required but missing")],
                })),
            )
                .into_response()
        }
        Status::FailedPostSubmission => JobEvent::Requeued {
            reason,
            confirmed_post_submission: true,
        },
        other => {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "only a failed job can be retried; this one is {}",
                    other.as_str()
                ),
            )
        }
    };
    let _span = info_span!("job", job = %id).entered();
    match state.0.desk.recorder().job_event(&id, event, now_millis()) {
        Ok(seq) => {
            if status == Status::FailedPostSubmission {
                warn!(
                    seq,
                    "requeued after a post-submission failure, confirmed by an operator"
                );
            } else {
                info!(seq, "requeued by an operator");
            }
            Json(job_view(&state, &id)).into_response()
        }
        Err(e) => record_failure(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_become_json_paths() {
        assert_eq!(json_path("fullName"), "$.fullName");
        assert_eq!(json_path("aadharCard.key"), "$.aadharCard.key");
        assert_eq!(json_path("items.0.name"), "$.items[0].name");
    }

    #[test]
    fn ids_are_short_and_plain() {
        assert!(valid_id("POL-2026-000173"));
        assert!(!valid_id(""));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(".."));
        assert!(!valid_id(".profile"));
        assert!(!valid_id("-rf"));
        assert!(valid_id("v1.2_x-3"));
        assert!(!valid_id(&"x".repeat(65)));
    }
}
