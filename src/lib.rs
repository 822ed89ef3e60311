//! formwright fills and submits insurer agent-portal forms through a real
//! browser, and never submits the same form twice.
//!
//! # Layout
//!
//! - [`journal`]: the append-only event log in sled, its byte format, and
//!   the events themselves. The source of truth and the audit trail.
//! - [`machine`]: the typed state machines (statig) of a job and of the
//!   master session. Pure: state plus event gives state, or a refusal.
//! - [`book`]: the state that replaying the journal builds, and the single
//!   door through which new events are checked, journaled and applied.
//! - [`invariants`]: the promises checked over a whole journal (`replay`).
//! - [`export`]: the journal as JSON for auditors.
//! - [`html`]: escaping for the pages formwright serves.
//! - [`profile`]: portal profiles in TOML: URLs, selectors, the job fields
//!   and how they map, the ordered steps of the proposal flow.
//! - [`browser`]: chromedriver and Chromium over WebDriver (fantoccini): the
//!   master login, the per-job clone and its check, the step runner.
//! - [`artifacts`]: failure evidence (screenshot, page HTML, console log):
//!   the local spool, the S3 and local-folder stores, the uploader.
//! - [`captcha`]: the pluggable captcha solvers.
//! - [`portal_sim`]: the simulated agent portal that the demo and the tests
//!   drive, with its ledger and fault switches.
//! - [`owner_only`]: folders and files only the daemon's user may read.
//! - [`rig`]: formwright with the simulated portal on one machine, as the
//!   demo and the end-to-end tests run it.
//! - [`documents`]: job documents in a file or a body (object, array or
//!   NDJSON).
//! - [`config`]: the daemon's configuration (TOML, `FORMWRIGHT_*`
//!   overrides, secrets from the environment or a file).
//! - [`timing`]: where an attempt's time goes: a timed span per step,
//!   exported as a histogram and summarised by the demo.
//! - [`api`]: the HTTP API, metrics and the dashboard (axum).
//! - [`cli`]: the commands of the `formwright` binary, one file each
//!   (`run` is the daemon; `submit`, `jobs`, `status`, `retry` its clients).

pub mod api;
pub mod artifacts;
pub mod book;
pub mod browser;
pub mod captcha;
pub mod cli;
pub mod config;
pub mod documents;
pub mod engine;
pub mod export;
pub mod html;
pub mod invariants;
pub mod journal;
pub mod machine;
pub mod owner_only;
pub mod portal_sim;
pub mod profile;
pub mod rig;
pub mod timing;
