//! The background task that empties the spool into the store.
//!
//! It starts by taking every key left in the spool (an outage or a crash
//! of an earlier run), then each key the spool announces. A failed upload
//! is journaled once per key and run as `artifact_upload_failed` on the
//! job, logged, and tried again after a doubling pause up to a ceiling.
//! The job itself never waits for any of this.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{job_of_key, Spool, Store};
use crate::book::Recorder;
use crate::journal::{now_millis, JobEvent, JobId};

/// Pauses between tries of one upload: `first`, doubled each time, at
/// most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The pause after `failures` failed tries (1 or more).
    pub fn pause(&self, failures: u32) -> Duration {
        let doubled = self
            .first
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        doubled.min(self.max)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first: Duration::from_secs(2),
            max: Duration::from_secs(300),
        }
    }
}

/// A key waiting for the store.
struct Waiting {
    failures: u32,
    due: Instant,
}

/// Sends spooled evidence to the store. See the module docs.
pub struct Uploader<S> {
    store: Arc<S>,
    spool: Spool,
    recorder: Arc<Recorder>,
    policy: RetryPolicy,
}

impl<S: Store> Uploader<S> {
    pub fn new(
        store: Arc<S>,
        spool: Spool,
        recorder: Arc<Recorder>,
        policy: RetryPolicy,
    ) -> Uploader<S> {
        Uploader {
            store,
            spool,
            recorder,
            policy,
        }
    }

    /// Runs until `stop`; what is still spooled then waits for the next
    /// start.
    pub async fn run(self, mut wake_rx: mpsc::UnboundedReceiver<String>, stop: CancellationToken) {
        let mut waiting: BTreeMap<String, Waiting> = BTreeMap::new();
        let now = Instant::now();
        let left = self.spool.pending();
        if !left.is_empty() {
            info!(files = left.len(), "evidence left in the spool; sending it");
        }
        for key in left {
            waiting.insert(
                key,
                Waiting {
                    failures: 0,
                    due: now,
                },
            );
        }

        loop {
            let due: Vec<String> = waiting
                .iter()
                .filter(|(_, w)| w.due <= Instant::now())
                .map(|(k, _)| k.clone())
                .collect();
            for key in due {
                let file = self.spool.path_of(&key);
                let put = tokio::select! {
                    put = self.store.put(&key, &file) => put,
                    _ = stop.cancelled() => return,
                };
                match put {
                    Ok(()) => {
                        self.spool.forget(&key);
                        waiting.remove(&key);
                        debug!(%key, "evidence stored");
                    }
                    Err(e) => {
                        let Some(w) = waiting.get_mut(&key) else {
                            continue;
                        };
                        w.failures += 1;
                        let pause = self.policy.pause(w.failures);
                        w.due = Instant::now() + pause;
                        warn!(
                            %key,
                            error = %e,
                            failures = w.failures,
                            retry_in_s = pause.as_secs_f64(),
                            "storing evidence failed; will retry"
                        );
                        if w.failures == 1 {
                            self.journal_failure(&key, e.to_string());
                        }
                    }
                }
            }

            let next = waiting.values().map(|w| w.due).min();
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(key) = wake_rx.recv() => {
                    waiting.entry(key).or_insert(Waiting {
                        failures: 0,
                        due: Instant::now(),
                    });
                }
                _ = sleep_until(next) => {}
            }
        }
    }

    fn journal_failure(&self, key: &str, error: String) {
        let Some(job) = job_of_key(key) else {
            error!(key, "evidence under a key of no job could not be stored");
            return;
        };
        let event = JobEvent::ArtifactUploadFailed {
            key: key.to_owned(),
            error,
        };
        if let Err(e) = self
            .recorder
            .job_event(&JobId::from(job), event, now_millis())
        {
            error!(key, error = %e, "cannot journal a failed evidence upload");
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_ceiling() {
        let policy = RetryPolicy {
            first: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        let pauses: Vec<u64> = (1..=6).map(|n| policy.pause(n).as_secs()).collect();
        assert_eq!(pauses, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(policy.pause(1000).as_secs(), 10);
    }
}
