//! What the engine, API, dashboard and hostile-input tests share: a
//! scripted portal (no browser), an API server on port 0 over a real
//! engine, and a small HTTP client.
#![allow(dead_code)]

pub mod scripted;

use std::sync::Arc;
use std::time::Duration;

use formwright::api::{self, ApiSettings};
use formwright::book::Recorder;
use formwright::config::Secret;
use formwright::engine::session::SessionConfig;
use formwright::engine::{Engine, EngineConfig};
use formwright::profile::Profile;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use scripted::Scripted;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const SIM_PROFILE: &str = include_str!("../../profiles/sim.toml");
pub const EXAMPLE_JOBS: &str = include_str!("../../examples/jobs.json");

pub fn fast_engine_config(max_attempts: u32) -> EngineConfig {
    EngineConfig {
        workers: 2,
        max_attempts,
        backoff: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        heartbeat: None,
        session: SessionConfig {
            try_pause: Duration::from_millis(10),
            cooldown: Duration::from_millis(100),
        },
        drain: Duration::from_secs(5),
        ..EngineConfig::default()
    }
}

/// An API server on port 0 over an engine on the scripted portal.
pub struct Server {
    pub base: String,
    pub engine: Engine<Scripted>,
    pub portal: Scripted,
    pub recorder: Arc<Recorder>,
    pub dir: tempfile::TempDir,
    stop: CancellationToken,
    engine_task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// `run_engine`: whether workers run (false keeps every job pending).
    pub async fn start(run_engine: bool, config: EngineConfig, max_body: usize) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal");
        Server::start_on(&journal, dir, run_engine, config, max_body).await
    }

    /// Like [`Server::start`], with the journal at `journal`; `dir` is kept
    /// alive as long as the server.
    pub async fn start_on(
        journal: &std::path::Path,
        dir: tempfile::TempDir,
        run_engine: bool,
        config: EngineConfig,
        max_body: usize,
    ) -> Server {
        let (recorder, _) = Recorder::open(journal).unwrap();
        let recorder = Arc::new(recorder);
        let portal = Scripted::default();
        let engine = Engine::new(Arc::clone(&recorder), Arc::new(portal.clone()), config);
        let router = api::router(
            Arc::new(engine.clone()),
            ApiSettings {
                token: Secret::new(TOKEN),
                max_body_bytes: max_body,
                profile: Profile::from_toml_str(SIM_PROFILE).unwrap(),
                artifacts: None,
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(api::serve(listener, router, async move {
            stopped.cancelled().await
        }));
        let engine_task = run_engine.then(|| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.run().await })
        });
        Server {
            base,
            engine,
            portal,
            recorder,
            dir,
            stop,
            engine_task,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        request(
            "GET",
            &format!("{}{path}", self.base),
            Some(TOKEN),
            None,
            &[],
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &str) -> Reply {
        request(
            "POST",
            &format!("{}{path}", self.base),
            Some(TOKEN),
            Some(body.to_string()),
            &[],
        )
        .await
    }

    /// Waits until `check` holds on the book, or panics after `secs`.
    pub async fn wait_for(&self, secs: u64, what: &str, check: impl Fn(&Server) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while !check(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn stop(mut self) {
        self.engine.shutdown();
        if let Some(task) = self.engine_task.take() {
            let _ = task.await;
        }
        self.stop.cancel();
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// One HTTP request over a real socket.
pub async fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let response = client.request(req).await.expect("the API answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The example jobs, as documents.
pub fn example_jobs() -> Vec<Value> {
    serde_json::from_str(EXAMPLE_JOBS).unwrap()
}

/// An example job with its id changed.
pub fn job(id: &str) -> Value {
    let mut doc = example_jobs().remove(0);
    doc["policyId"] = Value::String(id.to_string());
    doc
}
