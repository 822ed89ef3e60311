//! The daemon's configuration: a TOML file, overridden by `FORMWRIGHT_*`
//! environment variables, with the two secrets (the portal password and the
//! API token) read from the environment or from a file, never from the
//! command line or the TOML itself.
//!
//! Every key has a default and is documented in `formwright.example.toml`;
//! a test keeps that file and [`DaemonConfig::default`] in step. The
//! environment name of a key is `FORMWRIGHT_` plus the section and the key
//! in capitals: `[engine] workers` is `FORMWRIGHT_ENGINE_WORKERS`, the
//! top-level `journal_dir` is `FORMWRIGHT_JOURNAL_DIR`. Optional text
//! settings are empty strings when unset, so every key has a type.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Value;

use crate::browser::CloneStrategy;

/// Prefix of every environment variable the daemon reads.
pub const ENV_PREFIX: &str = "FORMWRIGHT_";

/// The portal password, from the environment.
pub const ENV_PORTAL_PASSWORD: &str = "FORMWRIGHT_PORTAL_PASSWORD";
/// The API token, from the environment.
pub const ENV_API_TOKEN: &str = "FORMWRIGHT_API_TOKEN";
/// Where the CLI clients find the API.
pub const ENV_API_URL: &str = "FORMWRIGHT_API_URL";
/// The configuration file, when `--config` is not given.
pub const ENV_CONFIG: &str = "FORMWRIGHT_CONFIG";

/// Everything `formwright run` needs, secrets aside.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// The journal folder (sled). One daemon at a time holds it.
    pub journal_dir: PathBuf,
    /// Browser profiles, per-attempt folders and failure evidence.
    pub work_dir: PathBuf,
    /// The portal profile (TOML; `docs/profiles.md`).
    pub profile: PathBuf,
    /// `human` (default) or `json`: one JSON object per line.
    pub log_format: String,
    /// A tracing filter (`info`, `formwright=debug,warn`); `RUST_LOG` wins.
    pub log_filter: String,
    pub portal: PortalSection,
    pub engine: EngineSection,
    pub alerts: AlertsSection,
    pub api: ApiSection,
    pub artifacts: crate::artifacts::ArtifactsSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortalSection {
    /// The portal's address; empty takes the profile's `base_url`.
    pub base_url: String,
    /// The agent account's user name.
    pub username: String,
    /// A file holding the password (its first line), used when
    /// `FORMWRIGHT_PORTAL_PASSWORD` is not set.
    pub password_file: PathBuf,
    /// A running WebDriver server (Selenium Grid); empty starts a local
    /// chromedriver.
    pub webdriver_url: String,
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// Attempts running at once (one headless Chromium each).
    pub workers: u32,
    /// Attempts per job (per round) before it ends `failed_login_form`.
    pub max_attempts: u32,
    /// Wait before the second attempt, doubled for each later one.
    pub backoff_s: u64,
    /// The longest wait between attempts.
    pub backoff_max_s: u64,
    /// How often the master's login is checked; 0 turns it off.
    pub heartbeat_s: u64,
    /// Pause between two failed recovery tries.
    pub recovery_try_pause_s: u64,
    /// Wait after every recovery level failed, before a new ladder.
    pub recovery_cooldown_s: u64,
    /// At shutdown, how long attempts past `submitted` may take to finish.
    pub shutdown_drain_s: u64,
    /// `pooled` (warm job browsers, one per worker and `pool_spare` more)
    /// or `fresh` (a new browser on a profile copy per attempt).
    pub clone_strategy: CloneStrategy,
    /// A pooled browser is replaced after this many attempts.
    pub pool_recycle_after: u32,
    /// Warm browsers kept beyond one per worker (`pooled`), so a worker
    /// never waits for the wipe of the browser it has just returned.
    pub pool_spare: u32,
    /// Seconds a dashboard a parked pooled browser has preloaded (logged
    /// in with the master's cookies) may serve an attempt as it is; 0:
    /// parked browsers wait on a blank page.
    pub pool_preload_max_age_s: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsSection {
    /// Slack-compatible webhook (`http://` only); empty logs alerts only.
    pub webhook_url: String,
    /// More recoveries than this within an hour raises a warning.
    pub recoveries_per_hour: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// The address the API listens on. Anything but loopback exposes job
    /// data: put a TLS proxy in front.
    pub bind: String,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// A file holding the bearer token (its first line), used when
    /// `FORMWRIGHT_API_TOKEN` is not set.
    pub token_file: PathBuf,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            journal_dir: PathBuf::from("/var/lib/formwright/journal"),
            work_dir: PathBuf::from("/var/lib/formwright/work"),
            profile: PathBuf::from("/etc/formwright/profile.toml"),
            log_format: "human".into(),
            log_filter: "info".into(),
            portal: PortalSection::default(),
            engine: EngineSection::default(),
            alerts: AlertsSection::default(),
            api: ApiSection::default(),
            artifacts: Default::default(),
        }
    }
}

impl Default for PortalSection {
    fn default() -> Self {
        PortalSection {
            base_url: String::new(),
            username: String::new(),
            password_file: PathBuf::new(),
            webdriver_url: String::new(),
            chromium: PathBuf::from("/usr/bin/chromium"),
            chromedriver: PathBuf::from("/usr/bin/chromedriver"),
        }
    }
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            workers: 3,
            max_attempts: 3,
            backoff_s: 60,
            backoff_max_s: 3600,
            heartbeat_s: 60,
            recovery_try_pause_s: 2,
            recovery_cooldown_s: 300,
            shutdown_drain_s: 60,
            clone_strategy: CloneStrategy::Pooled,
            pool_recycle_after: 50,
            pool_spare: 1,
            pool_preload_max_age_s: crate::browser::pool::DEFAULT_PRELOAD_MAX_AGE.as_secs(),
        }
    }
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            webhook_url: String::new(),
            recoveries_per_hour: 10,
        }
    }
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            bind: "127.0.0.1".into(),
            port: 8400,
            token_file: PathBuf::new(),
            max_body_bytes: 256 * 1024,
        }
    }
}

/// Why the configuration cannot be used. Never quotes a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("{what} is not set: set {env} or {key} (a file holding it)")]
    MissingSecret {
        what: &'static str,
        env: &'static str,
        key: &'static str,
    },
}

/// A loaded configuration and what was noticed on the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: DaemonConfig,
    /// Things worth a warning once logging runs (unknown variables, loose
    /// file permissions).
    pub warnings: Vec<String>,
}

impl DaemonConfig {
    /// Reads `path` (when given) and applies `env` on top. `env` is passed
    /// in, not read here, so tests need not touch the process environment.
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?,
                p.display().to_string(),
            ),
            None => (String::new(), "<defaults>".to_string()),
        };
        Self::from_parts(&text, &origin, env)
    }

    /// Parses TOML text and applies the environment overrides.
    pub fn from_parts(
        text: &str,
        origin: &str,
        env: &[(String, String)],
    ) -> Result<Loaded, ConfigError> {
        let syntax = |message: String| ConfigError::Syntax {
            origin: origin.to_string(),
            message,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            let mut message = e.message().trim().to_string();
            if let Some(span) = e.span() {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                message = format!("line {line}: {message}");
            }
            syntax(message)
        })?;
        for (section, key) in [("portal", "password"), ("api", "token")] {
            let found = table
                .get(section)
                .and_then(Value::as_table)
                .is_some_and(|t| t.contains_key(key));
            if found {
                return Err(syntax(format!(
                    "[{section}] {key}: secrets do not go in the configuration file; \
                     use {}_FILE-style `{key}_file` or the environment",
                    key.to_uppercase()
                )));
            }
        }

        let warnings = apply_env(&mut table, env)?;
        let config: DaemonConfig = Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| syntax(e.message().trim().to_string()))?;
        config.check()?;
        Ok(Loaded { config, warnings })
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message: message.into(),
            })
        };
        if !matches!(self.log_format.as_str(), "human" | "json") {
            return invalid("log_format", "must be \"human\" or \"json\"");
        }
        if self.engine.workers == 0 {
            return invalid("engine.workers", "must be at least 1");
        }
        if self.engine.max_attempts == 0 {
            return invalid("engine.max_attempts", "must be at least 1");
        }
        if self.engine.pool_recycle_after == 0 {
            return invalid("engine.pool_recycle_after", "must be at least 1");
        }
        if self.api.bind.parse::<IpAddr>().is_err() {
            return invalid("api.bind", "must be an IP address, e.g. 127.0.0.1");
        }
        if self.api.max_body_bytes < 1024 {
            return invalid("api.max_body_bytes", "must be at least 1024");
        }
        if let Some((key, message)) = self.artifacts.problem() {
            return invalid(key, message);
        }
        if self.portal.username.is_empty() {
            return invalid("portal.username", "must be set");
        }
        for (key, url) in [
            ("portal.base_url", &self.portal.base_url),
            ("portal.webdriver_url", &self.portal.webdriver_url),
            ("alerts.webhook_url", &self.alerts.webhook_url),
        ] {
            if !url.is_empty() && url::Url::parse(url).is_err() {
                return invalid(key, "is not a URL");
            }
        }
        Ok(())
    }

    pub fn engine_config(&self) -> crate::engine::EngineConfig {
        let e = &self.engine;
        crate::engine::EngineConfig {
            workers: e.workers as usize,
            max_attempts: e.max_attempts,
            backoff: Duration::from_secs(e.backoff_s),
            backoff_max: Duration::from_secs(e.backoff_max_s.max(e.backoff_s)),
            heartbeat: (e.heartbeat_s > 0).then(|| Duration::from_secs(e.heartbeat_s)),
            session: crate::engine::session::SessionConfig {
                try_pause: Duration::from_secs(e.recovery_try_pause_s),
                cooldown: Duration::from_secs(e.recovery_cooldown_s),
            },
            alerts: crate::engine::alerts::AlertConfig {
                webhook: non_empty(&self.alerts.webhook_url),
                recoveries_per_hour: self.alerts.recoveries_per_hour as usize,
            },
            drain: Duration::from_secs(e.shutdown_drain_s),
        }
    }

    /// How job browsers are had: the strategy, one pooled browser per
    /// worker, and their recycling.
    pub fn clone_settings(&self) -> crate::browser::CloneSettings {
        crate::browser::CloneSettings {
            strategy: self.engine.clone_strategy,
            pool_size: self.engine.workers as usize,
            recycle_after: self.engine.pool_recycle_after,
            spare: self.engine.pool_spare as usize,
            preload_max_age: Duration::from_secs(self.engine.pool_preload_max_age_s),
        }
    }

    /// Every key with its environment variable name, in file order.
    pub fn env_names() -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Ok(Value::Table(table)) = Value::try_from(DaemonConfig::default()) {
            for (key, value) in &table {
                match value {
                    Value::Table(section) => {
                        for inner in section.keys() {
                            out.push((format!("{key}.{inner}"), env_name(&[key, inner])));
                        }
                    }
                    _ => out.push((key.clone(), env_name(&[key]))),
                }
            }
        }
        out
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.trim().to_string())
}

fn env_name(parts: &[&str]) -> String {
    format!("{ENV_PREFIX}{}", parts.join("_").to_uppercase())
}

/// Variables that are read elsewhere, not config keys.
const OTHER_VARS: &[&str] = &[ENV_PORTAL_PASSWORD, ENV_API_TOKEN, ENV_API_URL, ENV_CONFIG];

/// Puts each `FORMWRIGHT_*` override into the table, typed like the
/// default of its key. Returns warnings for names that match no key.
fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<Vec<String>, ConfigError> {
    let defaults = match Value::try_from(DaemonConfig::default()) {
        Ok(Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    let mut known: Vec<(String, Option<String>, String, Value)> = Vec::new();
    for (key, value) in &defaults {
        match value {
            Value::Table(section) => {
                for (inner, v) in section {
                    let name = env_name(&[key, inner]);
                    known.push((name, Some(key.clone()), inner.clone(), v.clone()));
                }
            }
            v => known.push((env_name(&[key]), None, key.clone(), v.clone())),
        }
    }

    let mut warnings = Vec::new();
    for (name, raw) in env {
        if !name.starts_with(ENV_PREFIX) || OTHER_VARS.contains(&name.as_str()) {
            continue;
        }
        let Some((_, section, key, default)) = known.iter().find(|(n, ..)| n == name) else {
            warnings.push(format!("{name} is set but is not a formwright setting"));
            continue;
        };
        let bad = |message: &str| ConfigError::Env {
            name: name.clone(),
            message: message.into(),
        };
        let value = match default {
            Value::Integer(_) => Value::Integer(
                raw.trim()
                    .parse()
                    .map_err(|_| bad("expected a whole number"))?,
            ),
            Value::Boolean(_) => Value::Boolean(match raw.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err(bad("expected true or false")),
            }),
            _ => Value::String(raw.clone()),
        };
        let target = match section {
            Some(s) => {
                let entry = table
                    .entry(s.clone())
                    .or_insert_with(|| Value::Table(toml::Table::new()));
                match entry {
                    Value::Table(t) => t,
                    _ => return Err(bad(&format!("[{s}] in the file is not a table"))),
                }
            }
            None => &mut *table,
        };
        target.insert(key.clone(), value);
    }
    Ok(warnings)
}

/// A secret string: its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

/// The two secrets of a daemon.
#[derive(Clone, Debug)]
pub struct Secrets {
    pub portal_password: Secret,
    pub api_token: Secret,
}

/// Shortest API token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

impl Secrets {
    /// Reads both secrets: the environment first, then the file the
    /// configuration names. Warnings note loosely permitted files.
    pub fn resolve(
        config: &DaemonConfig,
        env: &[(String, String)],
        warnings: &mut Vec<String>,
    ) -> Result<Secrets, ConfigError> {
        let portal_password = secret(
            env,
            ENV_PORTAL_PASSWORD,
            &config.portal.password_file,
            "portal.password_file",
            "the portal password",
            warnings,
        )?;
        let api_token = secret(
            env,
            ENV_API_TOKEN,
            &config.api.token_file,
            "api.token_file",
            "the API token",
            warnings,
        )?;
        if api_token.expose().chars().count() < MIN_TOKEN_LEN {
            return Err(ConfigError::Invalid {
                key: "API token".into(),
                message: format!("must be at least {MIN_TOKEN_LEN} characters"),
            });
        }
        Ok(Secrets {
            portal_password,
            api_token,
        })
    }
}

fn secret(
    env: &[(String, String)],
    var: &'static str,
    file: &Path,
    key: &'static str,
    what: &'static str,
    warnings: &mut Vec<String>,
) -> Result<Secret, ConfigError> {
    if let Some((_, value)) = env.iter().find(|(n, v)| n == var && !v.is_empty()) {
        return Ok(Secret::new(value.trim_end_matches(['\r', '\n'])));
    }
    if file.as_os_str().is_empty() {
        return Err(ConfigError::MissingSecret {
            what,
            env: var,
            key,
        });
    }
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(file) {
            if meta.permissions().mode() & 0o077 != 0 {
                warnings.push(format!(
                    "{} ({key}) is readable by others; chmod 600 it",
                    file.display()
                ));
            }
        }
    }
    let value = text.lines().next().unwrap_or("").trim_end().to_string();
    if value.is_empty() {
        return Err(ConfigError::Invalid {
            key: key.into(),
            message: format!("{} is empty", file.display()),
        });
    }
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const MINIMAL: &str = "[portal]\nusername = \"agent01\"\n";

    #[test]
    fn the_example_file_documents_every_key_and_loads() {
        let text = include_str!("../formwright.example.toml");
        let loaded = DaemonConfig::from_parts(text, "example", &[]).expect("example loads");
        let table: toml::Table = toml::from_str(text).unwrap();
        for (key, env_var) in DaemonConfig::env_names() {
            let present = match key.split_once('.') {
                Some((s, k)) => table
                    .get(s)
                    .and_then(Value::as_table)
                    .is_some_and(|t| t.contains_key(k)),
                None => table.contains_key(&key),
            };
            assert!(present, "{key} is missing from formwright.example.toml");
            assert!(text.contains(&env_var), "{env_var} is not mentioned");
        }
        assert_eq!(loaded.config.api.bind, "127.0.0.1");
    }

    #[test]
    fn environment_overrides_the_file_with_types() {
        let loaded = DaemonConfig::from_parts(
            "journal_dir = \"/a\"\n[engine]\nworkers = 2\n[portal]\nusername = \"u\"\n",
            "t",
            &env(&[
                ("FORMWRIGHT_ENGINE_WORKERS", "5"),
                ("FORMWRIGHT_JOURNAL_DIR", "/b"),
                ("FORMWRIGHT_API_PORT", "9000"),
                ("FORMWRIGHT_ENGIN_WORKERS", "1"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(loaded.config.engine.workers, 5);
        assert_eq!(loaded.config.journal_dir, PathBuf::from("/b"));
        assert_eq!(loaded.config.api.port, 9000);
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("FORMWRIGHT_ENGIN_WORKERS"));

        let err = DaemonConfig::from_parts(MINIMAL, "t", &env(&[("FORMWRIGHT_API_PORT", "x")]))
            .unwrap_err();
        assert!(err.to_string().contains("FORMWRIGHT_API_PORT"), "{err}");
    }

    #[test]
    fn the_clone_strategy_is_pooled_unless_set_to_fresh() {
        let config = DaemonConfig::from_parts(MINIMAL, "t", &[]).unwrap().config;
        assert_eq!(config.engine.clone_strategy, CloneStrategy::Pooled);
        let clone = config.clone_settings();
        assert_eq!(
            (clone.pool_size, clone.recycle_after, clone.spare),
            (3, 50, 1)
        );

        let file = format!("{MINIMAL}[engine]\nclone_strategy = \"fresh\"\n");
        let config = DaemonConfig::from_parts(&file, "t", &[]).unwrap().config;
        assert_eq!(config.engine.clone_strategy, CloneStrategy::Fresh);

        let overridden = DaemonConfig::from_parts(
            &file,
            "t",
            &env(&[
                ("FORMWRIGHT_ENGINE_CLONE_STRATEGY", "pooled"),
                ("FORMWRIGHT_ENGINE_WORKERS", "5"),
                ("FORMWRIGHT_ENGINE_POOL_RECYCLE_AFTER", "7"),
                ("FORMWRIGHT_ENGINE_POOL_SPARE", "0"),
            ]),
        )
        .unwrap()
        .config
        .clone_settings();
        assert_eq!(overridden.strategy, CloneStrategy::Pooled);
        assert_eq!(
            (
                overridden.pool_size,
                overridden.recycle_after,
                overridden.spare
            ),
            (5, 7, 0)
        );

        let err = DaemonConfig::from_parts(
            MINIMAL,
            "t",
            &env(&[("FORMWRIGHT_ENGINE_CLONE_STRATEGY", "warm")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("warm") && err.contains("pooled"), "{err}");
        let err = DaemonConfig::from_parts(
            MINIMAL,
            "t",
            &env(&[("FORMWRIGHT_ENGINE_POOL_RECYCLE_AFTER", "0")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("pool_recycle_after"), "{err}");
    }

    #[test]
    fn refuses_secrets_in_the_file_and_bad_values() {
        let err = DaemonConfig::from_parts(
            "[portal]\nusername = \"u\"\npassword = \"hunter2hunter2\"\n",
            "t",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("secrets do not go"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        let err = DaemonConfig::from_parts("[engine]\nworkerz = 2\n", "t", &[]).unwrap_err();
        assert!(err.to_string().contains("workerz"), "{err}");
        let err = DaemonConfig::from_parts(
            &format!("{MINIMAL}[api]\nbind = \"localhost:80\"\n"),
            "t",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("api.bind"), "{err}");
    }

    #[test]
    fn secrets_come_from_env_or_file_and_never_print() {
        let config = DaemonConfig::from_parts(MINIMAL, "t", &[]).unwrap().config;
        let mut warnings = Vec::new();
        let err = Secrets::resolve(&config, &[], &mut warnings).unwrap_err();
        assert!(err.to_string().contains(ENV_PORTAL_PASSWORD), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "0123456789abcdef-token\n").unwrap();
        let mut config = config;
        config.api.token_file = token_file;
        let secrets = Secrets::resolve(
            &config,
            &env(&[(ENV_PORTAL_PASSWORD, "pw-from-env")]),
            &mut warnings,
        )
        .unwrap();
        assert_eq!(secrets.portal_password.expose(), "pw-from-env");
        assert_eq!(secrets.api_token.expose(), "0123456789abcdef-token");
        let shown = format!("{secrets:?} {}", secrets.api_token);
        assert!(
            !shown.contains("pw-from-env") && !shown.contains("abcdef"),
            "{shown}"
        );

        let short = env(&[(ENV_PORTAL_PASSWORD, "p"), (ENV_API_TOKEN, "short")]);
        assert!(Secrets::resolve(&config, &short, &mut warnings).is_err());
    }
}
