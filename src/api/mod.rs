//! The HTTP API and the dashboard (axum).
//!
//! Reads come from the book that replay builds, never from a browser;
//! intake and retries go through the [`Recorder`], so a job the API accepts
//! is on disk before the answer leaves. Every route but `/healthz`, the
//! dashboard's login page and its login form needs the bearer token; the
//! dashboard's own reads (GET only) may use the session cookie its login
//! form sets instead, so the token never sits in a URL or a browser.
//!
//! | route | does |
//! |---|---|
//! | `POST /api/jobs` | intake, idempotent on `policyId` (201 new, 200 same, 409 different) |
//! | `GET /api/jobs` | paged list, newest first: `status`, `limit`, `cursor` |
//! | `GET /api/jobs/stats` | counts by status, success rate, mean time, retries |
//! | `GET /api/jobs/{id}` | one job with its timeline and evidence links |
//! | `GET /api/artifacts/{key}` | a piece of evidence: the file, or a redirect to a pre-signed S3 URL |
//! | `POST /api/jobs/{id}/retry` | an operator's requeue of a failed job |
//! | `GET /api/session` | the master session |
//! | `GET /api/recoveries` | the recovery history, newest first |
//! | `GET /metrics` | Prometheus (OpenMetrics) text |
//! | `GET /healthz` | liveness, no token |
//! | `GET /` | the dashboard |

mod dashboard;
mod evidence;
mod jobs;
mod metrics;
mod views;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::{debug, info};

use crate::artifacts::ArtifactStore;
use crate::book::Recorder;
use crate::config::Secret;
use crate::engine::portal::Portal;
use crate::engine::session::Health;
use crate::engine::{Engine, Intake, IntakeError};
use crate::journal::JobId;
use crate::profile::Profile;

/// What the API needs from the engine. [`Engine`] is the real one; a test
/// may serve the API over any other.
pub trait Desk: Send + Sync + 'static {
    /// The journal and the book.
    fn recorder(&self) -> &Arc<Recorder>;
    /// Takes a job; on disk before it returns.
    fn intake(&self, id: &JobId, document: &str) -> Result<Intake, IntakeError>;
    /// The master session as the workers see it.
    fn health(&self) -> Health;
    /// Why the engine stopped by itself, if it did.
    fn halted(&self) -> Option<String>;
    /// The timed spans of the attempts this process ran, if recorded.
    fn step_times(&self) -> Option<Arc<crate::timing::StepTimes>> {
        None
    }
}

impl<P: Portal> Desk for Engine<P> {
    fn recorder(&self) -> &Arc<Recorder> {
        Engine::recorder(self)
    }

    fn intake(&self, id: &JobId, document: &str) -> Result<Intake, IntakeError> {
        Engine::intake(self, id, document)
    }

    fn health(&self) -> Health {
        self.session().health()
    }

    fn halted(&self) -> Option<String> {
        Engine::halted(self)
    }

    fn step_times(&self) -> Option<Arc<crate::timing::StepTimes>> {
        self.portal().step_times()
    }
}

/// How the API is set up.
pub struct ApiSettings {
    /// The bearer token every protected route needs.
    pub token: Secret,
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Validates intake: every field the profile declares.
    pub profile: Profile,
    /// Where failure evidence is stored; `None` links to nothing.
    pub artifacts: Option<Arc<ArtifactStore>>,
}

/// How long a dashboard login lasts.
const DASHBOARD_SESSION: Duration = Duration::from_secs(12 * 3600);
const SESSION_COOKIE: &str = "formwright_session";

struct Shared {
    desk: Arc<dyn Desk>,
    profile: Profile,
    token: Secret,
    max_body_bytes: usize,
    artifacts: Option<Arc<ArtifactStore>>,
    /// Dashboard sessions: a random id (the cookie) and when it ends.
    sessions: Mutex<HashMap<String, Instant>>,
}

#[derive(Clone)]
struct AppState(Arc<Shared>);

impl AppState {
    fn token_matches(&self, offered: &str) -> bool {
        let expected = self.0.token.expose().as_bytes();
        bool::from(expected.ct_eq(offered.as_bytes()))
    }

    fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| self.token_matches(t.trim()))
    }

    fn cookie_ok(&self, headers: &HeaderMap) -> bool {
        let Some(id) = session_cookie(headers) else {
            return false;
        };
        let Ok(mut sessions) = self.0.sessions.lock() else {
            return false;
        };
        let now = Instant::now();
        sessions.retain(|_, until| *until > now);
        sessions.contains_key(&id)
    }

    fn new_session(&self) -> String {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if let Ok(mut sessions) = self.0.sessions.lock() {
            sessions.insert(id.clone(), Instant::now() + DASHBOARD_SESSION);
        }
        id
    }

    fn end_session(&self, headers: &HeaderMap) {
        if let (Some(id), Ok(mut sessions)) = (session_cookie(headers), self.0.sessions.lock()) {
            sessions.remove(&id);
        }
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
}

/// The API's router, ready for [`serve`].
pub fn router(desk: Arc<dyn Desk>, settings: ApiSettings) -> Router {
    let state = AppState(Arc::new(Shared {
        desk,
        profile: settings.profile,
        token: settings.token,
        max_body_bytes: settings.max_body_bytes,
        artifacts: settings.artifacts,
        sessions: Mutex::default(),
    }));
    let protected = Router::new()
        .route("/api/jobs", post(jobs::intake).get(jobs::list))
        .route("/api/jobs/stats", get(jobs::stats))
        .route("/api/jobs/{id}", get(jobs::one))
        .route("/api/jobs/{id}/retry", post(jobs::retry))
        .route("/api/artifacts/{*key}", get(evidence::artifact))
        .route("/api/session", get(jobs::session))
        .route("/api/recoveries", get(jobs::recoveries))
        .route("/metrics", get(metrics::metrics))
        .route("/dashboard/live", get(dashboard::live))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(protected)
        .route("/healthz", get(healthz))
        .route("/", get(dashboard::page))
        .route("/login", post(dashboard::login))
        .route("/logout", post(dashboard::logout))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Bearer token on every request; the dashboard cookie on GETs only, so a
/// page elsewhere cannot make a logged-in browser change anything.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let read_only = matches!(*request.method(), Method::GET | Method::HEAD);
    if state.bearer_ok(headers) || (read_only && state.cookie_ok(headers)) {
        return next.run(request).await;
    }
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token (Authorization: Bearer TOKEN)",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// One line per request: method, path (never the query or headers),
/// status, time.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_millis() as u64;
    if path == "/healthz" || path == "/dashboard/live" {
        debug!(%method, %path, status, ms, "http");
    } else {
        info!(%method, %path, status, ms, "http");
    }
    response
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.0.desk.halted() {
        None => Json(json!({ "status": "ok" })).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "halted", "error": why })),
        )
            .into_response(),
    }
}

/// A JSON error body: `{"error": message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}
