//! What a job browser shows when an attempt fails: a full-page screenshot,
//! the page's HTML and URL, and the browser's console log.
//!
//! The full page comes from Chrome's DevTools `Page.captureScreenshot` with
//! `captureBeyondViewport`, sent through chromedriver's
//! `goog/cdp/execute`; a driver without that endpoint (another browser, a
//! grid that filters vendor commands) gets the plain WebDriver screenshot
//! of the viewport. The console log is chromedriver's `browser` log, kept
//! because every session asks for `goog:loggingPrefs`.
//!
//! Nothing here fails: each part that cannot be taken is left out and the
//! reason noted, so a dead browser still leaves a record of why the
//! evidence is missing.

use std::time::Duration;

use base64::Engine as _;
use fantoccini::Client;
use serde_json::{json, Value as Json};

use super::session::RawCommand;
use super::JobBrowser;

/// How long each part may take: a hung browser must not hold the attempt.
const PART_TIMEOUT: Duration = Duration::from_secs(10);

/// The parts that could be taken, and why the others could not.
#[derive(Debug, Default)]
pub struct Captured {
    pub png: Option<Vec<u8>>,
    pub html: Option<String>,
    pub url: Option<String>,
    /// chromedriver's log entries (`level`, `message`, `timestamp`).
    pub console: Option<Vec<Json>>,
    /// Whether `png` shows the whole page or only the viewport.
    pub full_page: bool,
    /// One line per part that is missing, saying why.
    pub missing: Vec<String>,
}

impl Captured {
    /// Nothing could be taken, for `reason`.
    pub fn nothing(reason: impl Into<String>) -> Captured {
        Captured {
            missing: vec![format!("no browser: {}", reason.into())],
            ..Captured::default()
        }
    }
}

/// Takes every part from `browser`.
pub async fn capture(browser: &JobBrowser) -> Captured {
    let client = match browser.client() {
        Ok(c) => c,
        Err(e) => return Captured::nothing(e.to_string()),
    };
    let mut out = Captured::default();

    match bounded(full_page_png(client)).await {
        Ok(png) => {
            out.png = Some(png);
            out.full_page = true;
        }
        Err(cdp) => {
            match bounded(async { browser.screenshot().await.map_err(|e| e.to_string()) }).await {
                Ok(png) => {
                    out.png = Some(png);
                    out.missing
                        .push(format!("full-page screenshot ({cdp}); the viewport only"));
                }
                Err(e) => out.missing.push(format!("screenshot: {e}")),
            }
        }
    }
    match bounded(async { browser.page_source().await.map_err(|e| e.to_string()) }).await {
        Ok(html) => out.html = Some(html),
        Err(e) => out.missing.push(format!("page HTML: {e}")),
    }
    match bounded(async { browser.current_url().await.map_err(|e| e.to_string()) }).await {
        Ok(url) => out.url = Some(url),
        Err(e) => out.missing.push(format!("URL: {e}")),
    }
    match bounded(console_log(client)).await {
        Ok(entries) => out.console = Some(entries),
        Err(e) => out.missing.push(format!("console log: {e}")),
    }
    out
}

async fn bounded<T>(
    part: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(PART_TIMEOUT, part)
        .await
        .unwrap_or_else(|_| Err(format!("no answer in {} s", PART_TIMEOUT.as_secs())))
}

async fn full_page_png(client: &Client) -> Result<Vec<u8>, String> {
    let answer = client
        .issue_cmd(RawCommand::post(
            "goog/cdp/execute",
            json!({
                "cmd": "Page.captureScreenshot",
                "params": { "format": "png", "captureBeyondViewport": true },
            }),
        ))
        .await
        .map_err(|e| e.to_string())?;
    let data = answer
        .get("data")
        .and_then(Json::as_str)
        .ok_or("the DevTools answer holds no image")?;
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("the DevTools image is not base64: {e}"))
}

async fn console_log(client: &Client) -> Result<Vec<Json>, String> {
    let answer = client
        .issue_cmd(RawCommand::post("se/log", json!({ "type": "browser" })))
        .await
        .map_err(|e| e.to_string())?;
    match answer {
        Json::Array(entries) => Ok(entries),
        other => Err(format!("the driver answered {other} instead of a list")),
    }
}
