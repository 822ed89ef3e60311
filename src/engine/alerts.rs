//! Alerts for the people on call: a webhook with a Slack-compatible JSON
//! body. Delivery happens in the background, is retried a few times, and
//! never holds up the engine.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{info, warn};

use crate::journal::Level;

/// One message for the on-call engineer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub severity: &'static str,
    pub text: String,
}

impl Alert {
    pub fn down(trigger: &str) -> Alert {
        Alert {
            severity: "critical",
            text: format!(
                "formwright: the master session is DOWN after soft, hard and nuclear \
                 recovery (triggered by {trigger}). Jobs stay pending; a new ladder \
                 starts after the cool-down."
            ),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AlertConfig {
    /// Where to POST; `None` logs alerts only.
    pub webhook: Option<String>,
    /// More recoveries than this within an hour raises a warning.
    pub recoveries_per_hour: usize,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            webhook: None,
            recoveries_per_hour: 10,
        }
    }
}

/// The alert sender. Cheap to clone.
#[derive(Clone)]
pub struct Alerts {
    config: AlertConfig,
    recent: Arc<Mutex<VecDeque<Instant>>>,
    sent: Arc<Mutex<Vec<Alert>>>,
}

impl Alerts {
    pub fn new(config: AlertConfig) -> Alerts {
        Alerts {
            config,
            recent: Arc::default(),
            sent: Arc::default(),
        }
    }

    /// Every alert raised so far, for the API and tests.
    pub fn history(&self) -> Vec<Alert> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Notes a successful recovery: a nuclear one is worth telling, and so
    /// is a storm of them.
    pub fn recovered(&self, level: Level, trigger: &str) {
        if level == Level::Nuclear {
            self.send(Alert {
                severity: "warning",
                text: format!(
                    "formwright: the master session was recovered only by starting from a \
                     fresh browser profile (triggered by {trigger}). The old profile was set aside."
                ),
            });
        }
        let hour = Duration::from_secs(3600);
        let count = {
            let Ok(mut recent) = self.recent.lock() else {
                return;
            };
            let now = Instant::now();
            recent.push_back(now);
            while recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > hour)
            {
                recent.pop_front();
            }
            recent.len()
        };
        if count == self.config.recoveries_per_hour + 1 {
            self.send(Alert {
                severity: "warning",
                text: format!(
                    "formwright: {count} master-session recoveries in the last hour; \
                     the portal may be logging the agent out, or the account is shared."
                ),
            });
        }
    }

    /// Raises an alert: logged at once, delivered in the background.
    pub fn send(&self, alert: Alert) {
        match alert.severity {
            "critical" => tracing::error!(alert = %alert.text, "alert"),
            _ => warn!(alert = %alert.text, "alert"),
        }
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(alert.clone());
        }
        let Some(url) = self.config.webhook.clone() else {
            return;
        };
        tokio::spawn(deliver(url, alert));
    }
}

/// POSTs `{"text": …}` with up to four tries, backing off between them.
async fn deliver(url: String, alert: Alert) {
    let body = serde_json::json!({ "text": alert.text, "severity": alert.severity }).to_string();
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=4 {
        match post_json(&url, &body).await {
            Ok(()) => {
                info!(attempt, "alert delivered");
                return;
            }
            Err(e) => warn!(attempt, error = %e, "alert delivery failed"),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    warn!("alert dropped after 4 tries");
}

async fn post_json(url: &str, body: &str) -> Result<(), String> {
    let reply = crate::browser::plain_http::send(
        http::Method::POST,
        url,
        Some("application/json"),
        body.as_bytes().to_vec(),
        Duration::from_secs(5),
    )
    .await?;
    if (200..300).contains(&reply.status) {
        Ok(())
    } else {
        Err(format!("webhook answered HTTP {}", reply.status))
    }
}
