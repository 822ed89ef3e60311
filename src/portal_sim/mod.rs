//! The simulated agent portal: an axum app that behaves like the insurer's
//! ASP.NET MVC agent portal (Kendo UI widgets, server-side sessions, a
//! captcha), with fault switches, so the demo and the tests can drive a real
//! browser through the whole proposal flow without the real portal.
//!
//! # Layout
//!
//! - [`captcha`]: the captcha text and its PNG, readable by tesseract.
//! - [`session`]: ASP.NET-like sessions with an idle timeout.
//! - [`catalogue`]: products, branches, make-models, RTO cities, financiers,
//!   pincodes.
//! - [`validate`]: server-side validation messages and the premium.
//! - [`faults`]: the fault switches and their [`Faults`] handle.
//! - [`ledger`]: every saved proposal, field by field.
//! - `pages` and `routes`: the HTML pages (templates in `assets/`) and the
//!   HTTP endpoints, including `/__admin`.
//!
//! The pages and their element ids, the admin endpoints and the known
//! differences from the real portal are described in `README.md` beside
//! this file.
//!
//! # Serving
//!
//! The simulator runs its own accept loop instead of `axum::serve`, because
//! one fault switch must close a connection without answering, which an axum
//! handler cannot do. Each connection is served by hyper's HTTP/1 server; a
//! connection whose request is to be dropped gets an error from the service,
//! and hyper then closes it without writing a response.

pub mod captcha;
pub mod catalogue;
pub mod faults;
pub mod ledger;
mod pages;
mod routes;
pub mod session;
pub mod validate;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;
use tracing::{debug, info, warn};

use faults::ExpiryWatch;
pub use faults::{AfterSave, FaultPatch, FaultState, Faults};
pub use ledger::LedgerEntry;

use captcha::CaptchaPainter;
use session::SessionStore;

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Port on 127.0.0.1; 0 picks any free port.
    pub port: u16,
    /// The one agent account's user name.
    pub username: String,
    /// The one agent account's password.
    pub password: String,
    /// A session unused for this long is logged out.
    pub idle_timeout: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            port: 0,
            username: "agent01".to_owned(),
            password: "sim-password".to_owned(),
            idle_timeout: Duration::from_secs(20 * 60),
        }
    }
}

/// State shared by every request.
pub(crate) struct Shared {
    config: SimConfig,
    faults: Mutex<FaultState>,
    sessions: Mutex<SessionStore>,
    ledger: Mutex<Vec<LedgerEntry>>,
    /// The "expire every N saves" switch, waiting for a moment between
    /// proposals.
    expiry: Mutex<ExpiryWatch>,
    painter: CaptchaPainter,
    next_proposal: AtomicU64,
    /// Requests answered (admin ones aside) and the time spent answering
    /// them, in nanoseconds: the portal's own share of a job's time.
    answered: AtomicU64,
    answering_ns: AtomicU64,
}

impl Shared {
    /// Back to a fresh start: no sessions, no proposals, default switches.
    /// Proposal numbers keep counting, so a number is never reused.
    fn reset(&self) {
        lock(&self.sessions).expire_all();
        lock(&self.ledger).clear();
        *lock(&self.faults) = FaultState::default();
        *lock(&self.expiry) = ExpiryWatch::default();
    }

    /// Ends every session if the "expire every N saves" switch is due and
    /// no proposal flow is in its final stretch.
    fn expire_if_due(&self) {
        if lock(&self.expiry).take_due() {
            let n = lock(&self.sessions).expire_all();
            warn!(
                sessions = n,
                "fault switch: expired every session after an N-th save"
            );
        }
    }
}

impl From<&Arc<Shared>> for Faults {
    fn from(shared: &Arc<Shared>) -> Self {
        Faults {
            shared: Arc::clone(shared),
        }
    }
}

/// Locks a mutex, going on with the data if another request panicked while
/// holding it: every critical section here leaves the data consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running simulated portal.
pub struct PortalSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for PortalSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalSim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The error a dropped request's service returns, so hyper closes the
/// connection without an answer.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by the drop-requests fault switch")]
struct DroppedByFault;

impl PortalSim {
    /// Binds 127.0.0.1 on the configured port and starts serving.
    ///
    /// Fails when the port is taken or no captcha font is found (see
    /// [`captcha::CaptchaPainter::load`]).
    pub async fn start(config: SimConfig) -> std::io::Result<PortalSim> {
        let painter = CaptchaPainter::load().map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(("127.0.0.1", config.port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            faults: Mutex::new(FaultState::default()),
            sessions: Mutex::new(SessionStore::new(config.idle_timeout)),
            ledger: Mutex::new(Vec::new()),
            expiry: Mutex::new(ExpiryWatch::default()),
            painter,
            next_proposal: AtomicU64::new(1),
            answered: AtomicU64::new(0),
            answering_ns: AtomicU64::new(0),
            config,
        });
        let app = routes::router(Arc::clone(&shared));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let server = tokio::spawn(accept_loop(listener, app, Arc::clone(&shared), shutdown_rx));
        info!(%addr, "simulated portal listening");
        Ok(PortalSim {
            addr,
            shared,
            shutdown_tx,
            server,
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every saved proposal so far, oldest first.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        lock(&self.shared.ledger).clone()
    }

    /// The fault switches.
    pub fn faults(&self) -> Faults {
        Faults::from(&self.shared)
    }

    /// How many sessions are logged in and not idle-expired.
    pub fn active_sessions(&self) -> usize {
        lock(&self.shared.sessions).active()
    }

    /// Requests answered so far (admin ones aside) and the time the portal
    /// spent answering them, from a request's arrival at the router to its
    /// answer (switched-on delays included).
    pub fn answered(&self) -> (u64, Duration) {
        (
            self.shared.answered.load(Ordering::Relaxed),
            Duration::from_nanos(self.shared.answering_ns.load(Ordering::Relaxed)),
        )
    }

    /// Clears sessions, ledger and fault switches, as `POST /__admin/reset`.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// The captcha answer last shown to the browser holding this
    /// `ASP.NET_SessionId` cookie value. For tests only: it lets them log in
    /// over plain HTTP without OCR.
    #[doc(hidden)]
    pub fn captcha_answer_for_tests(&self, session_cookie: &str) -> Option<String> {
        lock(&self.shared.sessions).captcha_answer(session_cookie)
    }

    /// Stops accepting, ends every open connection (including requests held
    /// by the hang fault) and waits for the server task.
    pub async fn shutdown(self) {
        // The receiver lives as long as the server task; a send error means
        // the task already ended, which is what we want anyway.
        let _ = self.shutdown_tx.send(true);
        if let Err(e) = self.server.await {
            warn!("simulated portal server task ended badly: {e}");
        }
        info!(addr = %self.addr, "simulated portal stopped");
    }
}

/// Runs the simulator until Ctrl-C: what `formwright portal-sim` calls.
pub async fn serve_forever(config: SimConfig) -> std::io::Result<()> {
    let sim = PortalSim::start(config).await?;
    info!(
        url = %sim.url(),
        "simulated portal ready; log in at {}/Login/IMDLogin",
        sim.url()
    );
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    shared: Arc<Shared>,
    mut shutdown_rx: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown_rx.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, app.clone(), Arc::clone(&shared)));
                }
                Err(e) => {
                    // Usually too many open files; back off instead of
                    // spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(stream: TcpStream, app: Router, shared: Arc<Shared>) {
    let faults = Faults::from(&shared);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let app = app.clone();
        let drop_it = !req.uri().path().starts_with("/__admin") && faults.take_drop();
        async move {
            if drop_it {
                warn!(path = %req.uri().path(), "fault switch: dropping the connection");
                return Err(DroppedByFault);
            }
            match app.oneshot(req.map(Body::new)).await {
                Ok(resp) => Ok(resp),
                Err(never) => match never {},
            }
        }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        debug!("connection ended: {e}");
    }
}
