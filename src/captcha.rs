//! Captcha solvers for the portal's login form.
//!
//! The real deployment read the captcha with a vision model; formwright keeps
//! the solver pluggable and small: read the text from the page (`element`,
//! what the simulated portal allows), run a local program such as an OCR
//! tool on the image (`command`), or post the image to an HTTP service
//! (`http`). The image handed to a solver is always taken inside the
//! browser, because the portal ties each captcha to the session cookie: a
//! second download from outside would fetch a different captcha.
//!
//! Every answer is cut down to the profile's `charset`, since OCR output
//! carries stray spaces, newlines and look-alike characters.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::Client;

use crate::browser::plain_http;
use crate::profile::{CaptchaConfig, CaptchaMethod};

/// Where a solver gets its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SolverKind {
    /// Read the text of an element of the login page (hidden or not).
    Element {
        /// CSS selector of the element.
        selector: String,
    },
    /// Run a program; `{image}` in any argument becomes the PNG's path, and
    /// its standard output is the answer.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
    },
    /// POST the PNG (`image/png`); the body of a 2xx answer is the answer.
    Http {
        /// The solver's URL.
        url: String,
    },
}

/// A captcha solver with its answer filter and time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptchaSolver {
    /// Where the answer comes from.
    pub kind: SolverKind,
    /// Characters kept from the answer; when `None`, only white space is
    /// dropped.
    pub charset: Option<String>,
    /// How long one solve may take.
    pub timeout: Duration,
}

/// Why a captcha could not be solved. Each names the solver.
#[derive(Debug, thiserror::Error)]
pub enum CaptchaError {
    /// The element solver could not read its element.
    #[error("captcha solver element: cannot read {selector}: {message}")]
    Element {
        /// The selector.
        selector: String,
        /// What went wrong.
        message: String,
    },
    /// The command solver failed to run or exited non-zero.
    #[error("captcha solver command {program}: {message}")]
    Command {
        /// argv[0].
        program: String,
        /// What went wrong (spawn error, exit status and stderr).
        message: String,
    },
    /// The HTTP solver could not be reached or refused.
    #[error("captcha solver http {url}: {message}")]
    Http {
        /// The solver's URL.
        url: String,
        /// What went wrong (connection, status, body).
        message: String,
    },
    /// The solver took longer than its timeout.
    #[error("captcha solver {solver}: no answer within {} ms", .after.as_millis())]
    TimedOut {
        /// `element`, `command` or `http`.
        solver: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The answer held none of the allowed characters.
    #[error("captcha solver {solver}: the answer held no allowed character")]
    Empty {
        /// `element`, `command` or `http`.
        solver: &'static str,
    },
}

impl CaptchaSolver {
    /// Builds the solver a profile's `[captcha]` table describes. A table
    /// missing its method's key (which [`Profile`](crate::profile::Profile)
    /// loading already rejects) gives an error naming the key.
    pub fn from_config(config: &CaptchaConfig) -> Result<CaptchaSolver, String> {
        let kind = match config.method {
            CaptchaMethod::Element => SolverKind::Element {
                selector: config
                    .selector
                    .clone()
                    .ok_or("captcha.selector is needed by method \"element\"")?,
            },
            CaptchaMethod::Command => SolverKind::Command {
                argv: config
                    .command
                    .clone()
                    .filter(|argv| !argv.is_empty())
                    .ok_or("captcha.command is needed by method \"command\"")?,
            },
            CaptchaMethod::Http => SolverKind::Http {
                url: config
                    .url
                    .clone()
                    .ok_or("captcha.url is needed by method \"http\"")?,
            },
        };
        Ok(CaptchaSolver {
            kind,
            charset: config.charset.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
        })
    }

    /// A solver of the given kind, no charset filter, 10 s limit.
    pub fn new(kind: SolverKind) -> CaptchaSolver {
        CaptchaSolver {
            kind,
            charset: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// `element`, `command` or `http`, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self.kind {
            SolverKind::Element { .. } => "element",
            SolverKind::Command { .. } => "command",
            SolverKind::Http { .. } => "http",
        }
    }

    /// Whether the solver needs the captcha image (the element solver does
    /// not, so the login skips taking it).
    pub fn needs_image(&self) -> bool {
        !matches!(self.kind, SolverKind::Element { .. })
    }

    /// Solves one captcha: `png` is the image as the browser shows it,
    /// `client` the browser showing it.
    pub async fn solve(&self, png: &[u8], client: &Client) -> Result<String, CaptchaError> {
        let raw = tokio::time::timeout(self.timeout, self.answer(png, client))
            .await
            .map_err(|_| CaptchaError::TimedOut {
                solver: self.name(),
                after: self.timeout,
            })??;
        let kept = self.filter(&raw);
        if kept.is_empty() {
            return Err(CaptchaError::Empty {
                solver: self.name(),
            });
        }
        Ok(kept)
    }

    async fn answer(&self, png: &[u8], client: &Client) -> Result<String, CaptchaError> {
        match &self.kind {
            SolverKind::Element { selector } => read_element(selector, client).await,
            SolverKind::Command { argv } => run_command(argv, png).await,
            SolverKind::Http { url } => post_image(url, png, self.timeout).await,
        }
    }

    /// Keeps the charset's characters. A character outside the charset
    /// whose other case is in it is kept in that case: OCR often confuses
    /// case, and captchas that list one case do not tell them apart.
    pub fn filter(&self, raw: &str) -> String {
        let Some(charset) = &self.charset else {
            return raw.chars().filter(|c| !c.is_whitespace()).collect();
        };
        raw.chars()
            .filter_map(|c| {
                [c, c.to_ascii_uppercase(), c.to_ascii_lowercase()]
                    .into_iter()
                    .find(|x| charset.contains(*x))
            })
            .collect()
    }
}

const READ_TEXT_JS: &str = r#"
const el = document.querySelector(arguments[0]);
if (!el) { return null; }
return (el.value !== undefined && el.value !== '') ? String(el.value) : el.textContent;
"#;

async fn read_element(selector: &str, client: &Client) -> Result<String, CaptchaError> {
    let fail = |message: String| CaptchaError::Element {
        selector: selector.to_string(),
        message,
    };
    let value = client
        .execute(READ_TEXT_JS, vec![selector.into()])
        .await
        .map_err(|e| fail(e.to_string()))?;
    match value {
        serde_json::Value::String(text) => Ok(text),
        serde_json::Value::Null => Err(fail("no such element".into())),
        other => Err(fail(format!("unexpected value {other}"))),
    }
}

/// The temporary PNG a command solver reads; removed when dropped, however
/// the solve ends.
struct TempImage(PathBuf);

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn run_command(argv: &[String], png: &[u8]) -> Result<String, CaptchaError> {
    let program = argv.first().cloned().unwrap_or_default();
    let fail = |message: String| CaptchaError::Command {
        program: program.clone(),
        message,
    };
    let path = std::env::temp_dir().join(format!(
        "formwright-captcha-{}-{:016x}.png",
        std::process::id(),
        rand::random::<u64>()
    ));
    tokio::fs::write(&path, png)
        .await
        .map_err(|e| fail(format!("writing {}: {e}", path.display())))?;
    let image = TempImage(path);

    let image_path = image.0.display().to_string();
    let args: Vec<String> = argv[1..]
        .iter()
        .map(|a| a.replace("{image}", &image_path))
        .collect();
    // kill_on_drop: the caller's timeout drops this future, and a hung OCR
    // process must not outlive it.
    let output = tokio::process::Command::new(&program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| fail(format!("cannot run: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().next().unwrap_or("").trim();
        return Err(fail(format!("exited with {}: {first}", output.status)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn post_image(url: &str, png: &[u8], timeout: Duration) -> Result<String, CaptchaError> {
    let fail = |message: String| CaptchaError::Http {
        url: url.to_string(),
        message,
    };
    let reply = plain_http::send(
        ::http::Method::POST,
        url,
        Some("image/png"),
        png.to_vec(),
        timeout,
    )
    .await
    .map_err(fail)?;
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    if !(200..300).contains(&reply.status) {
        let first = body.lines().next().unwrap_or("").trim();
        return Err(fail(format!("answered {}: {first}", reply.status)));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_keeps_the_charset() {
        let mut s = CaptchaSolver::new(SolverKind::Http { url: "x".into() });
        assert_eq!(s.filter(" ab c\n"), "abc");
        s.charset = Some("ABCDEFGHJKLMNPQRSTUVWXYZ23456789".into());
        assert_eq!(s.filter(" x7k-P0\n"), "X7KP");
    }

    #[test]
    fn from_config_needs_the_method_key() {
        let config: CaptchaConfig = toml::from_str("method = \"http\"").unwrap();
        let err = CaptchaSolver::from_config(&config).unwrap_err();
        assert!(err.contains("captcha.url"));
    }

    #[tokio::test]
    async fn command_errors_name_the_program() {
        let err = run_command(&["/nonexistent/ocr".into(), "{image}".into()], b"png")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ocr"), "{err}");

        let err = run_command(&["false".into(), "{image}".into()], b"png")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exited with"), "{err}");
    }

    #[tokio::test]
    async fn command_reads_the_image_file() {
        // `cat {image}` echoes the "image" back, proving the substitution.
        let out = run_command(&["cat".into(), "{image}".into()], b"K7P2")
            .await
            .unwrap();
        assert_eq!(out, "K7P2");
    }

    #[tokio::test]
    async fn http_errors_name_the_url() {
        let err = post_image("http://127.0.0.1:9/solve", b"png", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("http://127.0.0.1:9/solve"),
            "{err}"
        );
    }
}
