//! Portal profiles: everything formwright knows about one insurer portal.
//!
//! A profile is a TOML file (format in `docs/profiles.md`) with the portal's
//! URLs, the login and dashboard selectors, the captcha method, the job
//! fields it reads and the ordered form steps. The engine and the browser
//! never name an element themselves, so moving from the simulated portal to
//! the real one changes only the profile.
//!
//! Loading checks the whole file up front (every problem at once, each named
//! by its key), because a profile mistake found halfway through a proposal
//! costs an attempt, and one found after the submit click costs a manual
//! review.
//!
//! [`Profile::extract`] turns a job document (the agency's `onlinePolicy`
//! JSON, taken as it is) into the [`FieldValues`] the steps type. It reports
//! every bad field, not just the first, so an operator fixes a job in one go.
//! Values marked `personal` never reach a log except through
//! [`FieldValues::masked`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use regex::Regex;
use serde::{Deserialize, Deserializer};
use serde_json::Value as Json;

/// Default time a step may take, in milliseconds.
pub const DEFAULT_STEP_TIMEOUT_MS: u64 = 15_000;

/// Default wait of an `accept_alert` step: alerts come at once or not at all,
/// and an `optional` one should not hold a job for the full step timeout.
pub const DEFAULT_ALERT_TIMEOUT_MS: u64 = 5_000;

/// Default loading-mask selector (Kendo UI's).
pub const DEFAULT_MASK_SELECTOR: &str = ".k-loading-mask";

fn default_mask() -> String {
    DEFAULT_MASK_SELECTOR.to_string()
}

fn default_type_pause_ms() -> u64 {
    150
}

fn default_max_tries() -> u32 {
    3
}

fn default_captcha_error_contains() -> String {
    "captcha".to_string()
}

fn default_login_timeout_ms() -> u64 {
    20_000
}

fn default_check_ms() -> u64 {
    3_000
}

fn default_captcha_timeout_ms() -> u64 {
    10_000
}

/// A portal profile, loaded and checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Shown in logs and on the dashboard.
    pub name: String,
    /// Default portal address; every `url` in the profile is joined to it.
    pub base_url: String,
    /// Addition: the loading-mask selector that clicks wait for (and the
    /// default of `wait_mask`).
    #[serde(default = "default_mask")]
    pub mask: String,
    /// How `type` and `typeahead` steps enter text, unless a step says
    /// otherwise.
    #[serde(default)]
    pub typing: Typing,
    /// How to log in.
    pub login: LoginConfig,
    /// How to tell a live session from an expired one.
    pub dashboard: DashboardConfig,
    /// How to read the login captcha; required when `login.captcha_image`
    /// is set.
    #[serde(default)]
    pub captcha: Option<CaptchaConfig>,
    /// The job values the steps use, by name.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldSpec>,
    /// The proposal flow, in order.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// The `[login]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// Path of the login page.
    pub url: String,
    /// Selector of the user-name input.
    pub username: String,
    /// Selector of the password input.
    pub password: String,
    /// Selector of the captcha `<img>`; no captcha when absent.
    #[serde(default)]
    pub captcha_image: Option<String>,
    /// Selector of the input the captcha text goes into.
    #[serde(default)]
    pub captcha_input: Option<String>,
    /// Selector of the login button.
    pub submit: String,
    /// Selector of the element where the portal says why it refused.
    pub error: String,
    /// A marker the URL carries once logged in.
    #[serde(default)]
    pub logged_in_url_contains: Option<String>,
    /// Pause before typing into each field: the portal drops keys typed
    /// right after another field.
    #[serde(default = "default_type_pause_ms")]
    pub type_pause_ms: u64,
    /// Login tries per [`login`](crate::browser::Master::login) call;
    /// captcha misreads count.
    #[serde(default = "default_max_tries")]
    pub max_tries: u32,
    /// Addition: a refusal whose text contains this (case-insensitive) is a
    /// captcha misread and is retried with the new image; any other refusal
    /// (a wrong password) is not, so the account is never locked by retries.
    #[serde(default = "default_captcha_error_contains")]
    pub captcha_error_contains: String,
    /// Addition: how long one login try may take, in milliseconds.
    #[serde(default = "default_login_timeout_ms")]
    pub timeout_ms: u64,
}

/// The `[dashboard]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Path of the page that shows the logged-in menu.
    pub url: String,
    /// Selector present only when logged in.
    pub ready: String,
    /// Selector of the logout link.
    #[serde(default)]
    pub logout: Option<String>,
    /// Selector of the close button of the post-login popup; clicked if
    /// visible.
    #[serde(default)]
    pub popup_close: Option<String>,
    /// Addition: how long the session check waits, after the dashboard page
    /// has loaded, for either the menu or the login form, in milliseconds.
    #[serde(default = "default_check_ms")]
    pub check_ms: u64,
}

/// How the captcha is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptchaMethod {
    /// Read the text from an element of the page.
    Element,
    /// Run a local program (an OCR tool) on the image.
    Command,
    /// POST the image to an HTTP solver.
    Http,
}

/// The `[captcha]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptchaConfig {
    /// Which solver.
    pub method: CaptchaMethod,
    /// `command`: argv, with `{image}` replaced by the PNG's path.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// `element`: selector of the element holding the text.
    #[serde(default)]
    pub selector: Option<String>,
    /// `http`: the solver's URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Characters kept from the answer; all when absent.
    #[serde(default)]
    pub charset: Option<String>,
    /// Addition: how long one solve may take, in milliseconds.
    #[serde(default = "default_captcha_timeout_ms")]
    pub timeout_ms: u64,
}

/// What a field's value must look like in the job document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Any scalar, taken as text.
    #[default]
    Text,
    /// An ISO date (`2026-11-20`, or a timestamp starting with one).
    Date,
    /// `true`/`false` (also "yes"/"no", "1"/"0").
    Bool,
    /// A whole number.
    Integer,
}

/// A conversion applied after the checks and before `map`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// Keep the value.
    #[default]
    None,
    /// Upper case.
    Upper,
    /// Lower case.
    Lower,
    /// Strip surrounding white space.
    Trim,
    /// ISO date to `date_format` (default `%d-%m-%Y`).
    DateDmy,
    /// Bool to "Yes"/"No".
    YesNo,
}

/// One `[fields.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// The job document's key; dots reach into nested objects (and numbers
    /// into arrays).
    pub from: String,
    /// A missing or empty value is an error.
    #[serde(default)]
    pub required: bool,
    /// Longest value allowed, in characters, before any transform.
    #[serde(default)]
    pub max_len: Option<usize>,
    /// A regex the value must match, before any transform.
    #[serde(default)]
    pub pattern: Option<Pattern>,
    /// What the value must look like.
    #[serde(default)]
    pub kind: FieldKind,
    /// Conversion after the checks.
    #[serde(default)]
    pub transform: Transform,
    /// Output format of `date_dmy` (chrono strftime).
    #[serde(default)]
    pub date_format: Option<String>,
    /// Value translation after the transform; an unknown value is an error.
    #[serde(default)]
    pub map: Option<BTreeMap<String, String>>,
    /// Used when the key is absent (or null).
    #[serde(default)]
    pub default: Option<Scalar>,
    /// Identity numbers, names, phone, email: masked in logs and exports.
    #[serde(default)]
    pub personal: bool,
    /// Shortest value allowed, in characters, before any transform.
    #[serde(default)]
    pub min_len: Option<usize>,
    /// Kind `date`: the date must be before today (a date of birth).
    #[serde(default)]
    pub past: bool,
    /// Kind `date`: not after today. Kind `integer`: not after the current
    /// year (a manufacturing year).
    #[serde(default)]
    pub not_future: bool,
    /// Kind `integer`: the smallest value allowed.
    #[serde(default)]
    pub min: Option<i64>,
    /// Kind `integer`: the largest value allowed.
    #[serde(default)]
    pub max: Option<i64>,
}

/// A compiled `pattern`; a bad regex is reported at load, with its line.
#[derive(Clone)]
pub struct Pattern(pub Regex);

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Regex::new(&text)
            .map(Pattern)
            .map_err(|e| serde::de::Error::custom(format!("bad pattern: {e}")))
    }
}

/// A TOML scalar given where text is expected (`default`, a step's
/// `value`): `value = true` and `value = "true"` mean the same.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A string.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Integer(i64),
}

impl Scalar {
    fn to_json(&self) -> Json {
        match self {
            Scalar::Text(s) => Json::String(s.clone()),
            Scalar::Bool(b) => Json::Bool(*b),
            Scalar::Integer(i) => Json::from(*i),
        }
    }

    fn into_text(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Bool(b) => b.to_string(),
            Scalar::Integer(i) => i.to_string(),
        }
    }
}

fn scalar_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?.map(Scalar::into_text))
}

/// When a step runs relative to the submit click.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Filling the form; a failure retries the job on a fresh clone.
    PreSubmit,
    /// The one click that creates the proposal.
    Submit,
    /// Reading the outcome; a failure ends the job `failed_post_submission`.
    PostSubmit,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::PreSubmit => "pre_submit",
            Phase::Submit => "submit",
            Phase::PostSubmit => "post_submit",
        })
    }
}

/// What a step does; the table in `docs/profiles.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Open a page of the portal.
    Goto,
    /// Wait until the element is displayed.
    WaitFor,
    /// Wait until no loading mask is displayed.
    WaitMask,
    /// Wait for the mask, then click.
    Click,
    /// Move the pointer over the element.
    Hover,
    /// Clear, pause, type.
    Type,
    /// Set a date input's value by script and fire `change`.
    SetDate,
    /// Tick or untick a box.
    Check,
    /// Pick an item of a Kendo drop-down.
    KendoSelect,
    /// Type, then pick the matching suggestion.
    Typeahead,
    /// Choose an option of a native select by its text.
    Select,
    /// Switch into an iframe.
    EnterFrame,
    /// Back to the top document.
    LeaveFrame,
    /// Accept a JS alert or confirm.
    AcceptAlert,
    /// Read an element's text into an output.
    Read,
    /// Fail unless the element's text contains the value.
    ExpectText,
}

impl Action {
    /// The name used in the profile.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Goto => "goto",
            Action::WaitFor => "wait_for",
            Action::WaitMask => "wait_mask",
            Action::Click => "click",
            Action::Hover => "hover",
            Action::Type => "type",
            Action::SetDate => "set_date",
            Action::Check => "check",
            Action::KendoSelect => "kendo_select",
            Action::Typeahead => "typeahead",
            Action::Select => "select",
            Action::EnterFrame => "enter_frame",
            Action::LeaveFrame => "leave_frame",
            Action::AcceptAlert => "accept_alert",
            Action::Read => "read",
            Action::ExpectText => "expect_text",
        }
    }

    /// Which keys the action takes: (required, allowed but optional).
    fn keys(self) -> (&'static [StepKey], &'static [StepKey]) {
        use StepKey::*;
        match self {
            Action::Goto => (&[Url], &[]),
            Action::WaitFor | Action::Click | Action::Hover | Action::EnterFrame => {
                (&[Selector], &[])
            }
            Action::WaitMask => (&[], &[Selector]),
            Action::Type
            | Action::SetDate
            | Action::Check
            | Action::Select
            | Action::ExpectText => (&[Selector, Value], &[]),
            Action::KendoSelect => (&[List, Value], &[]),
            Action::Typeahead => (&[Selector, Value, List], &[]),
            Action::LeaveFrame | Action::AcceptAlert => (&[], &[]),
            Action::Read => (&[Selector, Into], &[]),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a `type` or `typeahead` step enters its text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Typing {
    /// Key by key, as a person types: each character's keydown, keypress,
    /// input and keyup. For fields whose page scripts watch keys.
    #[default]
    Keys,
    /// The whole text at once, as a paste or an input method enters it:
    /// trusted `beforeinput` and `input` events, no key events. Several
    /// times cheaper for the browser than keys; for fields whose scripts
    /// watch `input` or `change` (or nothing).
    Insert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepKey {
    Selector,
    Value,
    Url,
    List,
    Into,
}

impl StepKey {
    fn name(self) -> &'static str {
        match self {
            StepKey::Selector => "selector",
            StepKey::Value => "value",
            StepKey::Url => "url",
            StepKey::List => "list",
            StepKey::Into => "into",
        }
    }
}

/// One `[[steps]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Used by errors and timings.
    pub name: String,
    /// Before, at or after the submit click.
    pub phase: Phase,
    /// What the step does.
    pub action: Action,
    /// CSS selector (template).
    #[serde(default)]
    pub selector: Option<String>,
    /// Value (template); TOML booleans and integers are taken as text.
    #[serde(default, deserialize_with = "scalar_text")]
    pub value: Option<String>,
    /// Page path for `goto` (template).
    #[serde(default)]
    pub url: Option<String>,
    /// `kendo_select`: the `X_listbox` id; `typeahead`: the selector of the
    /// suggestion items (template).
    #[serde(default)]
    pub list: Option<String>,
    /// `read`: the output name.
    #[serde(default)]
    pub into: Option<String>,
    /// `type`, `typeahead`: how the text is entered; the profile's
    /// `typing` when absent.
    #[serde(default)]
    pub typing: Option<Typing>,
    /// A missing element skips the step instead of failing it.
    #[serde(default)]
    pub optional: bool,
    /// How long the step may take; see [`Step::timeout`].
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Addition (from the simulated portal's work): run the step only when
    /// this field is true or non-empty; otherwise skip it (never a failure).
    #[serde(default)]
    pub when: Option<String>,
}

impl Step {
    /// Whether the step runs for these values: no `when`, or its field is
    /// true or non-empty ("false", "no", "0" and "" count as not set).
    pub fn applies(&self, fields: &FieldValues) -> bool {
        let Some(name) = &self.when else {
            return true;
        };
        let value = fields
            .get(name)
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        !matches!(value.as_str(), "" | "false" | "no" | "0")
    }

    /// The step's time limit: `timeout_ms`, else the action's default.
    pub fn timeout(&self) -> std::time::Duration {
        let default = match self.action {
            Action::AcceptAlert => DEFAULT_ALERT_TIMEOUT_MS,
            _ => DEFAULT_STEP_TIMEOUT_MS,
        };
        std::time::Duration::from_millis(self.timeout_ms.unwrap_or(default))
    }

    fn key(&self, key: StepKey) -> Option<&String> {
        match key {
            StepKey::Selector => self.selector.as_ref(),
            StepKey::Value => self.value.as_ref(),
            StepKey::Url => self.url.as_ref(),
            StepKey::List => self.list.as_ref(),
            StepKey::Into => self.into.as_ref(),
        }
    }
}

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read portal profile {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has a wrong key or type.
    #[error("portal profile {origin}, line {line}, column {column}: {message}")]
    Syntax {
        /// The file (or `<inline>`).
        origin: String,
        /// 1-based line of the fault.
        line: usize,
        /// 1-based column of the fault.
        column: usize,
        /// What toml said, e.g. "unknown field `selecter`".
        message: String,
    },
    /// The TOML is well-formed but the profile does not hold together.
    #[error("portal profile {origin} is invalid:\n  {}", .problems.join("\n  "))]
    Invalid {
        /// The file (or `<inline>`).
        origin: String,
        /// Each problem, starting with the key at fault.
        problems: Vec<String>,
    },
}

impl Profile {
    /// Reads and checks a profile file.
    pub fn load(path: impl AsRef<Path>) -> Result<Profile, ProfileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a profile held in memory.
    pub fn from_toml_str(text: &str) -> Result<Profile, ProfileError> {
        Self::parse(text, "<inline>")
    }

    fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        let profile: Profile = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((0, 0));
            ProfileError::Syntax {
                origin: origin.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let problems = profile.problems();
        if problems.is_empty() {
            Ok(profile)
        } else {
            Err(ProfileError::Invalid {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    /// Every consistency problem, each starting with its key.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.login_problems(&mut out);
        for (name, spec) in &self.fields {
            field_problems(name, spec, &mut out);
        }
        self.step_problems(&mut out);
        out
    }

    fn login_problems(&self, out: &mut Vec<String>) {
        let login = &self.login;
        match (&login.captcha_image, &login.captcha_input) {
            (Some(_), None) => out.push("login.captcha_input: needed with captcha_image".into()),
            (None, Some(_)) => out.push("login.captcha_image: needed with captcha_input".into()),
            _ => {}
        }
        if login.max_tries == 0 {
            out.push("login.max_tries: must be at least 1".into());
        }
        if login.captcha_image.is_some() && self.captcha.is_none() {
            out.push("captcha: a [captcha] table is needed when login.captcha_image is set".into());
        }
        let Some(captcha) = &self.captcha else {
            return;
        };
        match captcha.method {
            CaptchaMethod::Element if captcha.selector.is_none() => {
                out.push("captcha.selector: needed by method \"element\"".into())
            }
            CaptchaMethod::Http if captcha.url.is_none() => {
                out.push("captcha.url: needed by method \"http\"".into())
            }
            CaptchaMethod::Command => match &captcha.command {
                None => out.push("captcha.command: needed by method \"command\"".into()),
                Some(argv) if argv.is_empty() => {
                    out.push("captcha.command: needs at least the program".into())
                }
                Some(argv) if !argv.iter().any(|a| a.contains("{image}")) => {
                    out.push("captcha.command: no argument contains {image}".into())
                }
                Some(_) => {}
            },
            _ => {}
        }
    }

    fn step_problems(&self, out: &mut Vec<String>) {
        let submits: Vec<&Step> = self
            .steps
            .iter()
            .filter(|s| s.phase == Phase::Submit)
            .collect();
        match submits.as_slice() {
            [] => out.push("steps: no step has phase \"submit\"; exactly one must".into()),
            [one] => {
                if !matches!(one.action, Action::Click | Action::AcceptAlert) {
                    out.push(format!(
                        "steps: the submit step \"{}\" must be a click or accept_alert, not {}",
                        one.name, one.action
                    ));
                }
                if one.optional {
                    out.push(format!(
                        "steps: the submit step \"{}\" cannot be optional",
                        one.name
                    ));
                }
            }
            many => out.push(format!(
                "steps: {} steps have phase \"submit\" ({}); exactly one must",
                many.len(),
                many.iter()
                    .map(|s| format!("\"{}\"", s.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }

        let mut last_phase = Phase::PreSubmit;
        for (i, step) in self.steps.iter().enumerate() {
            let at = format!("steps[{i}] \"{}\"", step.name);
            if step.phase < last_phase {
                out.push(format!(
                    "{at}: phase {} comes after a {last_phase} step",
                    step.phase
                ));
            }
            last_phase = last_phase.max(step.phase);

            if let Some(when) = &step.when {
                if !self.fields.contains_key(when) {
                    out.push(format!("{at}.when: {when} is not a declared field"));
                }
                if step.phase == Phase::Submit {
                    out.push(format!("{at}.when: the submit step always runs"));
                }
            }

            if step.typing.is_some() && !matches!(step.action, Action::Type | Action::Typeahead) {
                out.push(format!(
                    "{at}.typing: does not apply to action {}",
                    step.action
                ));
            }
            let (required, optional) = step.action.keys();
            for key in required {
                if step.key(*key).is_none() {
                    out.push(format!(
                        "{at}.{}: needed by action {}",
                        key.name(),
                        step.action
                    ));
                }
            }
            let all = [
                StepKey::Selector,
                StepKey::Value,
                StepKey::Url,
                StepKey::List,
                StepKey::Into,
            ];
            for key in all {
                let used = required.contains(&key) || optional.contains(&key);
                if !used && step.key(key).is_some() {
                    out.push(format!(
                        "{at}.{}: does not apply to action {}",
                        key.name(),
                        step.action
                    ));
                }
            }
            for key in [
                StepKey::Selector,
                StepKey::Value,
                StepKey::Url,
                StepKey::List,
            ] {
                let Some(template) = step.key(key) else {
                    continue;
                };
                for name in template_names(template) {
                    if !self.fields.contains_key(name) {
                        out.push(format!(
                            "{at}.{}: {{{name}}} is not a declared field",
                            key.name()
                        ));
                    }
                }
            }
        }
    }

    /// The one step with phase `submit` (load guarantees it exists).
    pub fn submit_step(&self) -> Option<&Step> {
        self.steps.iter().find(|s| s.phase == Phase::Submit)
    }

    /// The steps of one phase, in order.
    pub fn steps_of(&self, phase: Phase) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(move |s| s.phase == phase)
    }

    /// Reads every declared field from a job document, checks and converts
    /// it. On failure lists every bad field.
    pub fn extract(&self, job: &Json) -> Result<FieldValues, FieldErrors> {
        let mut values = FieldValues::default();
        let mut errors = Vec::new();
        for (name, spec) in &self.fields {
            match extract_one(spec, job) {
                Ok(value) => values.insert(name, value, spec.personal),
                Err(message) => errors.push(FieldError {
                    field: name.clone(),
                    path: spec.from.clone(),
                    message,
                }),
            }
        }
        if errors.is_empty() {
            Ok(values)
        } else {
            Err(FieldErrors(errors))
        }
    }
}

fn field_problems(name: &str, spec: &FieldSpec, out: &mut Vec<String>) {
    let at = format!("fields.{name}");
    if spec.from.is_empty() || spec.from.split('.').any(str::is_empty) {
        out.push(format!("{at}.from: \"{}\" is not a key path", spec.from));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        out.push(format!(
            "{at}: a field name may hold only letters, digits and _"
        ));
    }
    if let Some(format) = &spec.date_format {
        let bad = chrono::format::StrftimeItems::new(format)
            .any(|item| matches!(item, chrono::format::Item::Error));
        if bad {
            out.push(format!(
                "{at}.date_format: \"{format}\" is not a valid format"
            ));
        }
        if spec.transform != Transform::DateDmy {
            out.push(format!(
                "{at}.date_format: used only by transform \"date_dmy\""
            ));
        }
    }
    if spec.transform == Transform::DateDmy
        && !matches!(spec.kind, FieldKind::Date | FieldKind::Text)
    {
        out.push(format!("{at}.transform: date_dmy needs kind \"date\""));
    }
    if spec.transform == Transform::YesNo && !matches!(spec.kind, FieldKind::Bool | FieldKind::Text)
    {
        out.push(format!("{at}.transform: yes_no needs kind \"bool\""));
    }
    if spec.past && spec.kind != FieldKind::Date {
        out.push(format!("{at}.past: needs kind \"date\""));
    }
    if spec.not_future && !matches!(spec.kind, FieldKind::Date | FieldKind::Integer) {
        out.push(format!(
            "{at}.not_future: needs kind \"date\" or \"integer\""
        ));
    }
    if (spec.min.is_some() || spec.max.is_some()) && spec.kind != FieldKind::Integer {
        out.push(format!("{at}.min/max: need kind \"integer\""));
    }
    if let (Some(min), Some(max)) = (spec.min, spec.max) {
        if min > max {
            out.push(format!("{at}.min: {min} is above max {max}"));
        }
    }
    if let (Some(min), Some(max)) = (spec.min_len, spec.max_len) {
        if min > max {
            out.push(format!("{at}.min_len: {min} is above max_len {max}"));
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The `{NAME}` references of a template, in order.
pub fn template_names(template: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            break;
        };
        let name = &after[..close];
        if is_field_name(name) {
            names.push(name);
            rest = &after[close + 1..];
        } else {
            rest = after;
        }
    }
    names
}

fn is_field_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Fills a template's `{NAME}`s from the field values. Load has checked
/// every name, so an unknown one here means the values came from another
/// profile; it is returned as the error.
pub fn render(template: &str, fields: &FieldValues) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if is_field_name(&after[..close]) => {
                let name = &after[..close];
                let value = fields.get(name).ok_or_else(|| name.to_string())?;
                out.push_str(value);
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether a template pulls in a personal field (so its rendered value must
/// not be logged or put in an error).
pub fn template_is_personal(template: &str, fields: &FieldValues) -> bool {
    template_names(template)
        .into_iter()
        .any(|n| fields.is_personal(n))
}

fn lookup<'a>(doc: &'a Json, path: &str) -> Option<&'a Json> {
    path.split('.').try_fold(doc, |node, key| match node {
        Json::Object(map) => map.get(key),
        Json::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "text",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

fn parse_iso_date(text: &str) -> Option<NaiveDate> {
    let day = text.trim().get(..10)?;
    let rest = &text.trim()[10..];
    if !(rest.is_empty() || rest.starts_with('T') || rest.starts_with(' ')) {
        return None;
    }
    NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// One field through the pipeline: look up, default, kind, checks,
/// transform, map. Messages never quote a personal value.
fn extract_one(spec: &FieldSpec, job: &Json) -> Result<String, String> {
    let found = lookup(job, &spec.from).filter(|v| !v.is_null());
    let defaulted;
    let raw = match (found, &spec.default) {
        (Some(v), _) => v,
        (None, Some(default)) => {
            defaulted = default.to_json();
            &defaulted
        }
        (None, None) if spec.required => return Err("required but missing".into()),
        (None, None) => return Ok(String::new()),
    };

    let text = match (spec.kind, raw) {
        (_, Json::Array(_) | Json::Object(_)) => {
            return Err(format!("expected a single value, found {}", json_kind(raw)))
        }
        (FieldKind::Text, Json::String(s)) => s.clone(),
        (FieldKind::Text, other) => other.to_string(),
        (FieldKind::Date, Json::String(s)) if s.trim().is_empty() => String::new(),
        (FieldKind::Date, Json::String(s)) => match parse_iso_date(s) {
            Some(date) => date.format("%Y-%m-%d").to_string(),
            None => return Err("expected an ISO date (YYYY-MM-DD)".into()),
        },
        (FieldKind::Date, other) => {
            return Err(format!("expected an ISO date, found {}", json_kind(other)))
        }
        (FieldKind::Bool, Json::Bool(b)) => b.to_string(),
        (FieldKind::Bool, Json::String(s)) if s.trim().is_empty() => String::new(),
        (FieldKind::Bool, Json::String(s)) => match parse_bool(s) {
            Some(b) => b.to_string(),
            None => return Err("expected true or false".into()),
        },
        (FieldKind::Bool, Json::Number(n)) => match n.as_u64() {
            Some(0) => "false".into(),
            Some(1) => "true".into(),
            _ => return Err("expected true or false, found a number".into()),
        },
        (FieldKind::Bool, other) => {
            return Err(format!(
                "expected true or false, found {}",
                json_kind(other)
            ))
        }
        (FieldKind::Integer, Json::Number(n)) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => return Err("expected a whole number".into()),
        },
        (FieldKind::Integer, Json::String(s)) if s.trim().is_empty() => String::new(),
        (FieldKind::Integer, Json::String(s)) => match s.trim().parse::<i64>() {
            Ok(i) => i.to_string(),
            Err(_) => return Err("expected a whole number".into()),
        },
        (FieldKind::Integer, other) => {
            return Err(format!(
                "expected a whole number, found {}",
                json_kind(other)
            ))
        }
    };

    if text.is_empty() {
        return if spec.required {
            Err("required but empty".into())
        } else {
            Ok(text)
        };
    }
    if let Some(max) = spec.max_len {
        let len = text.chars().count();
        if len > max {
            return Err(format!("is {len} characters long, at most {max} allowed"));
        }
    }
    if let Some(min) = spec.min_len {
        let len = text.chars().count();
        if len < min {
            return Err(format!("is {len} characters long, at least {min} needed"));
        }
    }
    if let Some(Pattern(re)) = &spec.pattern {
        if !re.is_match(&text) {
            return Err(format!("does not match pattern `{}`", re.as_str()));
        }
    }
    check_range(spec, &text)?;

    let converted = match spec.transform {
        Transform::None => text,
        Transform::Upper => text.to_uppercase(),
        Transform::Lower => text.to_lowercase(),
        Transform::Trim => text.trim().to_string(),
        Transform::DateDmy => {
            let date = parse_iso_date(&text).ok_or("expected an ISO date (YYYY-MM-DD)")?;
            let format = spec.date_format.as_deref().unwrap_or("%d-%m-%Y");
            date.format(format).to_string()
        }
        Transform::YesNo => match parse_bool(&text) {
            Some(true) => "Yes".into(),
            Some(false) => "No".into(),
            None => return Err("expected true or false".into()),
        },
    };

    match &spec.map {
        None => Ok(converted),
        Some(map) => match map.get(&converted) {
            Some(mapped) => Ok(mapped.clone()),
            None if spec.personal => Err("value is not one the portal accepts (see map)".into()),
            None => Err(format!(
                "\"{converted}\" is not one of {}",
                map.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        },
    }
}

/// The `past`, `not_future`, `min` and `max` checks, on a value already
/// normalised by its kind (ISO date, decimal integer). "Today" is the local
/// calendar day of the machine, the agency's own.
fn check_range(spec: &FieldSpec, text: &str) -> Result<(), String> {
    let today = chrono::Local::now().date_naive();
    match spec.kind {
        FieldKind::Date if spec.past || spec.not_future => {
            let date = parse_iso_date(text).ok_or("expected an ISO date (YYYY-MM-DD)")?;
            if spec.past && date >= today {
                return Err("must be a date in the past".into());
            }
            if date > today {
                return Err("must not be in the future".into());
            }
        }
        FieldKind::Integer => {
            let n: i64 = text.parse().map_err(|_| "expected a whole number")?;
            if let Some(min) = spec.min {
                if n < min {
                    return Err(format!("is below the minimum {min}"));
                }
            }
            if let Some(max) = spec.max {
                if n > max {
                    return Err(format!("is above the maximum {max}"));
                }
            }
            if spec.not_future {
                use chrono::Datelike;
                let year = i64::from(today.year());
                if n > year {
                    return Err(format!("is after the current year {year}"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The checked, converted values of one job, by field name.
///
/// Its `Debug` masks personal values, so an accidental `{:?}` in a log
/// leaks nothing; [`masked`](Self::masked) is the view for logs and exports.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FieldValues {
    values: BTreeMap<String, String>,
    personal: BTreeSet<String>,
}

impl FieldValues {
    /// Sets a value.
    pub fn insert(&mut self, name: &str, value: String, personal: bool) {
        self.values.insert(name.to_string(), value);
        if personal {
            self.personal.insert(name.to_string());
        } else {
            self.personal.remove(name);
        }
    }

    /// A value by field name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether the field is marked `personal`.
    pub fn is_personal(&self, name: &str) -> bool {
        self.personal.contains(name)
    }

    /// All values, unmasked, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values with personal ones masked (all but the last two
    /// characters; short values entirely), for logs and exports.
    pub fn masked(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .map(|(k, v)| {
                let shown = if self.personal.contains(k) {
                    mask(v)
                } else {
                    v.clone()
                };
                (k.clone(), shown)
            })
            .collect()
    }
}

impl fmt::Debug for FieldValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.masked()).finish()
    }
}

/// Masks a personal value: values of up to four characters entirely, longer
/// ones all but their last two characters.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 4 {
        return "*".repeat(chars.len());
    }
    let keep = chars.len() - 2;
    let mut out = "*".repeat(keep);
    out.extend(&chars[keep..]);
    out
}

/// One bad field of a job document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The profile's field name.
    pub field: String,
    /// The job document's key path.
    pub path: String,
    /// What is wrong (never quotes a personal value).
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (field {}): {}", self.path, self.field, self.message)
    }
}

/// Every bad field of a job document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FieldErrors(pub Vec<FieldError>);

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bad field(s) in the job document:", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BASE: &str = r##"
name = "test"
base_url = "http://127.0.0.1:8080"

[login]
url = "/Login/IMDLogin"
username = "#txtUserName"
password = "#txtPassword"
captcha_image = "#CaptchaImage"
captcha_input = "#CaptchaInputText"
submit = "#btnLogin"
error = ".validation-summary-errors"
logged_in_url_contains = "lgn="
type_pause_ms = 150
max_tries = 3

[dashboard]
url = "/Home/Dashboard"
ready = "#divMainMotors"
logout = "#divLogout"
popup_close = "#divPopup .k-window-action"

[captcha]
method = "command"
command = ["tesseract", "{image}", "stdout", "--psm", "7"]
charset = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

[fields.first_name]
from = "fullName"
required = true
max_len = 40
pattern = "^[A-Za-z .'-]+$"
transform = "upper"
personal = true

[fields.dob]
from = "dateOfBirth"
required = true
kind = "date"
transform = "date_dmy"
date_format = "%d/%m/%Y"

[fields.state_code]
from = "state"
map = { KARNATAKA = "KA", MAHARASHTRA = "MH" }

[fields.new_vehicle]
from = "isNew"
kind = "bool"
default = false

[fields.cc]
from = "vehicle.cc"
kind = "integer"

[[steps]]
name = "open"
phase = "pre_submit"
action = "goto"
url = "/Proposal/New"

[[steps]]
name = "first name"
phase = "pre_submit"
action = "type"
selector = "#FirstName"
value = "{first_name}"

[[steps]]
name = "new vehicle"
phase = "pre_submit"
action = "check"
selector = "#IsNew"
value = "{new_vehicle}"

[[steps]]
name = "save"
phase = "submit"
action = "click"
selector = "#btnSave"

[[steps]]
name = "number"
phase = "post_submit"
action = "read"
selector = "#ProposalNo"
into = "proposal_no"
"##;

    fn base() -> Profile {
        Profile::from_toml_str(BASE).expect("base profile loads")
    }

    #[test]
    fn loads_the_documented_example() {
        let p = base();
        assert_eq!(p.login.type_pause_ms, 150);
        assert_eq!(p.login.captcha_error_contains, "captcha");
        assert_eq!(p.dashboard.check_ms, 3000);
        assert_eq!(
            p.captcha.as_ref().map(|c| c.method),
            Some(CaptchaMethod::Command)
        );
        assert_eq!(p.steps.len(), 5);
        assert_eq!(p.submit_step().map(|s| s.name.as_str()), Some("save"));
        assert_eq!(p.steps_of(Phase::PreSubmit).count(), 3);
    }

    #[test]
    fn bool_step_values_are_text() {
        let text = BASE.replace("value = \"{new_vehicle}\"", "value = true");
        let p = Profile::from_toml_str(&text).unwrap();
        assert_eq!(p.steps[2].value.as_deref(), Some("true"));
    }

    #[test]
    fn syntax_error_names_line_and_key() {
        let text = BASE.replace("selector = \"#btnSave\"", "selecter = \"#btnSave\"");
        let err = Profile::from_toml_str(&text).unwrap_err();
        let msg = err.to_string();
        let ProfileError::Syntax { line, .. } = err else {
            panic!("expected a syntax error, got {msg}");
        };
        let expected = BASE.lines().position(|l| l.contains("#btnSave")).unwrap() + 1;
        assert_eq!(line, expected, "{msg}");
        assert!(msg.contains("selecter"), "{msg}");
    }

    #[test]
    fn bad_regex_is_reported_with_its_line() {
        let text = BASE.replace("^[A-Za-z .'-]+$", "^[A-Z");
        let msg = Profile::from_toml_str(&text).unwrap_err().to_string();
        assert!(msg.contains("bad pattern"), "{msg}");
        assert!(msg.contains("line"), "{msg}");
    }

    #[test]
    fn load_names_the_file() {
        let err = Profile::load("/nonexistent/portal.toml").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/portal.toml"));
    }

    #[test]
    fn exactly_one_submit_step() {
        let none = BASE.replace("phase = \"submit\"", "phase = \"post_submit\"");
        let msg = Profile::from_toml_str(&none).unwrap_err().to_string();
        assert!(msg.contains("no step has phase \"submit\""), "{msg}");

        let two = format!(
            "{BASE}\n[[steps]]\nname = \"again\"\nphase = \"submit\"\naction = \"click\"\nselector = \"#x\"\n"
        );
        let msg = Profile::from_toml_str(&two).unwrap_err().to_string();
        assert!(msg.contains("2 steps have phase \"submit\""), "{msg}");
        assert!(msg.contains("\"again\""), "{msg}");
    }

    #[test]
    fn submit_step_is_a_click_or_accepting_a_confirm() {
        let save =
            "name = \"save\"\nphase = \"submit\"\naction = \"click\"\nselector = \"#btnSave\"";
        assert!(BASE.contains(save));
        let confirm = BASE.replace(
            save,
            "name = \"save\"\nphase = \"pre_submit\"\naction = \"click\"\nselector = \"#btnSave\"\n\n\
             [[steps]]\nname = \"confirm\"\nphase = \"submit\"\naction = \"accept_alert\"",
        );
        let p = Profile::from_toml_str(&confirm).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.submit_step().map(|s| s.action), Some(Action::AcceptAlert));

        let typed = BASE.replace(save, &save.replace("\"click\"", "\"wait_for\""));
        let msg = Profile::from_toml_str(&typed).unwrap_err().to_string();
        assert!(
            msg.contains("must be a click or accept_alert, not wait_for"),
            "{msg}"
        );

        let optional = BASE.replace(save, &format!("{save}\noptional = true"));
        let msg = Profile::from_toml_str(&optional).unwrap_err().to_string();
        assert!(msg.contains("cannot be optional"), "{msg}");
    }

    #[test]
    fn unknown_template_field_is_named() {
        let text = BASE.replace("{first_name}", "{frist_name}");
        let msg = Profile::from_toml_str(&text).unwrap_err().to_string();
        assert!(
            msg.contains("steps[1] \"first name\".value: {frist_name} is not a declared field"),
            "{msg}"
        );
    }

    #[test]
    fn missing_and_stray_step_keys_are_named() {
        let text = BASE.replace("into = \"proposal_no\"", "value = \"x\"");
        let msg = Profile::from_toml_str(&text).unwrap_err().to_string();
        assert!(
            msg.contains("steps[4] \"number\".into: needed by action read"),
            "{msg}"
        );
        assert!(
            msg.contains("steps[4] \"number\".value: does not apply"),
            "{msg}"
        );
    }

    #[test]
    fn phases_must_not_go_back() {
        let text = format!(
            "{BASE}\n[[steps]]\nname = \"late\"\nphase = \"pre_submit\"\naction = \"leave_frame\"\n"
        );
        let msg = Profile::from_toml_str(&text).unwrap_err().to_string();
        assert!(
            msg.contains("\"late\": phase pre_submit comes after"),
            "{msg}"
        );
    }

    #[test]
    fn when_runs_a_step_only_for_set_fields() {
        let text = BASE.replace(
            "selector = \"#IsNew\"",
            "selector = \"#IsNew\"\nwhen = \"new_vehicle\"",
        );
        let p = Profile::from_toml_str(&text).unwrap();
        let step = &p.steps[2];
        let mut v = FieldValues::default();
        v.insert("new_vehicle", "false".into(), false);
        assert!(!step.applies(&v));
        v.insert("new_vehicle", "true".into(), false);
        assert!(step.applies(&v));
        assert!(p.steps[1].applies(&FieldValues::default()));

        let bad = BASE.replace(
            "selector = \"#IsNew\"",
            "selector = \"#IsNew\"\nwhen = \"nope\"",
        );
        let msg = Profile::from_toml_str(&bad).unwrap_err().to_string();
        assert!(msg.contains("when: nope is not a declared field"), "{msg}");
    }

    #[test]
    fn captcha_method_needs_its_key() {
        let text = BASE.replace("method = \"command\"", "method = \"http\"");
        let msg = Profile::from_toml_str(&text).unwrap_err().to_string();
        assert!(msg.contains("captcha.url: needed"), "{msg}");
    }

    #[test]
    fn extracts_and_converts() {
        let p = base();
        let job = json!({
            "fullName": "Arjun",
            "dateOfBirth": "1988-04-17",
            "state": "KARNATAKA",
            "vehicle": { "cc": "110" }
        });
        let v = p.extract(&job).unwrap();
        assert_eq!(v.get("first_name"), Some("ARJUN"));
        assert_eq!(v.get("dob"), Some("17/04/1988"));
        assert_eq!(v.get("state_code"), Some("KA"));
        assert_eq!(v.get("new_vehicle"), Some("false"));
        assert_eq!(v.get("cc"), Some("110"));
    }

    #[test]
    fn lists_every_bad_field() {
        let p = base();
        let job = json!({
            "dateOfBirth": "17/04/1988",
            "state": "GOA",
            "isNew": "maybe",
            "vehicle": { "cc": "1.5" }
        });
        let errs = p.extract(&job).unwrap_err();
        let by_path: BTreeMap<&str, &str> = errs
            .0
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(by_path.len(), 5, "{errs}");
        assert_eq!(by_path["fullName"], "required but missing");
        assert!(by_path["dateOfBirth"].contains("ISO date"));
        assert!(by_path["state"].contains("\"GOA\" is not one of KARNATAKA, MAHARASHTRA"));
        assert!(by_path["isNew"].contains("true or false"));
        assert!(by_path["vehicle.cc"].contains("whole number"));
    }

    #[test]
    fn range_checks_on_dates_and_years() {
        let p = Profile::from_toml_str(&format!(
            "{BASE}\n[fields.birth]\nfrom = \"birth\"\nkind = \"date\"\npast = true\n\
             [fields.year]\nfrom = \"year\"\nkind = \"integer\"\nmin = 1990\n\
             not_future = true\n[fields.code]\nfrom = \"code\"\nmin_len = 3\n"
        ))
        .expect("profile loads");
        let tomorrow = chrono::Local::now().date_naive() + chrono::Days::new(1);
        let base_ok = json!({"fullName": "Arjun", "dateOfBirth": "1988-04-17",
                             "state": "KARNATAKA", "isNew": true, "vehicle": {"cc": 110}});
        let with = |extra: Json| {
            let mut doc = base_ok.clone();
            if let (Json::Object(d), Json::Object(e)) = (&mut doc, extra) {
                d.extend(e);
            }
            p.extract(&doc)
        };
        assert!(with(json!({"birth": "1990-02-28", "year": 2020, "code": "KA1"})).is_ok());

        let errs = with(json!({
            "birth": tomorrow.format("%Y-%m-%d").to_string(),
            "year": 9999,
            "code": "K1"
        }))
        .unwrap_err();
        let by_path: BTreeMap<&str, &str> = errs
            .0
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(by_path["birth"], "must be a date in the past");
        assert!(by_path["year"].contains("after the current year"), "{errs}");
        assert!(by_path["code"].contains("at least 3"), "{errs}");
        let errs = with(json!({"year": 1980})).unwrap_err();
        assert!(
            errs.0[0].message.contains("below the minimum 1990"),
            "{errs}"
        );
        // A real calendar date: 30 February is not one.
        assert!(with(json!({"birth": "1990-02-30"})).is_err());

        let bad = format!("{BASE}\n[fields.x]\nfrom = \"x\"\npast = true\nmin = 3\n");
        let err = Profile::from_toml_str(&bad).unwrap_err().to_string();
        assert!(
            err.contains("fields.x.past") && err.contains("fields.x.min/max"),
            "{err}"
        );
    }

    #[test]
    fn checks_length_and_pattern_without_quoting_personal_values() {
        let p = base();
        let long = "A".repeat(41);
        let job = json!({"fullName": long, "dateOfBirth": "1988-04-17"});
        let errs = p.extract(&job).unwrap_err();
        assert_eq!(
            errs.0[0].message,
            "is 41 characters long, at most 40 allowed"
        );

        let job = json!({"fullName": "R2D2", "dateOfBirth": "1988-04-17"});
        let errs = p.extract(&job).unwrap_err();
        assert!(errs.0[0].message.contains("does not match pattern"));
        assert!(!errs.to_string().contains("R2D2"));
    }

    #[test]
    fn masks_personal_values() {
        let p = base();
        let job = json!({"fullName": "Arjun Mehta", "dateOfBirth": "1988-04-17"});
        let v = p.extract(&job).unwrap();
        let masked = v.masked();
        assert_eq!(masked["first_name"], "*********TA");
        assert_eq!(masked["dob"], "17/04/1988");
        assert!(!format!("{v:?}").contains("ARJUN"));
        assert_eq!(mask("1234"), "****");
        assert_eq!(mask("200000001234"), "**********34");
    }

    #[test]
    fn transforms() {
        let spec = |transform: &str, kind: &str| -> FieldSpec {
            toml::from_str(&format!(
                "from = \"x\"\ntransform = \"{transform}\"\nkind = \"{kind}\""
            ))
            .unwrap()
        };
        let run = |s: &FieldSpec, v: Json| extract_one(s, &json!({ "x": v }));
        assert_eq!(run(&spec("yes_no", "bool"), json!(true)).unwrap(), "Yes");
        assert_eq!(run(&spec("yes_no", "bool"), json!("no")).unwrap(), "No");
        assert_eq!(run(&spec("lower", "text"), json!("AbC")).unwrap(), "abc");
        assert_eq!(run(&spec("trim", "text"), json!("  a b ")).unwrap(), "a b");
        assert_eq!(
            run(&spec("date_dmy", "date"), json!("2026-11-20T00:00:00Z")).unwrap(),
            "20-11-2026"
        );
        assert_eq!(
            run(&spec("none", "integer"), json!(72000)).unwrap(),
            "72000"
        );
        assert_eq!(run(&spec("none", "text"), json!(110)).unwrap(), "110");
        assert_eq!(run(&spec("none", "text"), Json::Null).unwrap(), "");
    }

    #[test]
    fn templates() {
        let mut v = FieldValues::default();
        v.insert("a", "1".into(), false);
        v.insert("b", "two".into(), true);
        assert_eq!(render("x{a}-{b}{", &v).unwrap(), "x1-two{");
        assert_eq!(render("{ not a field }", &v).unwrap(), "{ not a field }");
        assert_eq!(render("{c}", &v).unwrap_err(), "c");
        assert_eq!(template_names("li[x={a}] {b}"), vec!["a", "b"]);
        assert!(template_is_personal("{a}{b}", &v));
        assert!(!template_is_personal("{a}", &v));
    }
}
