//! The master session as the engine runs it: the first login, the recovery
//! ladder, and the rule that only one recovery runs at a time.
//!
//! Every successful login starts a new *generation*. A job remembers the
//! generation its clone was taken from; when it finds that clone expired it
//! asks for a recovery *of that generation*. The ladder runs under one
//! async mutex, and whoever gets the mutex after a recovery has already
//! moved past their generation simply receives that recovery's outcome.
//! So N jobs that meet one expiry cause exactly one recovery, and a
//! recovery never races another for the master browser.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::alerts::{Alert, Alerts};
use super::portal::Portal;
use crate::book::Recorder;
use crate::journal::{now_millis, Level, SessionEvent, Trigger};
use crate::machine::session::SessionStatus;

/// What workers wait on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Logged in; the number counts logins since the daemon started.
    Up(u64),
    Recovering,
    Down,
    Starting,
}

/// How a request for recovery ended, from the asker's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// This call ran the ladder and the master is logged in again.
    Ran,
    /// Another recovery (or login) already moved past the asker's
    /// generation; nothing was run.
    Joined,
    /// The daemon is shutting down.
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Pause between two failed tries of the ladder.
    pub try_pause: Duration,
    /// Wait after every level failed, before a new ladder.
    pub cooldown: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            try_pause: Duration::from_secs(2),
            cooldown: Duration::from_secs(300),
        }
    }
}

pub struct MasterSession<P: Portal> {
    portal: Arc<P>,
    recorder: Arc<Recorder>,
    alerts: Alerts,
    config: SessionConfig,
    health_tx: watch::Sender<Health>,
    /// Held for the whole of a ladder; its value is the current generation.
    ladder: Mutex<u64>,
    shutdown: CancellationToken,
}

impl<P: Portal> MasterSession<P> {
    pub fn new(
        portal: Arc<P>,
        recorder: Arc<Recorder>,
        alerts: Alerts,
        config: SessionConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let (health_tx, _) = watch::channel(Health::Starting);
        MasterSession {
            portal,
            recorder,
            alerts,
            config,
            health_tx,
            ladder: Mutex::new(0),
            shutdown,
        }
    }

    /// The alerts raised so far (and the sender).
    pub fn alerts(&self) -> &Alerts {
        &self.alerts
    }

    pub fn health(&self) -> Health {
        *self.health_tx.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Health> {
        self.health_tx.subscribe()
    }

    /// Waits until the master is logged in and returns its generation, or
    /// `None` when the daemon shuts down first.
    pub async fn wait_ready(&self) -> Option<u64> {
        let mut rx = self.health_tx.subscribe();
        tokio::select! {
            h = rx.wait_for(|h| matches!(h, Health::Up(_))) => match h.ok().map(|h| *h) {
                Some(Health::Up(g)) => Some(g),
                _ => None,
            },
            _ = self.shutdown.cancelled() => None,
        }
    }

    fn record(&self, event: SessionEvent) {
        // A refusal here is an engine bug; the journal stays consistent
        // because the recorder checked before writing.
        if let Err(e) = self.recorder.session_event(event, now_millis()) {
            error!(error = %e, "could not journal a master-session event");
        }
    }

    /// The first login of this daemon run. On failure the ladder takes over;
    /// returns once logged in, or on shutdown.
    pub async fn start(&self) {
        let mut generation = self.ladder.lock().await;
        self.health_tx.send_replace(Health::Starting);
        self.record(SessionEvent::LoginStarted);
        let started = Instant::now();
        match self.portal.start_master().await {
            Ok(()) => {
                self.record(SessionEvent::LoggedIn {
                    duration_ms: elapsed_ms(started),
                });
                *generation += 1;
                info!(generation = *generation, "master session logged in");
                self.health_tx.send_replace(Health::Up(*generation));
            }
            Err(e) => {
                warn!(error = %e, "first login failed; starting recovery");
                self.climb(&mut generation, Trigger::Startup).await;
            }
        }
    }

    /// Asks for the master session to be recovered because a clone of
    /// generation `seen` was expired. Waits for the recovery (this one's or
    /// the one already running) to finish.
    pub async fn recover(&self, seen: u64, trigger: Trigger) -> Recovered {
        let mut generation = tokio::select! {
            g = self.ladder.lock() => g,
            _ = self.shutdown.cancelled() => return Recovered::Cancelled,
        };
        if *generation != seen {
            return Recovered::Joined;
        }
        if self.climb(&mut generation, trigger).await {
            Recovered::Ran
        } else {
            Recovered::Cancelled
        }
    }

    /// Runs the ladder until the master is logged in (true) or the daemon
    /// shuts down (false). Caller holds the ladder lock.
    async fn climb(&self, generation: &mut u64, trigger: Trigger) -> bool {
        self.health_tx.send_replace(Health::Recovering);
        let who = trigger_text(&trigger);
        self.record(SessionEvent::Expired { trigger });
        let ladder_started = Instant::now();

        loop {
            let rung = self.recorder.book().session.machine.rung();
            let Some((level, attempt)) = rung else {
                error!("recovery ladder lost its place; the session machine is not recovering");
                return false;
            };
            info!(level = level.as_str(), attempt, trigger = %who, "recovery try");
            let started = Instant::now();
            let result = tokio::select! {
                r = self.portal.recover(level) => r,
                _ = self.shutdown.cancelled() => return false,
            };
            match result {
                Ok(()) => {
                    self.record(SessionEvent::LoggedIn {
                        duration_ms: elapsed_ms(started),
                    });
                    *generation += 1;
                    info!(
                        level = level.as_str(),
                        attempt,
                        seconds = ladder_started.elapsed().as_secs_f64(),
                        "master session recovered"
                    );
                    self.alerts.recovered(level, &who);
                    self.health_tx.send_replace(Health::Up(*generation));
                    return true;
                }
                Err(e) => {
                    warn!(level = level.as_str(), attempt, error = %e, "recovery try failed");
                    if level == Level::Nuclear && self.portal.restored_backup() {
                        self.record(SessionEvent::BackupRestored);
                    }
                    self.record(SessionEvent::TryFailed {
                        level,
                        attempt,
                        duration_ms: elapsed_ms(started),
                        error: e.to_string(),
                    });
                }
            }

            let pause = if self.recorder.book().session.status() == SessionStatus::Down {
                error!(
                    cooldown_s = self.config.cooldown.as_secs(),
                    "every recovery level failed; the master session is down"
                );
                self.health_tx.send_replace(Health::Down);
                self.alerts.send(Alert::down(&who));
                self.config.cooldown
            } else {
                self.config.try_pause
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.shutdown.cancelled() => return false,
            }
            if self.recorder.book().session.status() == SessionStatus::Down {
                self.record(SessionEvent::CooldownOver);
                self.health_tx.send_replace(Health::Recovering);
            }
        }
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}

fn trigger_text(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Job(id) => format!("job {id}"),
        Trigger::Heartbeat => "heartbeat".into(),
        Trigger::Startup => "startup".into(),
    }
}
