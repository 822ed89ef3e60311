//! `formwright submit`, `jobs`, `status` and `retry`: clients of a running
//! daemon's HTTP API. The API's address comes from `--api-url`,
//! `FORMWRIGHT_API_URL` or the configuration file; the token from
//! `FORMWRIGHT_API_TOKEN`, `--token-file` or the configuration's
//! `api.token_file`, never from a flag's value.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::{DaemonConfig, Secret, Secrets, ENV_API_TOKEN, ENV_API_URL, ENV_CONFIG};

/// Where the API is and how to sign in.
#[derive(Clone, Debug, clap::Args)]
pub struct ApiArgs {
    /// The API's base URL, e.g. http://127.0.0.1:8400.
    #[arg(long, env = ENV_API_URL)]
    pub api_url: Option<String>,
    /// A file holding the API token (when FORMWRIGHT_API_TOKEN is unset).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The daemon's configuration, for the address and the token file.
    #[arg(long, env = ENV_CONFIG)]
    pub config: Option<PathBuf>,
}

/// A connection to the API.
pub struct ApiClient {
    base: String,
    token: Secret,
}

/// One answer.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl ApiClient {
    pub fn new(base: impl Into<String>, token: Secret) -> ApiClient {
        ApiClient {
            base: base.into().trim_end_matches('/').to_string(),
            token,
        }
    }

    /// Resolves the address and the token from flags, environment, config.
    pub fn from_args(args: &ApiArgs) -> anyhow::Result<ApiClient> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let config = match &args.config {
            Some(path) => Some(DaemonConfig::load(Some(path), &env)?.config),
            None => None,
        };
        let base = match (&args.api_url, &config) {
            (Some(url), _) => url.clone(),
            (None, Some(c)) => format!("http://{}:{}", c.api.bind, c.api.port),
            (None, None) => "http://127.0.0.1:8400".into(),
        };
        let token = if let Some((_, t)) = env
            .iter()
            .find(|(k, v)| k == ENV_API_TOKEN && !v.is_empty())
        {
            Secret::new(t.trim())
        } else {
            let mut config = config.unwrap_or_default();
            if let Some(file) = &args.token_file {
                config.api.token_file = file.clone();
            }
            // Reuse the daemon's resolution for the token (the password is
            // not needed here, so give it a placeholder).
            let env = vec![(
                crate::config::ENV_PORTAL_PASSWORD.to_string(),
                "unused".to_string(),
            )];
            Secrets::resolve(&config, &env, &mut Vec::new())?.api_token
        };
        Ok(ApiClient::new(base, token))
    }

    /// Sends one request with the bearer token; the body is JSON.
    pub async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Answer> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let url = format!("{}{path}", self.base);
        let mut request = http::Request::builder().method(method).uri(&url).header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", self.token.expose()),
        );
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let exchange = async {
            let response = client
                .request(request)
                .await
                .with_context(|| format!("cannot reach the daemon at {}", self.base))?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await?.to_bytes();
            let body = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
            anyhow::Ok(Answer { status, body })
        };
        tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .map_err(|_| anyhow::anyhow!("no answer from {} within 30 s", self.base))?
    }
}

fn error_text(body: &Value) -> String {
    let mut text = body
        .get("error")
        .and_then(Value::as_str)
        .map_or_else(|| body.to_string(), str::to_string);
    if let Some(fields) = body.get("fields").and_then(Value::as_array) {
        for f in fields {
            text.push_str(&format!(
                "\n    {}: {}",
                f["path"].as_str().unwrap_or("?"),
                f["message"].as_str().unwrap_or("?")
            ));
        }
    }
    text
}

/// `formwright submit FILE`: posts every job; true when all were taken.
pub async fn submit(client: &ApiClient, file: &str, out: &mut impl Write) -> anyhow::Result<bool> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    let docs = crate::documents::parse(&text)?;
    let mut all_ok = true;
    for (i, doc) in docs.iter().enumerate() {
        let id = doc
            .get("policyId")
            .and_then(Value::as_str)
            .map_or_else(|| format!("job [{i}]"), str::to_string);
        let answer = client
            .send(http::Method::POST, "/api/jobs", Some(doc.to_string()))
            .await?;
        let verdict = match answer.status {
            201 => "accepted".to_string(),
            200 => "already accepted (same document)".to_string(),
            _ => {
                all_ok = false;
                format!("refused ({}): {}", answer.status, error_text(&answer.body))
            }
        };
        writeln!(out, "{id:<20} {verdict}")?;
    }
    Ok(all_ok)
}

/// `formwright jobs`: one page of the list.
pub async fn jobs(
    client: &ApiClient,
    status: Option<&str>,
    limit: usize,
    cursor: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut path = format!("/api/jobs?limit={limit}");
    if let Some(s) = status {
        path.push_str(&format!("&status={s}"));
    }
    if let Some(c) = cursor {
        path.push_str(&format!("&cursor={c}"));
    }
    let answer = client.send(http::Method::GET, &path, None).await?;
    if answer.status != 200 {
        bail!("HTTP {}: {}", answer.status, error_text(&answer.body));
    }
    writeln!(
        out,
        "{:<20} {:<24} {:>8} {:<16} reason",
        "job", "status", "attempts", "proposal"
    )?;
    for job in answer.body["jobs"].as_array().into_iter().flatten() {
        let reason = match job["status"].as_str() {
            Some("completed") => String::new(),
            _ => job["failure"]
                .as_object()
                .map(|f| {
                    format!(
                        "{} at {}: {}",
                        f["type"].as_str().unwrap_or(""),
                        f["stage"].as_str().unwrap_or(""),
                        f["error"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or_default(),
        };
        writeln!(
            out,
            "{:<20} {:<24} {:>8} {:<16} {reason}",
            job["id"].as_str().unwrap_or(""),
            job["status"].as_str().unwrap_or(""),
            format!("{}/{}", job["attempts"], job["max_attempts"]),
            job["proposal_no"].as_str().unwrap_or("-"),
        )?;
    }
    if let Some(next) = answer.body["next_cursor"].as_str() {
        writeln!(out, "(more: --cursor {next})")?;
    }
    Ok(())
}

/// `formwright status ID`: one job and its timeline.
pub async fn status(client: &ApiClient, id: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let path = format!("/api/jobs/{}", encode_segment(id));
    let answer = client.send(http::Method::GET, &path, None).await?;
    if answer.status != 200 {
        bail!("HTTP {}: {}", answer.status, error_text(&answer.body));
    }
    print_job(&answer.body, out)
}

/// `formwright retry ID`: an operator's requeue.
pub async fn retry(
    client: &ApiClient,
    id: &str,
    reason: Option<&str>,
    confirm_post_submission: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let path = format!("/api/jobs/{}/retry", encode_segment(id));
    let body = serde_json::json!({
        "reason": reason,
        "confirm_post_submission": confirm_post_submission,
    });
    let answer = client
        .send(http::Method::POST, &path, Some(body.to_string()))
        .await?;
    if answer.status != 200 {
        bail!("HTTP {}: {}", answer.status, error_text(&answer.body));
    }
    print_job(&answer.body, out)
}

fn print_job(job: &Value, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(out, "job        {}", job["id"].as_str().unwrap_or(""))?;
    writeln!(out, "status     {}", job["status"].as_str().unwrap_or(""))?;
    writeln!(
        out,
        "attempts   {}/{} (all rounds: {})",
        job["attempts"], job["max_attempts"], job["attempts_total"]
    )?;
    if let Some(p) = job["proposal_no"].as_str() {
        writeln!(out, "proposal   {p}")?;
    }
    if let Some(f) = job["failure"].as_object() {
        writeln!(
            out,
            "failure    {} at {}: {}",
            f["type"].as_str().unwrap_or(""),
            f["stage"].as_str().unwrap_or(""),
            f["error"].as_str().unwrap_or("")
        )?;
    }
    for a in job["artifacts"].as_array().into_iter().flatten() {
        writeln!(out, "artifact   {}", a.as_str().unwrap_or(""))?;
    }
    writeln!(out, "timeline")?;
    for step in job["timeline"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  {:>6}  {}  {}",
            step["seq"],
            step["at"].as_str().unwrap_or(""),
            step["note"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

/// Percent-encodes a path segment.
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
