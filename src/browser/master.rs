//! The master browser: the one that logs in to the portal and whose login
//! every job browser copies.
//!
//! Its profile folder persists (a hard recovery restarts the master on the
//! same folder), so closing it never deletes the folder. Login types like a
//! person (a pause before each field, since the portal drops keys typed
//! right after another field), reads the captcha from inside the browser
//! (the image is tied to the session cookie), and retries a misread captcha
//! with the new image, but never a refusal of the password itself, which
//! would risk locking the account.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use fantoccini::{Client, Locator};
use serde_json::{json, Value as Json};
use tracing::{debug, info, warn};

use super::session::{self, BrowserCookie, Session, POLL};
use super::{join_url, BrowserError, Driver, SessionCheck};
use crate::captcha::{CaptchaError, CaptchaSolver};
use crate::profile::Profile;

/// How long the login waits for the optional post-login popup.
const POPUP_WAIT: Duration = Duration::from_millis(1500);

/// The portal account. Never printed: `Debug` hides the password and there
/// is no `Display`.
#[derive(Clone)]
pub struct Credentials {
    username: String,
    password: String,
}

impl Credentials {
    /// The account's user name and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The portal refused for a reason other than the captcha (wrong
    /// password, locked account); not retried.
    #[error("the portal refused the login at {url}: {message}")]
    Refused {
        /// The login page.
        url: String,
        /// The portal's message.
        message: String,
    },
    /// Every try's captcha was refused or unsolvable.
    #[error("captcha not accepted after {tries} tries at {url}: {last}")]
    CaptchaTries {
        /// Tries made (`login.max_tries`).
        tries: u32,
        /// The login page.
        url: String,
        /// The last refusal or solver error.
        last: String,
    },
    /// After the login click the page showed neither the dashboard nor an
    /// error.
    #[error(
        "login at {url}: neither the dashboard ({ready}) nor an error ({error}) \
         appeared within {} ms",
        .waited.as_millis()
    )]
    Undecided {
        /// The page's URL when the wait ended.
        url: String,
        /// `dashboard.ready`.
        ready: String,
        /// `login.error`.
        error: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The solver failed on the last try.
    #[error(transparent)]
    Captcha(#[from] CaptchaError),
    /// The browser failed.
    #[error(transparent)]
    Browser(#[from] BrowserError),
}

impl LoginError {
    /// Whether the master browser is gone (a hard recovery is due).
    pub fn is_browser_gone(&self) -> bool {
        matches!(self, LoginError::Browser(e) if e.is_browser_gone())
    }
}

/// What one login try ended in.
enum Try {
    LoggedIn,
    CaptchaRefused(String),
}

/// The master browser.
#[derive(Debug)]
pub struct Master {
    session: Session,
    profile: Profile,
    base_url: String,
    profile_dir: PathBuf,
    user_agent: String,
}

impl Master {
    /// Starts the master browser on `profile_dir` (created if missing;
    /// local mode only, a remote browser has its own) and learns its user
    /// agent for the clones. Does not log in.
    pub async fn open(
        driver: &Driver,
        profile: &Profile,
        base_url: &str,
        profile_dir: impl Into<PathBuf>,
    ) -> Result<Master, BrowserError> {
        let profile_dir = absolute(profile_dir.into())?;
        if !driver.is_remote() {
            crate::owner_only::create_dir_all(&profile_dir).map_err(|source| BrowserError::Io {
                doing: "creating the master profile folder",
                path: profile_dir.clone(),
                source,
            })?;
        }
        let session = driver
            .open_session("master", Some(&profile_dir), None, None)
            .await?;
        let mut master = Master {
            session,
            profile: profile.clone(),
            base_url: base_url.to_string(),
            profile_dir,
            user_agent: String::new(),
        };
        let ua = master
            .client()?
            .execute("return navigator.userAgent;", vec![])
            .await
            .map_err(|e| BrowserError::cmd("reading the master's user agent", e))?;
        master.user_agent = ua.as_str().unwrap_or_default().to_string();
        info!(profile_dir = %master.profile_dir.display(), "master browser opened");
        Ok(master)
    }

    /// Logs in: up to `login.max_tries` tries, a captcha misread or an
    /// unsolvable captcha costing one try each; any other refusal ends at
    /// once. Closes the post-login popup if it shows.
    pub async fn login(
        &mut self,
        credentials: &Credentials,
        solver: &CaptchaSolver,
    ) -> Result<(), LoginError> {
        let url = join_url(&self.base_url, &self.profile.login.url)?;
        let tries = self.profile.login.max_tries;
        let mut on_login_page = false;
        let mut last = String::new();
        for attempt in 1..=tries {
            if !on_login_page {
                self.client()?
                    .goto(&url)
                    .await
                    .map_err(|e| BrowserError::cmd(format!("opening {url}"), e))?;
            }
            match self.login_once(credentials, solver, &url).await {
                Ok(Try::LoggedIn) => {
                    info!(attempt, "master logged in");
                    self.close_popup().await;
                    return Ok(());
                }
                Ok(Try::CaptchaRefused(message)) => {
                    warn!(attempt, %message, "captcha refused; retrying with the new image");
                    // The refusal page carries the new captcha.
                    on_login_page = true;
                    last = message;
                }
                Err(LoginError::Captcha(e)) if attempt < tries => {
                    warn!(attempt, error = %e, "captcha not solved; reloading the login page");
                    on_login_page = false;
                    last = e.to_string();
                }
                Err(LoginError::Captcha(e)) => {
                    return Err(LoginError::CaptchaTries {
                        tries,
                        url,
                        last: e.to_string(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Err(LoginError::CaptchaTries { tries, url, last })
    }

    async fn login_once(
        &self,
        credentials: &Credentials,
        solver: &CaptchaSolver,
        url: &str,
    ) -> Result<Try, LoginError> {
        let login = &self.profile.login;
        let client = self.client()?;
        let timeout = Duration::from_millis(login.timeout_ms);
        let pause = Duration::from_millis(login.type_pause_ms);

        let user = wait_displayed(client, &login.username, timeout, url).await?;
        type_into(
            client,
            &user,
            credentials.username(),
            pause,
            &login.username,
        )
        .await?;
        let pass = wait_displayed(client, &login.password, timeout, url).await?;
        type_into(client, &pass, &credentials.password, pause, &login.password).await?;

        if let (Some(image), Some(input)) = (&login.captcha_image, &login.captcha_input) {
            let png = if solver.needs_image() {
                captcha_png(client, image, timeout, url).await?
            } else {
                Vec::new()
            };
            let answer = solver.solve(&png, client).await?;
            debug!(
                solver = solver.name(),
                chars = answer.len(),
                "captcha solved"
            );
            let field = wait_displayed(client, input, timeout, url).await?;
            type_into(client, &field, &answer, pause, input).await?;
        }

        // Blank the error text first, so any text seen after the click is
        // the portal's new answer (whether it reloads the page or not).
        client
            .execute(
                "for (const el of document.querySelectorAll(arguments[0])) { el.textContent = ''; }",
                vec![json!(login.error)],
            )
            .await
            .map_err(|e| BrowserError::cmd("clearing the login error", e))?;
        let button = wait_displayed(client, &login.submit, timeout, url).await?;
        button
            .click()
            .await
            .map_err(|e| BrowserError::cmd(format!("clicking {}", login.submit), e))?;

        self.await_outcome(client, timeout).await
    }

    async fn await_outcome(&self, client: &Client, timeout: Duration) -> Result<Try, LoginError> {
        let login = &self.profile.login;
        let ready = self.profile.dashboard.ready.as_str();
        let started = Instant::now();
        loop {
            let seen = session::probe(client, &[ready], Some(&login.error))
                .await
                .map_err(|e| BrowserError::cmd("waiting for the login outcome", e))?;
            let marked = login
                .logged_in_url_contains
                .as_deref()
                .is_some_and(|m| seen.url.contains(m));
            if marked || seen.visible[0] {
                return Ok(Try::LoggedIn);
            }
            if let Some(message) = seen.error_text {
                let captcha = login.captcha_error_contains.to_lowercase();
                if !captcha.is_empty() && message.to_lowercase().contains(&captcha) {
                    return Ok(Try::CaptchaRefused(message));
                }
                return Err(LoginError::Refused {
                    url: seen.url,
                    message,
                });
            }
            if started.elapsed() >= timeout {
                return Err(LoginError::Undecided {
                    url: seen.url,
                    ready: ready.to_string(),
                    error: login.error.clone(),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn close_popup(&self) {
        let Some(selector) = self.profile.dashboard.popup_close.as_deref() else {
            return;
        };
        let Ok(client) = self.client() else {
            return;
        };
        let started = Instant::now();
        while started.elapsed() < POPUP_WAIT {
            if let Ok(seen) = session::probe(client, &[selector], None).await {
                if seen.visible[0] {
                    if let Ok(el) = client.find(Locator::Css(selector)).await {
                        match el.click().await {
                            Ok(()) => debug!("post-login popup closed"),
                            Err(e) => warn!(error = %e, "could not close the post-login popup"),
                        }
                    }
                    return;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Opens the dashboard and tells within about a second whether the
    /// master is still logged in.
    pub async fn check_session(&mut self) -> Result<SessionCheck, BrowserError> {
        session::check_session(self.client()?, &self.profile, &self.base_url).await
    }

    /// Whether the master is logged in (see [`check_session`](Self::check_session)).
    pub async fn is_logged_in(&mut self) -> Result<bool, BrowserError> {
        Ok(self.check_session().await?.is_valid())
    }

    /// The master's current cookies for the portal's host: through
    /// DevTools, else over WebDriver, which reads the current page's, so the
    /// master is first brought back to the portal's origin if it wandered
    /// off.
    pub async fn cookies(&self) -> Result<Vec<BrowserCookie>, BrowserError> {
        let portal = url::Url::parse(&self.base_url).map_err(|e| BrowserError::BadUrl {
            base: self.base_url.clone(),
            path: String::new(),
            message: e.to_string(),
        })?;
        if let Some(host) = portal.host_str() {
            if let Some(cookies) = self.session.cookies_for_host(host).await {
                return Ok(cookies);
            }
        }
        let client = self.client()?;
        let here = client
            .current_url()
            .await
            .map_err(|e| BrowserError::cmd("reading the master's URL", e))?;
        if here.origin() != portal.origin() {
            let dashboard = join_url(&self.base_url, &self.profile.dashboard.url)?;
            client
                .goto(&dashboard)
                .await
                .map_err(|e| BrowserError::cmd(format!("opening {dashboard}"), e))?;
        }
        self.session.cookies().await
    }

    /// The master's user agent; clones use it, as some portals bind a
    /// session to it.
    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }

    /// The master's profile folder.
    pub fn profile_dir(&self) -> &Path {
        &self.profile_dir
    }

    /// The portal address the master logs in to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Chromium's process id (local mode), e.g. for a test to kill it.
    pub fn browser_pid(&self) -> Option<u32> {
        self.session.pid()
    }

    /// The WebDriver session id.
    pub fn session_id(&self) -> Option<&str> {
        self.session.session_id()
    }

    /// The WebDriver client, for what this type does not offer.
    pub fn client(&self) -> Result<&Client, BrowserError> {
        self.session.client()
    }

    /// A PNG of the current page.
    pub async fn screenshot(&self) -> Result<Vec<u8>, BrowserError> {
        self.session.screenshot().await
    }

    /// The current page's HTML.
    pub async fn page_source(&self) -> Result<String, BrowserError> {
        self.session.page_source().await
    }

    /// Ends the master browser; its profile folder stays.
    pub async fn close(mut self) -> Result<(), BrowserError> {
        let result = self.session.close().await;
        info!("master browser closed");
        result
    }
}

pub(crate) fn absolute(path: PathBuf) -> Result<PathBuf, BrowserError> {
    if path.is_absolute() {
        return Ok(path);
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(&path))
        .map_err(|source| BrowserError::Io {
            doing: "resolving",
            path,
            source,
        })
}

async fn wait_displayed(
    client: &Client,
    selector: &str,
    timeout: Duration,
    url: &str,
) -> Result<fantoccini::elements::Element, BrowserError> {
    let started = Instant::now();
    loop {
        match client.find_all(Locator::Css(selector)).await {
            Ok(found) => {
                for el in found {
                    if el.is_displayed().await.unwrap_or(false) {
                        return Ok(el);
                    }
                }
            }
            Err(e) if e.is_stale_element_reference() => {}
            Err(e) => return Err(BrowserError::cmd(format!("finding {selector}"), e)),
        }
        if started.elapsed() >= timeout {
            return Err(BrowserError::TimedOut {
                doing: "logging in".into(),
                what: selector.to_string(),
                url: url.to_string(),
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn type_into(
    client: &Client,
    el: &fantoccini::elements::Element,
    text: &str,
    pause: Duration,
    selector: &str,
) -> Result<(), BrowserError> {
    el.clear()
        .await
        .map_err(|e| BrowserError::cmd(format!("clearing {selector}"), e))?;
    super::steps::focus(client, el)
        .await
        .map_err(|e| BrowserError::cmd(format!("focusing {selector}"), e))?;
    tokio::time::sleep(pause).await;
    el.send_keys(text)
        .await
        .map_err(|e| BrowserError::cmd(format!("typing into {selector}"), e))
}

const CAPTCHA_PNG_JS: &str = r#"
const img = document.querySelector(arguments[0]);
if (!img) { return { state: 'missing' }; }
if (!img.complete || !img.naturalWidth) { return { state: 'loading' }; }
try {
  const c = document.createElement('canvas');
  c.width = img.naturalWidth;
  c.height = img.naturalHeight;
  c.getContext('2d').drawImage(img, 0, 0);
  return { state: 'ok', data: c.toDataURL('image/png') };
} catch (e) {
  return { state: 'tainted' };
}
"#;

/// The captcha as a PNG, taken inside the browser: the loaded image drawn
/// on a canvas at its natural size (no second request, which would fetch a
/// different captcha), or, if the canvas refuses (a cross-origin image), a
/// screenshot of the element.
async fn captcha_png(
    client: &Client,
    selector: &str,
    timeout: Duration,
    url: &str,
) -> Result<Vec<u8>, BrowserError> {
    let started = Instant::now();
    loop {
        let answer: Json = client
            .execute(CAPTCHA_PNG_JS, vec![json!(selector)])
            .await
            .map_err(|e| BrowserError::cmd(format!("reading the captcha {selector}"), e))?;
        match answer["state"].as_str() {
            Some("ok") => {
                let data = answer["data"].as_str().unwrap_or_default();
                let b64 = data.split_once(',').map_or("", |(_, b)| b);
                if let Ok(png) = base64::engine::general_purpose::STANDARD.decode(b64) {
                    return Ok(png);
                }
                break;
            }
            Some("tainted") => break,
            _ => {}
        }
        if started.elapsed() >= timeout {
            return Err(BrowserError::TimedOut {
                doing: "reading the captcha".into(),
                what: format!("a loaded image {selector}"),
                url: url.to_string(),
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
    let el = client
        .find(Locator::Css(selector))
        .await
        .map_err(|e| BrowserError::cmd(format!("finding the captcha {selector}"), e))?;
    el.screenshot()
        .await
        .map_err(|e| BrowserError::cmd(format!("screenshot of the captcha {selector}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials::new("agent7", "s3cret!");
        let shown = format!("{c:?}");
        assert!(shown.contains("agent7"));
        assert!(!shown.contains("s3cret"));
    }
}
