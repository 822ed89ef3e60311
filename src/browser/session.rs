//! What every browser shares: its WebDriver session, closing it for sure,
//! a few raw WebDriver commands fantoccini does not offer the way formwright
//! needs them, and the page probes used by the login and the session check.
//!
//! Closing is belt and braces. `close()` ends the WebDriver session (so
//! chromedriver quits Chromium cleanly), waits for the browser process to
//! go, and deletes the folder the session owns. `Drop` is the safety net for
//! a job that panicked or was cancelled: it kills the browser process at
//! once, asks the runtime (if any) to end the WebDriver session, and
//! deletes the folder, so nothing leaks whatever way a job ends.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::Client;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use tracing::{debug, warn};

use super::driver::{kill_pid, pid_alive};
use super::{join_url, BrowserError, SessionCheck};
use crate::profile::Profile;

/// How long `close()` gives WebDriver to end a session.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `close()` waits for the browser process to exit after that.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// How often page probes poll.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// The W3C key of an element reference in a script's result.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One open browser.
#[derive(Debug)]
pub(crate) struct Session {
    label: String,
    client: Option<Client>,
    pid: Option<u32>,
    session_id: Option<String>,
    owned_dir: Option<PathBuf>,
}

impl Session {
    pub(crate) fn new(
        label: &str,
        client: Client,
        pid: Option<u32>,
        session_id: Option<String>,
        owned_dir: Option<PathBuf>,
    ) -> Session {
        Session {
            label: label.to_string(),
            client: Some(client),
            pid,
            session_id,
            owned_dir,
        }
    }

    /// The WebDriver client, or "gone" once closed.
    pub(crate) fn client(&self) -> Result<&Client, BrowserError> {
        self.client.as_ref().ok_or_else(|| BrowserError::Gone {
            doing: format!("using the {} browser", self.label),
            message: "already closed".into(),
        })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// A PNG of the current page.
    pub(crate) async fn screenshot(&self) -> Result<Vec<u8>, BrowserError> {
        let doing = format!("taking a screenshot of the {} browser", self.label);
        self.client()?
            .screenshot()
            .await
            .map_err(|e| BrowserError::cmd(doing, e))
    }

    /// The current page's HTML.
    pub(crate) async fn page_source(&self) -> Result<String, BrowserError> {
        let doing = format!("reading the {} browser's page", self.label);
        self.client()?
            .source()
            .await
            .map_err(|e| BrowserError::cmd(doing, e))
    }

    pub(crate) fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Ends the session, waits for the browser to exit, deletes the owned
    /// folder. Safe to call twice.
    pub(crate) async fn close(&mut self) -> Result<(), BrowserError> {
        let mut result = Ok(());
        if let Some(client) = self.client.take() {
            match tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if super::cmd_is_gone(&e) => {}
                Ok(Err(e)) => {
                    result = Err(BrowserError::cmd(
                        format!("closing the {} browser", self.label),
                        e,
                    ))
                }
                Err(_) => warn!(label = %self.label, "WebDriver did not close the session in time"),
            }
        }
        if let Some(pid) = self.pid.take() {
            let started = Instant::now();
            while pid_alive(pid) && started.elapsed() < EXIT_WAIT {
                tokio::time::sleep(POLL).await;
            }
            if pid_alive(pid) {
                warn!(label = %self.label, pid, "browser still running after close; killing it");
                kill_pid(pid);
            }
        }
        if let Some(dir) = self.owned_dir.take() {
            let removal =
                tokio::task::spawn_blocking(move || remove_dir(&dir).map_err(|e| (dir, e))).await;
            if let Ok(Err((path, source))) = removal {
                result = result.and(Err(BrowserError::Io {
                    doing: "deleting the job folder",
                    path,
                    source,
                }));
            }
        }
        debug!(label = %self.label, "browser closed");
        result
    }

    /// Sends a WebDriver command by path under the session.
    pub(crate) async fn raw(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Json>,
    ) -> Result<Json, CmdError> {
        let client = match self.client.as_ref() {
            Some(c) => c,
            None => {
                return Err(CmdError::Lost(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "browser already closed",
                )))
            }
        };
        client
            .issue_cmd(RawCommand {
                method,
                path: path.to_string(),
                body,
            })
            .await
    }

    /// All cookies of the current page, as WebDriver reports them.
    pub(crate) async fn cookies(&self) -> Result<Vec<BrowserCookie>, BrowserError> {
        let value = self
            .raw(http::Method::GET, "cookie", None)
            .await
            .map_err(|e| BrowserError::cmd("reading cookies", e))?;
        serde_json::from_value(value.clone()).map_err(|_| BrowserError::Gone {
            doing: "reading cookies".into(),
            // The answer's shape only: its values are the login.
            message: format!("unexpected answer, shaped {}", json_shape(&value)),
        })
    }

    /// Every cookie the browser holds, of any host and path, whatever page
    /// it has open, read through DevTools (`Storage.getCookies`). The
    /// error says why (no DevTools, or an answer of another shape) without
    /// any cookie's value.
    pub(crate) async fn devtools_cookies(&self) -> Result<Vec<BrowserCookie>, String> {
        let answer = self
            .cdp("Storage.getCookies", json!({}))
            .await
            .map_err(|e| format!("Storage.getCookies: {e}"))?;
        answer["cookies"]
            .as_array()
            .and_then(|all| all.iter().map(BrowserCookie::from_devtools).collect())
            .ok_or_else(|| {
                format!(
                    "Storage.getCookies: unexpected answer, shaped {}",
                    json_shape(&answer)
                )
            })
    }

    /// Every cookie the browser holds for `host` (of any path), through
    /// DevTools ([`devtools_cookies`](Self::devtools_cookies)): one cheap
    /// command instead of WebDriver's, which reads only the current page's.
    /// `None` when that cannot be done.
    pub(crate) async fn cookies_for_host(&self, host: &str) -> Option<Vec<BrowserCookie>> {
        let all = match self.devtools_cookies().await {
            Ok(all) => all,
            Err(e) => {
                debug!(error = %e, "cookies not read through DevTools");
                return None;
            }
        };
        let host = host.to_ascii_lowercase();
        let for_host = |c: &BrowserCookie| {
            let domain = c.domain.as_deref().unwrap_or_default().to_ascii_lowercase();
            match domain.strip_prefix('.') {
                Some(parent) => host == parent || host.ends_with(&format!(".{parent}")),
                None => host == domain,
            }
        };
        Some(all.into_iter().filter(for_host).collect())
    }

    /// Adds one cookie to the current page's origin.
    pub(crate) async fn add_cookie(&self, cookie: &BrowserCookie) -> Result<(), CmdError> {
        self.raw(
            http::Method::POST,
            "cookie",
            Some(json!({ "cookie": cookie })),
        )
        .await
        .map(|_| ())
    }

    /// A Chrome DevTools command, through chromedriver's
    /// `goog/cdp/execute`; returns the command's result.
    pub(crate) async fn cdp(&self, cmd: &str, params: Json) -> Result<Json, CmdError> {
        self.raw(
            http::Method::POST,
            "goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
    }

    /// Reads (and so empties) chromedriver's buffer of the browser's
    /// console log; returns how many entries it held.
    pub(crate) async fn drain_console(&self) -> Result<usize, CmdError> {
        let entries = self
            .raw(
                http::Method::POST,
                "se/log",
                Some(json!({ "type": "browser" })),
            )
            .await?;
        Ok(entries.as_array().map_or(0, Vec::len))
    }

    /// Back to the top document from any frame.
    pub(crate) async fn top_frame(&self) -> Result<(), CmdError> {
        self.raw(http::Method::POST, "frame", Some(json!({ "id": null })))
            .await
            .map(|_| ())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        warn!(label = %self.label, "browser dropped without close(); cleaning up");
        if let Some(pid) = self.pid.take() {
            kill_pid(pid);
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await;
            });
        }
        if let Some(dir) = self.owned_dir.take() {
            // Chromium's helpers may still be writing for a moment after the
            // kill; a few tries cover that.
            for _ in 0..5 {
                if remove_dir(&dir).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn remove_dir(dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// A WebDriver command by path, for what fantoccini's typed commands do
/// not cover as needed: cookies with every attribute kept as WebDriver
/// gave them, and switching to the top frame.
#[derive(Debug)]
pub(crate) struct RawCommand {
    method: http::Method,
    path: String,
    body: Option<Json>,
}

impl RawCommand {
    /// A POST of `body` to `path` under the session, for the driver's own
    /// endpoints (chromedriver's `goog/cdp/execute`, `se/log`).
    pub(crate) fn post(path: &str, body: Json) -> RawCommand {
        RawCommand {
            method: http::Method::POST,
            path: path.to_string(),
            body: Some(body),
        }
    }
}

impl WebDriverCompatibleCommand for RawCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        base_url.join(&format!("session/{session}/{}", self.path))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (self.method.clone(), self.body.as_ref().map(Json::to_string))
    }
}

/// A cookie as WebDriver reads and writes it, every attribute kept.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrowserCookie {
    /// Name.
    pub name: String,
    /// Value (a secret: never printed).
    pub value: String,
    /// Path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Secure flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    /// HttpOnly flag.
    #[serde(default, rename = "httpOnly", skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    /// Expiry, seconds since the epoch; `None` for a session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<u64>,
    /// SameSite (`Strict`, `Lax`, `None`).
    #[serde(default, rename = "sameSite", skip_serializing_if = "Option::is_none")]
    pub same_site: Option<String>,
}

impl BrowserCookie {
    /// A cookie as DevTools describes it (`Network.Cookie`): expiry in
    /// fractional seconds, or a session cookie (`session`, or `expires` -1).
    fn from_devtools(c: &Json) -> Option<BrowserCookie> {
        let text = |key: &str| c[key].as_str().map(str::to_string);
        let session = c["session"].as_bool().unwrap_or(false);
        let expiry = c["expires"]
            .as_f64()
            .filter(|e| !session && *e > 0.0)
            .map(|e| e as u64);
        Some(BrowserCookie {
            name: text("name")?,
            value: text("value")?,
            path: text("path"),
            domain: text("domain"),
            secure: c["secure"].as_bool(),
            http_only: c["httpOnly"].as_bool(),
            expiry,
            same_site: text("sameSite"),
        })
    }
}

impl std::fmt::Debug for BrowserCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserCookie")
            .field("name", &self.name)
            .field("value", &"<hidden>")
            .field("path", &self.path)
            .field("domain", &self.domain)
            .field("secure", &self.secure)
            .field("http_only", &self.http_only)
            .field("expiry", &self.expiry)
            .field("same_site", &self.same_site)
            .finish()
    }
}

/// The shape of a JSON value with every string, number and boolean
/// replaced by its type, for error messages about answers that hold
/// secrets.
fn json_shape(value: &Json) -> String {
    fn shape(value: &Json) -> Json {
        match value {
            Json::Null => Json::Null,
            Json::Bool(_) => json!("bool"),
            Json::Number(n) if n.is_f64() => json!("float"),
            Json::Number(_) => json!("integer"),
            Json::String(_) => json!("string"),
            Json::Array(items) => Json::Array(items.iter().map(shape).collect()),
            Json::Object(fields) => {
                Json::Object(fields.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
            }
        }
    }
    shape(value).to_string()
}

/// Visibility as a user sees it: laid out, not hidden, not zero-sized.
/// Also used (with the mask check) by the step runner.
pub(crate) const VISIBLE_JS: &str = r#"
const visible = (el) => {
  if (!el || !el.getClientRects().length) { return false; }
  const style = el.ownerDocument.defaultView.getComputedStyle(el);
  if (style.visibility === 'hidden' || style.display === 'none') { return false; }
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0;
};
const anyVisible = (doc, sel) => {
  let els;
  try { els = doc.querySelectorAll(sel); } catch (e) { return false; }
  for (const el of els) { if (visible(el)) { return true; } }
  return false;
};
"#;

/// Which of the given selectors are visible, the page's URL and its state.
#[derive(Debug, Deserialize)]
pub(crate) struct Probe {
    pub url: String,
    pub visible: Vec<bool>,
    #[serde(default)]
    pub error_text: Option<String>,
}

/// Probes the current page: the visibility of `selectors` and, when given,
/// the visible text of `error_selector`.
pub(crate) async fn probe(
    client: &Client,
    selectors: &[&str],
    error_selector: Option<&str>,
) -> Result<Probe, CmdError> {
    let script = format!(
        r#"{VISIBLE_JS}
const sels = arguments[0];
const errSel = arguments[1];
let errorText = null;
if (errSel) {{
  let els = [];
  try {{ els = document.querySelectorAll(errSel); }} catch (e) {{}}
  for (const el of els) {{
    const t = (el.innerText || '').trim();
    if (t && visible(el)) {{ errorText = t; break; }}
  }}
}}
return {{ url: location.href, visible: sels.map((s) => anyVisible(document, s)), error_text: errorText }};"#
    );
    let value = client
        .execute(&script, vec![json!(selectors), json!(error_selector)])
        .await?;
    serde_json::from_value(value).map_err(CmdError::Json)
}

/// Turns an element reference returned by a script into an element.
pub(crate) fn script_element(client: &Client, value: &Json) -> Option<Element> {
    let id = value.get(ELEMENT_KEY)?.as_str()?;
    Some(Element::from_element_id(
        client.clone(),
        id.to_string().into(),
    ))
}

/// What a session check looks for: the dashboard's URL, the path of the
/// login page, the dashboard's `ready` element and the login form's user
/// name field.
struct Sought<'a> {
    url: String,
    login_path: String,
    ready: &'a str,
    login: &'a str,
}

impl<'a> Sought<'a> {
    fn in_profile(profile: &'a Profile, base_url: &str) -> Result<Sought<'a>, BrowserError> {
        Ok(Sought {
            url: join_url(base_url, &profile.dashboard.url)?,
            login_path: url_path(&join_url(base_url, &profile.login.url)?),
            ready: profile.dashboard.ready.as_str(),
            login: profile.login.username.as_str(),
        })
    }

    /// Whether `url` is the login page (by path, ignoring case).
    fn is_login_page(&self, url: &str) -> bool {
        !self.login_path.is_empty() && url_path(url) == self.login_path
    }
}

/// The path of `url`, lowercased; empty when it is not a URL.
fn url_path(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.path().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Opens the dashboard and decides, as soon as the page shows it, whether
/// the browser is logged in: the login form (or a redirect to the login
/// page) means expired; the dashboard menu, or a URL that gained the login
/// marker, means valid. Polls all of it in one script call per tick, so the
/// answer comes about a tick after the page has loaded, never after a long
/// timeout.
///
/// The marker only counts when the URL asked for lacks it: portals carry it
/// on the redirect after a login, not on every page, and a profile whose
/// dashboard URL includes it learns nothing from seeing it again.
pub(crate) async fn check_session(
    client: &Client,
    profile: &Profile,
    base_url: &str,
) -> Result<SessionCheck, BrowserError> {
    let sought = Sought::in_profile(profile, base_url)?;
    let (url, ready, login) = (&sought.url, sought.ready, sought.login);
    let marker = profile
        .login
        .logged_in_url_contains
        .as_deref()
        .filter(|m| !m.is_empty() && !url.contains(*m));
    let decide_within = Duration::from_millis(profile.dashboard.check_ms);

    let started = Instant::now();
    client
        .goto(url)
        .await
        .map_err(|e| BrowserError::cmd(format!("opening {url}"), e))?;
    let loaded = Instant::now();
    let navigated = loaded - started;
    loop {
        let seen = probe(client, &[ready, login], None)
            .await
            .map_err(|e| BrowserError::cmd(format!("checking the session at {url}"), e))?;
        let elapsed = started.elapsed();
        if seen.visible[1] {
            return Ok(SessionCheck::Expired {
                elapsed,
                navigated,
                reason: format!("login form {login} shown at {}", seen.url),
            });
        }
        if seen.visible[0] || marker.is_some_and(|m| seen.url.contains(m)) {
            return Ok(SessionCheck::Valid { elapsed, navigated });
        }
        if sought.is_login_page(&seen.url) {
            return Ok(SessionCheck::Expired {
                elapsed,
                navigated,
                reason: format!("sent to the login page {}", seen.url),
            });
        }
        if loaded.elapsed() >= decide_within {
            return Err(BrowserError::CheckUndecided {
                url: seen.url,
                ready: ready.to_string(),
                login: login.to_string(),
                waited: elapsed,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What [`confirm_dashboard`]'s script reports.
#[derive(Debug, Deserialize)]
struct Confirmation {
    #[serde(default)]
    error: Option<String>,
    /// The page shown now.
    #[serde(default)]
    here: String,
    /// Whether the page shown now shows the dashboard's `ready` element
    /// and the login form.
    #[serde(default)]
    shown_ready: bool,
    #[serde(default)]
    shown_login: bool,
    /// The portal's answer to a request for the dashboard made now.
    #[serde(default)]
    status: u16,
    #[serde(default)]
    url: String,
    #[serde(default)]
    has_ready: bool,
    #[serde(default)]
    has_login: bool,
    /// How long the portal took to answer, in ms.
    #[serde(default)]
    fetch_ms: f64,
}

/// Confirms that a browser already showing the dashboard (loaded a while
/// ago) is logged in now, without loading the page again: in one script,
/// the page shown is checked to still show the dashboard's `ready` element
/// and no login form, and the dashboard is requested in the page's
/// background, with the browser's cookies, to hear from the portal that
/// the session is live (the answer holds the `ready` element, no login
/// form, and is not the login page), within the profile's `check_ms`.
///
/// `Ok(Err(why))` when it cannot be confirmed; the caller then loads the
/// dashboard ([`check_session`]), which alone decides "expired".
pub(crate) async fn confirm_dashboard(
    client: &Client,
    profile: &Profile,
    base_url: &str,
) -> Result<Result<SessionCheck, String>, BrowserError> {
    const CONFIRM_JS: &str = r#"
const [url, readySel, loginSel, within, done] = arguments;
const has = (doc, sel) => { try { return !!doc.querySelector(sel); } catch (e) { return false; } };
const shown = { here: location.href, shown_ready: anyVisible(document, readySel),
                shown_login: anyVisible(document, loginSel) };
if (!shown.shown_ready || shown.shown_login) { done(shown); return; }
const t0 = performance.now();
fetch(url, { credentials: 'same-origin', cache: 'no-store', redirect: 'follow',
             signal: AbortSignal.timeout(within) })
  .then((r) => r.text().then((text) => {
    const fetch_ms = performance.now() - t0;
    const doc = new DOMParser().parseFromString(text, 'text/html');
    done(Object.assign(shown, { status: r.status, url: r.url, fetch_ms,
      has_ready: has(doc, readySel), has_login: has(doc, loginSel) }));
  }))
  .catch((e) => done(Object.assign(shown, { error: String(e) })));"#;
    let sought = Sought::in_profile(profile, base_url)?;
    let (url, ready, login) = (&sought.url, sought.ready, sought.login);
    let within = profile.dashboard.check_ms.max(1);

    let started = Instant::now();
    let script = format!("{VISIBLE_JS}{CONFIRM_JS}");
    let value = client
        .execute_async(
            &script,
            vec![json!(url), json!(ready), json!(login), json!(within)],
        )
        .await
        .map_err(|e| BrowserError::cmd(format!("confirming the session at {url}"), e))?;
    let seen: Confirmation = serde_json::from_value(value).map_err(|e| {
        BrowserError::cmd(
            format!("confirming the session at {url}"),
            CmdError::Json(e),
        )
    })?;
    let elapsed = started.elapsed();
    let why = if let Some(error) = seen.error {
        format!("the request for {url} failed: {error}")
    } else if !seen.shown_ready || seen.shown_login {
        format!("{} no longer shows the dashboard", seen.here)
    } else if seen.status != 200 {
        format!("{url} answered HTTP {}", seen.status)
    } else if sought.is_login_page(&seen.url) {
        format!("{url} was sent to the login page {}", seen.url)
    } else if !seen.has_ready || seen.has_login {
        format!("{url} answered a page without the dashboard ({ready}) or with the login form")
    } else {
        let navigated = Duration::from_secs_f64(seen.fetch_ms.max(0.0) / 1000.0).min(elapsed);
        return Ok(Ok(SessionCheck::Valid { elapsed, navigated }));
    };
    Ok(Err(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_described_by_its_shape_without_its_values() {
        let answer = json!([{ "name": ".ASPXAUTH", "value": "s3cr3t", "expiry": 1.5,
                              "secure": true, "domain": null }]);
        let shape = json_shape(&answer);
        assert!(
            !shape.contains("s3cr3t") && !shape.contains("ASPXAUTH"),
            "{shape}"
        );
        assert!(shape.contains(r#""expiry":"float""#), "{shape}");
        assert!(shape.contains(r#""value":"string""#), "{shape}");
    }
}
