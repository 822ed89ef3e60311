//! Links to failure evidence: in a job's view, one per key, and the route
//! that opens one. The local store's files are served here; for S3 the
//! route redirects to a fresh pre-signed URL, so the dashboard's links
//! never go stale. Only keys a job's journal names are served.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{json, Value};

use super::{error, AppState};
use crate::artifacts::{content_type, job_of_key, Link, Store, StoreError};
use crate::journal::{JobEvent, JobId};

/// Where the API serves the evidence under `key`.
pub(super) fn href(key: &str) -> String {
    format!("/api/artifacts/{key}")
}

/// Adds `evidence: [{key, url}]` to a job's view: the pre-signed URL for
/// S3, the API's own route for the local store.
pub(super) async fn with_links(state: &AppState, mut detail: Value) -> Value {
    let keys: Vec<String> = detail["artifacts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    let mut links = Vec::new();
    for key in keys {
        let url = match &state.0.artifacts {
            None => Value::Null,
            Some(store) => match store.link(&key).await {
                Ok(Link::Url(url)) => json!(url),
                Ok(Link::File(_)) => json!(href(&key)),
                Err(e) => json!({ "error": e.to_string() }),
            },
        };
        links.push(json!({ "key": key, "url": url }));
    }
    if let Value::Object(map) = &mut detail {
        map.insert("evidence".into(), Value::Array(links));
    }
    detail
}

/// Whether some failure event of the key's job names `key`.
fn journaled(state: &AppState, key: &str) -> bool {
    let Some(job) = job_of_key(key) else {
        return false;
    };
    let book = state.0.desk.recorder().book();
    let Some(job) = book.job(&JobId::from(job)) else {
        return false;
    };
    job.timeline.iter().any(|step| match &step.event {
        JobEvent::AttemptFailed { artifacts, .. }
        | JobEvent::PostSubmissionFailed { artifacts, .. } => artifacts.iter().any(|a| a == key),
        _ => false,
    })
}

/// `GET /api/artifacts/{key}`.
pub(super) async fn artifact(State(state): State<AppState>, Path(key): Path<String>) -> Response {
    let Some(store) = &state.0.artifacts else {
        return error(StatusCode::NOT_FOUND, "no evidence store is configured");
    };
    if !journaled(&state, &key) {
        return error(StatusCode::NOT_FOUND, "no journaled evidence has this key");
    }
    match store.link(&key).await {
        Ok(Link::Url(url)) => Redirect::temporary(&url).into_response(),
        Ok(Link::File(path)) => match tokio::fs::read(&path).await {
            Ok(bytes) => (
                [
                    (header::CONTENT_TYPE, content_type(&key)),
                    // A captured page is the portal's HTML: never let it run
                    // scripts on the API's origin.
                    (header::CONTENT_SECURITY_POLICY, "sandbox"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                bytes,
            )
                .into_response(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => error(
                StatusCode::NOT_FOUND,
                "this evidence is not stored (yet, or any more: retention)",
            ),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Err(e @ StoreError::UnsafeKey { .. }) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}
