//! Runs a profile's form steps in a job browser.
//!
//! Every action waits for its condition by polling (never a fixed sleep),
//! bounded by the step's `timeout_ms`: soon at first, then less often. A
//! look for an element is one script call that also sees the loading mask
//! and the portal's login form. Clicks first wait for the mask to go,
//! because the portal's mask swallows clicks silently, and for nothing else
//! to cover the element; a click is then one pointer move, press and
//! release, and typing one sequence of key presses (trusted input, at a
//! fraction of the DevTools traffic of WebDriver's element click and
//! typing). The
//! submit click is split into [`prepare_submit`](StepRunner::prepare_submit)
//! (wait until it can be clicked) and [`click_submit`]
//! (StepRunner::click_submit) (the click, once), so the engine can make the
//! `submitted` event durable exactly between the two.
//!
//! Values typed into the portal are job data, often personal: they are never
//! logged, and an error shows a value only when no personal field went into
//! it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fantoccini::actions::{
    InputSource, KeyAction, KeyActions, MouseActions, PointerAction, MOUSE_BUTTON_LEFT,
};
use fantoccini::elements::Element;
use fantoccini::error::{CmdError, ErrorStatus};
use fantoccini::{Client, Locator};
use serde_json::json;
use tracing::debug;

use super::session::{script_element, Session, VISIBLE_JS};
use super::{cmd_is_gone, join_url};
use crate::profile::{self, Action, FieldValues, Phase, Profile, Step, Typing};

/// The longest pause before a step re-checks its condition.
const POLL: Duration = Duration::from_millis(100);

/// The first pause before a re-check: most conditions (a list filled, a
/// mask gone, a page replaced) come true within tens of milliseconds.
const FIRST_POLL: Duration = Duration::from_millis(10);

/// How long a closed Kendo list is left before it is opened again.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// Whether a click at the centre of `el` would reach it: scrolls it into
/// view first when it is not, then asks the page which element is on top
/// there (the element itself, or one inside it, is a hit).
const HIT_JS: &str = r#"
const hitAt = (el) => {
  const r = el.getClientRects()[0] || el.getBoundingClientRect();
  const top = el.ownerDocument.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return top !== null && (top === el || el.contains(top));
};
const hit = (el) => {
  const r = el.getBoundingClientRect();
  const view = el.ownerDocument.defaultView;
  if (r.top < 0 || r.left < 0 || r.bottom > view.innerHeight || r.right > view.innerWidth) {
    el.scrollIntoView({ block: 'center', inline: 'center' });
  }
  if (hitAt(el)) { return true; }
  // Clipped by a scrolling box inside the page (a long drop-down list).
  el.scrollIntoView({ block: 'nearest', inline: 'nearest' });
  return hitAt(el);
};
"#;

/// `shownInPage(sel)`: whether an element matching `sel` shows in this
/// document or the top one (a mask over the page covers the iframe a step
/// works in; the login form replaces the whole page). Needs `VISIBLE_JS`.
const IN_PAGE_JS: &str = r#"
const docs = [document];
try { if (window.top.document !== document) { docs.push(window.top.document); } } catch (e) {}
const shownInPage = (sel) => docs.some((d) => anyVisible(d, sel));
"#;

/// Looks for the first visible element matching `arguments[0]`, and
/// whether the login form's field `arguments[1]` or a loading mask
/// `arguments[2]` (when given; in this document or the top one, as a mask
/// over the page covers the iframe a step works in) shows. `arguments[3]`,
/// a [`Want`]: `present` takes the first match, shown or not; `click` also
/// asks whether something else covers the element.
const LOOK_JS: &str = r#"
let els;
try { els = Array.from(document.querySelectorAll(arguments[0])); } catch (e) { return { invalid: String(e) }; }
const shown = (e) => e.tagName === 'OPTION'
  ? visible(e.closest('select'))
  : visible(e) && e.ownerDocument.defaultView.getComputedStyle(e).opacity !== '0';
const el = (arguments[3] === 'present' ? els[0] : els.find(shown)) || null;
const value = el && typeof el.value === 'string' ? el.value : '';
const mask = arguments[2] ? shownInPage(arguments[2]) : false;
const login = el ? false : shownInPage(arguments[1]);
const covered = el && arguments[3] === 'click' && !mask ? !hit(el) : false;
return { count: els.length, el: el, value: value, mask: mask, login: login, covered: covered };"#;

/// What a look waits for.
#[derive(Clone, Copy)]
enum Want {
    /// The element, displayed or not.
    Present,
    /// The element displayed.
    Shown,
    /// The element displayed, and nothing else on top of it.
    Click,
}

impl Want {
    fn as_str(self) -> &'static str {
        match self {
            Want::Present => "present",
            Want::Shown => "shown",
            Want::Click => "click",
        }
    }
}

/// Whether a click on the element `arguments[0]` would reach it now: no
/// loading mask `arguments[1]` up (here or in the top document) and
/// nothing else on top of it.
const CLICKABLE_JS: &str = r#"
const docs = [document];
try { if (window.top.document !== document) { docs.push(window.top.document); } } catch (e) {}
if (docs.some((d) => anyVisible(d, arguments[1]))) { return false; }
return hit(arguments[0]);"#;

/// Longest page text quoted in an error.
const QUOTE_MAX: usize = 120;

/// What `read` steps found, by output name (e.g. `proposal_no`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs(BTreeMap<String, String>);

impl Outputs {
    /// No outputs yet.
    pub fn new() -> Outputs {
        Outputs::default()
    }

    /// An output by name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Sets an output.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    /// The proposal number, the output a job completes with.
    pub fn proposal_no(&self) -> Option<&str> {
        self.get("proposal_no")
    }

    /// All outputs, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The outputs as a map.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }
}

/// How long one step took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTiming {
    /// The step's name.
    pub step: String,
    /// Its action.
    pub action: Action,
    /// Its phase.
    pub phase: Phase,
    /// From start to end.
    pub elapsed: Duration,
    /// An `optional` step whose element was missing.
    pub skipped: bool,
}

/// What went wrong in a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepFailure {
    /// No element matched within the time.
    #[error("not found within {} ms", .waited.as_millis())]
    NotFound {
        /// How long it was looked for.
        waited: Duration,
    },
    /// An element matched but never showed.
    #[error("present but not displayed within {} ms", .waited.as_millis())]
    NotDisplayed {
        /// How long it was waited for.
        waited: Duration,
    },
    /// A list never offered the wanted item.
    #[error("no item {value} within {} ms ({seen} items seen)", .waited.as_millis())]
    NoChoice {
        /// The wanted text (hidden when personal).
        value: String,
        /// Items the list held at the end.
        seen: usize,
        /// How long it was waited for.
        waited: Duration,
    },
    /// A condition did not come true in time.
    #[error("{what} did not happen within {} ms", .waited.as_millis())]
    TimedOut {
        /// The condition.
        what: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// `expect_text` saw other text.
    #[error("expected text {expected}, found {found}")]
    TextMismatch {
        /// The wanted text (hidden when personal).
        expected: String,
        /// The text seen, shortened (hidden when personal).
        found: String,
    },
    /// The element did not keep the value set or typed into it.
    #[error("the value did not stick ({detail})")]
    ValueMismatch {
        /// What the element holds, described without the value itself.
        detail: String,
    },
    /// An alert or confirm blocks the page.
    #[error("an alert is open: {text}")]
    Alert {
        /// What WebDriver said about it.
        text: String,
    },
    /// The browser or its session is gone.
    #[error("the browser is gone: {message}")]
    BrowserGone {
        /// What WebDriver said.
        message: String,
    },
    /// Any other WebDriver error.
    #[error("WebDriver error: {message}")]
    WebDriver {
        /// What WebDriver said.
        message: String,
    },
    /// The step's value does not fit its action (e.g. `check` with "maybe").
    #[error("bad value: {message}")]
    BadValue {
        /// Why.
        message: String,
    },
    /// `click_submit` was called without a successful `prepare_submit`.
    #[error("the submit click was not prepared")]
    NotPrepared,
    /// The portal showed its login form instead of the page: the session
    /// expired while the form was being filled.
    #[error("the portal showed its login form after {} ms: the session has expired", .waited.as_millis())]
    LoggedOut {
        /// How long the step had waited when the form was seen.
        waited: Duration,
    },
}

/// The pauses of one wait: [`FIRST_POLL`], doubling up to [`POLL`].
struct Pause(Duration);

impl Pause {
    fn new() -> Pause {
        Pause(FIRST_POLL)
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(POLL);
    }
}

/// A failed step: which step, what it did, on what, and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("step \"{step}\" ({}): {failure}", self.target())]
pub struct StepError {
    /// The step's name.
    pub step: String,
    /// Its action, if a step was running.
    pub action: Option<Action>,
    /// Its selector (or list, or URL), as rendered unless personal.
    pub selector: Option<String>,
    /// Its phase, if a step was running.
    pub phase: Option<Phase>,
    /// What went wrong.
    pub failure: StepFailure,
}

impl StepError {
    /// Whether the browser is gone (the engine skips the screenshot).
    pub fn is_browser_gone(&self) -> bool {
        matches!(self.failure, StepFailure::BrowserGone { .. })
    }

    /// Whether an element or list item was missing.
    pub fn is_missing(&self) -> bool {
        self.failure.is_missing()
    }

    fn target(&self) -> String {
        match (&self.action, &self.selector) {
            (Some(a), Some(s)) => format!("{a} {s}"),
            (Some(a), None) => a.to_string(),
            (None, _) => "-".into(),
        }
    }

    pub(crate) fn not_prepared(step: &str) -> StepError {
        StepError {
            step: step.to_string(),
            action: Some(Action::Click),
            selector: None,
            phase: Some(Phase::Submit),
            failure: StepFailure::NotPrepared,
        }
    }

    pub(crate) fn browser_gone(step: &str, message: String) -> StepError {
        StepError {
            step: step.to_string(),
            action: None,
            selector: None,
            phase: None,
            failure: StepFailure::BrowserGone { message },
        }
    }
}

impl StepFailure {
    fn is_missing(&self) -> bool {
        matches!(
            self,
            StepFailure::NotFound { .. }
                | StepFailure::NotDisplayed { .. }
                | StepFailure::NoChoice { .. }
        )
    }
}

fn failure_of(e: CmdError) -> StepFailure {
    if cmd_is_gone(&e) {
        StepFailure::BrowserGone {
            message: e.to_string(),
        }
    } else if e.is_unexpected_alert_open() {
        StepFailure::Alert {
            text: e.to_string(),
        }
    } else {
        StepFailure::WebDriver {
            message: e.to_string(),
        }
    }
}

fn is_click_refused(e: &CmdError) -> bool {
    matches!(e, CmdError::Standard(w) if w.error == ErrorStatus::ElementClickIntercepted)
        || e.is_element_not_interactable()
        || e.is_stale_element_reference()
}

fn quote(text: &str) -> String {
    let short: String = text.chars().take(QUOTE_MAX).collect();
    if short.len() < text.len() {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}

/// A list that never offered the wanted item: names the value (hidden when
/// personal) and how many items the page's script last saw.
/// The session died while a step waited, when its look saw the login
/// form (`login`).
fn logged_out(login: bool, clock: Clock) -> Result<(), StepFailure> {
    if login {
        return Err(StepFailure::LoggedOut {
            waited: clock.waited(),
        });
    }
    Ok(())
}

fn no_choice(r: &Resolved, seen: &serde_json::Value, clock: Clock) -> StepFailure {
    StepFailure::NoChoice {
        value: r.shown_value(),
        seen: seen["count"].as_u64().unwrap_or(0) as usize,
        waited: clock.waited(),
    }
}

/// A step's start and deadline.
#[derive(Clone, Copy)]
struct Clock {
    started: Instant,
    deadline: Instant,
}

impl Clock {
    fn new(timeout: Duration) -> Clock {
        let started = Instant::now();
        Clock {
            started,
            deadline: started + timeout,
        }
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn waited(&self) -> Duration {
        self.started.elapsed()
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// A step's keys with their templates filled.
struct Resolved {
    selector: Option<String>,
    value: Option<String>,
    url: Option<String>,
    list: Option<String>,
    /// Whether the value came from a personal field.
    value_personal: bool,
    /// What errors show as the step's target.
    shown_target: Option<String>,
}

impl Resolved {
    fn of(step: &Step, fields: &FieldValues) -> Result<Resolved, StepFailure> {
        let fill = |t: &Option<String>| -> Result<Option<String>, StepFailure> {
            t.as_deref()
                .map(|t| profile::render(t, fields))
                .transpose()
                .map_err(|name| StepFailure::BadValue {
                    message: format!("no value for field {{{name}}}"),
                })
        };
        let personal = |t: &Option<String>| {
            t.as_deref()
                .is_some_and(|t| profile::template_is_personal(t, fields))
        };
        let selector = fill(&step.selector)?;
        let url = fill(&step.url)?;
        let list = fill(&step.list)?;
        // The target shown in errors: selector, else list, else URL; its
        // template when a personal field went into it.
        let (raw, filled) = if step.selector.is_some() {
            (&step.selector, &selector)
        } else if step.list.is_some() {
            (&step.list, &list)
        } else {
            (&step.url, &url)
        };
        let shown_target = if personal(raw) {
            raw.clone()
        } else {
            filled.clone()
        };
        Ok(Resolved {
            value: fill(&step.value)?,
            value_personal: personal(&step.value),
            selector,
            url,
            list,
            shown_target,
        })
    }

    fn selector(&self) -> &str {
        self.selector.as_deref().unwrap_or_default()
    }

    fn value(&self) -> &str {
        self.value.as_deref().unwrap_or_default()
    }

    /// The value as errors may show it.
    fn shown_value(&self) -> String {
        if self.value_personal {
            "(personal value)".into()
        } else {
            quote(self.value())
        }
    }
}

/// Runs steps against one browser.
pub(crate) struct StepRunner<'a> {
    client: &'a Client,
    session: &'a Session,
    profile: &'a Profile,
    base_url: &'a str,
}

impl<'a> StepRunner<'a> {
    pub(crate) fn new(
        client: &'a Client,
        session: &'a Session,
        profile: &'a Profile,
        base_url: &'a str,
    ) -> StepRunner<'a> {
        StepRunner {
            client,
            session,
            profile,
            base_url,
        }
    }

    fn error(step: &Step, target: Option<String>, failure: StepFailure) -> StepError {
        StepError {
            step: step.name.clone(),
            action: Some(step.action),
            selector: target,
            phase: Some(step.phase),
            failure,
        }
    }

    /// Runs one step; an `optional` step whose element is missing is
    /// skipped.
    pub(crate) async fn run(
        &self,
        step: &Step,
        fields: &FieldValues,
        outputs: &mut Outputs,
    ) -> Result<StepTiming, StepError> {
        let clock = Clock::new(step.timeout());
        debug!(step = %step.name, action = %step.action, phase = %step.phase, "step");
        let resolved =
            Resolved::of(step, fields).map_err(|f| Self::error(step, step.selector.clone(), f))?;
        let outcome = self.perform(step, &resolved, clock, outputs).await;
        let timing = |skipped| StepTiming {
            step: step.name.clone(),
            action: step.action,
            phase: step.phase,
            elapsed: clock.waited(),
            skipped,
        };
        match outcome {
            Ok(()) => Ok(timing(false)),
            Err(f) if step.optional && f.is_missing() => {
                debug!(step = %step.name, "optional step skipped: {f}");
                Ok(timing(true))
            }
            Err(f) => {
                debug!(step = %step.name, "step failed: {f}");
                Err(Self::error(step, resolved.shown_target.clone(), f))
            }
        }
    }

    async fn perform(
        &self,
        step: &Step,
        r: &Resolved,
        clock: Clock,
        outputs: &mut Outputs,
    ) -> Result<(), StepFailure> {
        match step.action {
            Action::Goto => self.goto(r.url.as_deref().unwrap_or_default(), clock).await,
            Action::WaitFor => self.displayed(r.selector(), clock).await.map(drop),
            Action::WaitMask => {
                let mask = r.selector.as_deref().unwrap_or(&self.profile.mask);
                self.mask_gone(mask, clock).await
            }
            Action::Click => self.click(r.selector(), clock).await,
            Action::Hover => self.hover(r.selector(), clock).await,
            Action::Type => {
                self.type_text(r.selector(), r.value(), self.typing(step), clock)
                    .await
            }
            Action::SetDate => self.set_date(r.selector(), r.value(), clock).await,
            Action::Check => self.check(r, clock).await,
            Action::KendoSelect => self.kendo_select(r, clock).await,
            Action::Typeahead => self.typeahead(r, self.typing(step), clock).await,
            Action::Select => self.select(r, clock).await,
            Action::EnterFrame => {
                let frame = self.displayed(r.selector(), clock).await?;
                frame.enter_frame().await.map_err(failure_of)
            }
            Action::LeaveFrame => self.session.top_frame().await.map_err(failure_of),
            Action::AcceptAlert => self.accept_alert(clock).await,
            Action::Read => {
                let text = self.read(r.selector(), clock).await?;
                let into = step.into.clone().unwrap_or_default();
                outputs.insert(into, text);
                Ok(())
            }
            Action::ExpectText => self.expect_text(r, clock).await,
        }
    }

    /// How `step` enters text: its own `typing`, else the profile's.
    fn typing(&self, step: &Step) -> Typing {
        step.typing.unwrap_or(self.profile.typing)
    }

    async fn goto(&self, path: &str, clock: Clock) -> Result<(), StepFailure> {
        let url = join_url(self.base_url, path).map_err(|e| StepFailure::BadValue {
            message: e.to_string(),
        })?;
        match tokio::time::timeout(clock.remaining(), self.client.goto(&url)).await {
            Ok(result) => result.map_err(failure_of),
            Err(_) => Err(StepFailure::TimedOut {
                what: format!("loading {url}"),
                waited: clock.waited(),
            }),
        }
    }

    /// The first displayed element matching `selector`.
    async fn displayed(&self, selector: &str, clock: Clock) -> Result<Element, StepFailure> {
        self.displayed_unmasked(selector, None, clock)
            .await
            .map(|(el, _)| el)
    }

    /// The first displayed element matching `selector` that a click would
    /// reach: no mask up, nothing on top of it (scrolled into view).
    async fn clickable(&self, selector: &str, clock: Clock) -> Result<Element, StepFailure> {
        self.look_for(selector, Some(&self.profile.mask), Want::Click, clock)
            .await
            .map(|(el, _)| el)
    }

    /// The first displayed element matching `selector` once no `mask`
    /// shows, with its value (an input's; empty for other elements). One
    /// script call per look: the element, the mask, and the portal's login
    /// form, whose sight ends the wait at once (the session has died).
    async fn displayed_unmasked(
        &self,
        selector: &str,
        mask: Option<&str>,
        clock: Clock,
    ) -> Result<(Element, String), StepFailure> {
        self.look_for(selector, mask, Want::Shown, clock).await
    }

    /// The first element matching `selector` as `want` says, once no
    /// `mask` shows, with its value; the portal's login form seen instead
    /// ends the wait at once.
    async fn look_for(
        &self,
        selector: &str,
        mask: Option<&str>,
        want: Want,
        clock: Clock,
    ) -> Result<(Element, String), StepFailure> {
        let script = format!("{VISIBLE_JS}{HIT_JS}{IN_PAGE_JS}{LOOK_JS}");
        let login = self.profile.login.username.as_str();
        let mut poll = Pause::new();
        loop {
            let seen = self
                .client
                .execute(
                    &script,
                    vec![
                        json!(selector),
                        json!(login),
                        json!(mask),
                        json!(want.as_str()),
                    ],
                )
                .await
                .map_err(failure_of)?;
            if let Some(invalid) = seen["invalid"].as_str() {
                return Err(StepFailure::BadValue {
                    message: format!("invalid CSS selector: {invalid}"),
                });
            }
            let masked = seen["mask"].as_bool().unwrap_or(false);
            let covered = seen["covered"].as_bool().unwrap_or(false);
            if let Some(el) = script_element(self.client, &seen["el"]) {
                if !masked && !covered {
                    let value = seen["value"].as_str().unwrap_or_default().to_string();
                    return Ok((el, value));
                }
            }
            // Only set when no element was found.
            logged_out(seen["login"].as_bool().unwrap_or(false), clock)?;
            if clock.expired() {
                let waited = clock.waited();
                return Err(match (masked, seen["count"].as_u64().unwrap_or(0)) {
                    (true, _) => StepFailure::TimedOut {
                        what: format!("loading mask {} going away", mask.unwrap_or_default()),
                        waited,
                    },
                    (false, _) if covered => StepFailure::TimedOut {
                        what: "a click the page accepts (another element covers it)".into(),
                        waited,
                    },
                    (false, 0) => StepFailure::NotFound { waited },
                    (false, _) => StepFailure::NotDisplayed { waited },
                });
            }
            poll.wait().await;
        }
    }

    /// The first element matching `selector`, displayed or not.
    async fn present(&self, selector: &str, clock: Clock) -> Result<Element, StepFailure> {
        self.look_for(selector, None, Want::Present, clock)
            .await
            .map(|(el, _)| el)
    }

    /// Whether an element matching `selector` shows in this document or
    /// the top one (see `IN_PAGE_JS`): a loading mask, or the login form.
    async fn shown_in_page(&self, selector: &str) -> Result<bool, StepFailure> {
        let script = format!("{VISIBLE_JS}{IN_PAGE_JS}return shownInPage(arguments[0]);");
        let shown = self
            .client
            .execute(&script, vec![json!(selector)])
            .await
            .map_err(failure_of)?;
        Ok(shown.as_bool().unwrap_or(false))
    }

    async fn mask_gone(&self, mask: &str, clock: Clock) -> Result<(), StepFailure> {
        let mut poll = Pause::new();
        loop {
            if !self.shown_in_page(mask).await? {
                return Ok(());
            }
            if clock.expired() {
                return Err(StepFailure::TimedOut {
                    what: format!("loading mask {mask} going away"),
                    waited: clock.waited(),
                });
            }
            poll.wait().await;
        }
    }

    /// Waits for the mask, finds the element, clicks; a click the page
    /// refuses (covered, not yet interactable, replaced) is tried again
    /// until the deadline.
    async fn click(&self, selector: &str, clock: Clock) -> Result<(), StepFailure> {
        let mut poll = Pause::new();
        loop {
            let el = self.clickable(selector, clock).await?;
            match self.press(&el).await {
                Ok(()) => return Ok(()),
                Err(e) if is_click_refused(&e) && !clock.expired() => {
                    debug!(selector, "click refused, trying again: {e}");
                }
                Err(e) if is_click_refused(&e) => {
                    return Err(StepFailure::TimedOut {
                        what: format!("a click the page accepts ({e})"),
                        waited: clock.waited(),
                    })
                }
                Err(e) => return Err(failure_of(e)),
            }
            poll.wait().await;
        }
    }

    /// Clicks an element already found (a list item) once the mask is
    /// gone. `Ok(false)`: the page refused the click (the item was covered
    /// or replaced, as lists re-rendered while typing are); the caller finds
    /// the item again.
    async fn try_click(&self, el: &Element, clock: Clock) -> Result<bool, StepFailure> {
        self.mask_gone(&self.profile.mask, clock).await?;
        let el_json = serde_json::to_value(el).map_err(|e| StepFailure::WebDriver {
            message: e.to_string(),
        })?;
        let script = format!("{VISIBLE_JS}{HIT_JS}{CLICKABLE_JS}");
        let clickable = match self
            .client
            .execute(&script, vec![el_json, json!(self.profile.mask)])
            .await
        {
            Ok(answer) => answer.as_bool().unwrap_or(false),
            Err(e) if e.is_stale_element_reference() => false,
            Err(e) => return Err(failure_of(e)),
        };
        if !clickable {
            debug!("the item is covered or gone; finding it again");
            return Ok(false);
        }
        match self.press(el).await {
            Ok(()) => Ok(true),
            Err(e) if is_click_refused(&e) => {
                debug!("click refused, finding the element again: {e}");
                Ok(false)
            }
            Err(e) => Err(failure_of(e)),
        }
    }

    /// Clicks the centre of an element the page has just said a click
    /// reaches: the pointer moves there, presses and releases, as a person's
    /// mouse does (trusted events, one WebDriver command).
    async fn press(&self, el: &Element) -> Result<(), CmdError> {
        let pointer = MouseActions::new("formwright-mouse".into())
            .then(PointerAction::MoveToElement {
                element: el.clone(),
                duration: Some(Duration::ZERO),
                x: 0.0,
                y: 0.0,
            })
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Up {
                button: MOUSE_BUTTON_LEFT,
            });
        self.client.perform_actions(pointer).await
    }

    /// Enters `text` into `el`, which [`ready_to_type`](Self::ready_to_type)
    /// has found `focused` or not, as `typing` says, in one command: key
    /// presses (WebDriver actions), or the whole text inserted (DevTools
    /// `Input.insertText`, falling back to key presses where the driver has
    /// no DevTools). When the field has lost its focus (a page script moved
    /// it), or key presses would have to carry text beyond printable ASCII,
    /// WebDriver's element typing does it instead, which focuses the field
    /// itself and handles any character.
    async fn enter_text(
        &self,
        el: &Element,
        text: &str,
        focused: bool,
        typing: Typing,
    ) -> Result<(), CmdError> {
        if !focused {
            return el.send_keys(text).await;
        }
        if typing == Typing::Insert {
            match self
                .session
                .cdp("Input.insertText", json!({ "text": text }))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => debug!("text not inserted through DevTools, typing it: {e}"),
            }
        }
        if !text.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return el.send_keys(text).await;
        }
        let keys = text
            .chars()
            .fold(KeyActions::new("formwright-keys".into()), |keys, c| {
                keys.then(KeyAction::Down { value: c })
                    .then(KeyAction::Up { value: c })
            });
        self.client.perform_actions(keys).await
    }

    async fn hover(&self, selector: &str, clock: Clock) -> Result<(), StepFailure> {
        let (el, _) = self
            .displayed_unmasked(selector, Some(&self.profile.mask), clock)
            .await?;
        let pointer =
            MouseActions::new("formwright-mouse".into()).then(PointerAction::MoveToElement {
                element: el,
                duration: Some(Duration::from_millis(50)),
                x: 0.0,
                y: 0.0,
            });
        self.client
            .perform_actions(pointer)
            .await
            .map_err(failure_of)
    }

    /// Clear, focus, pause, type; checks the field kept what was typed (the
    /// portal drops keys typed too soon) and types once more, key by key,
    /// if not.
    async fn type_text(
        &self,
        selector: &str,
        value: &str,
        typing: Typing,
        clock: Clock,
    ) -> Result<(), StepFailure> {
        let (el, mut held) = self.displayed_unmasked(selector, None, clock).await?;
        for round in 0..2 {
            let focused = self.ready_to_type(&el, &held, round > 0).await?;
            let typing = if round == 0 { typing } else { Typing::Keys };
            self.enter_text(&el, value, focused, typing)
                .await
                .map_err(failure_of)?;
            held = el
                .prop("value")
                .await
                .map_err(failure_of)?
                .unwrap_or_default();
            if same_text(&held, value) {
                return Ok(());
            }
        }
        Err(StepFailure::ValueMismatch {
            detail: format!(
                "the field holds {} characters after typing {}",
                held.chars().count(),
                value.chars().count()
            ),
        })
    }

    /// Readies a field for typing: clears it unless it is empty (`held`)
    /// and `again` is false, focuses it, and pauses the profile's
    /// `type_pause_ms` (the portal drops keys that arrive right after a
    /// field gains focus). Returns whether the field has the focus after
    /// the pause.
    async fn ready_to_type(
        &self,
        el: &Element,
        held: &str,
        again: bool,
    ) -> Result<bool, StepFailure> {
        const FOCUS_JS: &str = "if (arguments[1]) { arguments[0].focus(); } \
                                return document.activeElement === arguments[0];";
        let pause = Duration::from_millis(self.profile.login.type_pause_ms);
        if again || !held.is_empty() {
            el.clear().await.map_err(failure_of)?;
        }
        let el_json = serde_json::to_value(el).map_err(|e| StepFailure::WebDriver {
            message: e.to_string(),
        })?;
        let focus = |now: bool| {
            self.client
                .execute(FOCUS_JS, vec![el_json.clone(), json!(now)])
        };
        let mut focused = focus(true).await.map_err(failure_of)?;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
            focused = focus(false).await.map_err(failure_of)?;
        }
        Ok(focused.as_bool().unwrap_or(false))
    }

    async fn set_date(&self, selector: &str, value: &str, clock: Clock) -> Result<(), StepFailure> {
        const SET_JS: &str = r#"
const el = arguments[0];
const proto = Object.getPrototypeOf(el);
const setter = Object.getOwnPropertyDescriptor(proto, 'value');
if (setter && setter.set) { setter.set.call(el, arguments[1]); } else { el.value = arguments[1]; }
el.dispatchEvent(new Event('input', { bubbles: true }));
el.dispatchEvent(new Event('change', { bubbles: true }));
return el.value;"#;
        let el = self.present(selector, clock).await?;
        let el_json = serde_json::to_value(&el).map_err(|e| StepFailure::WebDriver {
            message: e.to_string(),
        })?;
        let held = self
            .client
            .execute(SET_JS, vec![el_json, json!(value)])
            .await
            .map_err(failure_of)?;
        if held.as_str() == Some(value) {
            Ok(())
        } else {
            Err(StepFailure::ValueMismatch {
                detail: "the input refused the date (an <input type=date> takes YYYY-MM-DD)".into(),
            })
        }
    }

    async fn check(&self, r: &Resolved, clock: Clock) -> Result<(), StepFailure> {
        let want = match r.value().trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => true,
            "false" | "no" | "0" | "off" | "" => false,
            _ => {
                return Err(StepFailure::BadValue {
                    message: format!("{} is not true or false", r.shown_value()),
                })
            }
        };
        let el = self.present(r.selector(), clock).await?;
        let ticked = el.is_selected().await.map_err(failure_of)?;
        if ticked == want {
            return Ok(());
        }
        if el.is_displayed().await.map_err(failure_of)? {
            self.click(r.selector(), clock).await?;
        } else {
            // A styled box hides the real input behind its label; a script
            // click still fires the page's handlers.
            let el_json = serde_json::to_value(&el).map_err(|e| StepFailure::WebDriver {
                message: e.to_string(),
            })?;
            self.client
                .execute("arguments[0].click();", vec![el_json])
                .await
                .map_err(failure_of)?;
        }
        if el.is_selected().await.map_err(failure_of)? == want {
            Ok(())
        } else {
            Err(StepFailure::ValueMismatch {
                detail: format!(
                    "the box is not {}",
                    if want { "ticked" } else { "unticked" }
                ),
            })
        }
    }

    /// Opens `span[aria-owns=LIST]`, waits for `ul#LIST li` with exactly
    /// the value's text, clicks it. Items may arrive late (lists filled by
    /// a request); a list that closed is opened again.
    async fn kendo_select(&self, r: &Resolved, clock: Clock) -> Result<(), StepFailure> {
        const PICK_JS: &str = r#"
const ul = document.getElementById(arguments[0]);
if (!ul) { return { open: false, count: 0, item: null, login: shownInPage(arguments[2]) }; }
const items = Array.from(ul.querySelectorAll('li'));
const item = items.find((li) => li.textContent.trim() === arguments[1]) || null;
return { open: visible(ul), count: items.length, item: item,
         login: item ? false : shownInPage(arguments[2]) };"#;
        let list = r.list.as_deref().unwrap_or_default();
        let opener = format!("span[aria-owns=\"{}\"]", css_string(list));
        self.click(&opener, clock).await?;
        let mut opened = Instant::now();
        let script = format!("{VISIBLE_JS}{IN_PAGE_JS}{PICK_JS}");
        let login = self.profile.login.username.as_str();
        let mut poll = Pause::new();
        loop {
            let seen = self
                .client
                .execute(&script, vec![json!(list), json!(r.value()), json!(login)])
                .await
                .map_err(failure_of)?;
            logged_out(seen["login"].as_bool().unwrap_or(false), clock)?;
            let open = seen["open"].as_bool().unwrap_or(false);
            if open {
                if let Some(item) = script_element(self.client, &seen["item"]) {
                    if self.try_click(&item, clock).await? {
                        return Ok(());
                    }
                }
            } else if opened.elapsed() >= REOPEN_AFTER {
                self.click(&opener, clock).await?;
                opened = Instant::now();
            }
            if clock.expired() {
                return Err(no_choice(r, &seen, clock));
            }
            poll.wait().await;
        }
    }

    /// Types the value, waits for a suggestion whose text equals it (or,
    /// failing that, starts with it), clicks it.
    async fn typeahead(
        &self,
        r: &Resolved,
        typing: Typing,
        clock: Clock,
    ) -> Result<(), StepFailure> {
        const SUGGEST_JS: &str = r#"
const want = arguments[1].trim();
const lower = want.toLowerCase();
const items = Array.from(document.querySelectorAll(arguments[0])).filter(visible);
const text = (el) => el.textContent.trim();
const pick = items.find((el) => text(el) === want)
  || items.find((el) => text(el).toLowerCase() === lower)
  || items.find((el) => text(el).toLowerCase().startsWith(lower))
  || null;
return { count: items.length, item: pick, login: pick ? false : shownInPage(arguments[2]) };"#;
        let (input, held) = self.displayed_unmasked(r.selector(), None, clock).await?;
        let focused = self.ready_to_type(&input, &held, false).await?;
        self.enter_text(&input, r.value(), focused, typing)
            .await
            .map_err(failure_of)?;
        let list = r.list.as_deref().unwrap_or_default();
        let script = format!("{VISIBLE_JS}{IN_PAGE_JS}{SUGGEST_JS}");
        let login = self.profile.login.username.as_str();
        let mut poll = Pause::new();
        loop {
            let seen = self
                .client
                .execute(&script, vec![json!(list), json!(r.value()), json!(login)])
                .await
                .map_err(failure_of)?;
            logged_out(seen["login"].as_bool().unwrap_or(false), clock)?;
            if let Some(item) = script_element(self.client, &seen["item"]) {
                if self.try_click(&item, clock).await? {
                    return Ok(());
                }
            }
            if clock.expired() {
                return Err(no_choice(r, &seen, clock));
            }
            poll.wait().await;
        }
    }

    /// Chooses a native `<option>` by its text; options filled late are
    /// waited for.
    async fn select(&self, r: &Resolved, clock: Clock) -> Result<(), StepFailure> {
        const OPTION_JS: &str = r#"
const sel = arguments[0];
const opts = Array.from(sel.options);
const opt = opts.find((o) => o.text.trim() === arguments[1]) || null;
if (opt) {
  sel.value = opt.value;
  opt.selected = true;
  sel.dispatchEvent(new Event('input', { bubbles: true }));
  sel.dispatchEvent(new Event('change', { bubbles: true }));
}
return { count: opts.length, chosen: opt !== null };"#;
        let (el, _) = self
            .displayed_unmasked(r.selector(), Some(&self.profile.mask), clock)
            .await?;
        let el_json = serde_json::to_value(&el).map_err(|e| StepFailure::WebDriver {
            message: e.to_string(),
        })?;
        let mut poll = Pause::new();
        loop {
            let seen = self
                .client
                .execute(OPTION_JS, vec![el_json.clone(), json!(r.value())])
                .await
                .map_err(failure_of)?;
            if seen["chosen"].as_bool() == Some(true) {
                return Ok(());
            }
            if clock.expired() {
                return Err(no_choice(r, &seen, clock));
            }
            poll.wait().await;
        }
    }

    async fn accept_alert(&self, clock: Clock) -> Result<(), StepFailure> {
        self.alert_shown(clock).await?;
        self.client.accept_alert().await.map_err(failure_of)
    }

    /// Waits until a JS alert or confirm is open.
    async fn alert_shown(&self, clock: Clock) -> Result<(), StepFailure> {
        let mut poll = Pause::new();
        loop {
            match self.client.get_alert_text().await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_no_such_alert() => {}
                Err(e) => return Err(failure_of(e)),
            }
            if clock.expired() {
                return Err(StepFailure::NotFound {
                    waited: clock.waited(),
                });
            }
            poll.wait().await;
        }
    }

    /// The element's text once it is not empty (numbers are often filled
    /// in just after the element shows).
    async fn read(&self, selector: &str, clock: Clock) -> Result<String, StepFailure> {
        let mut poll = Pause::new();
        loop {
            let el = self.displayed(selector, clock).await?;
            match el.text().await {
                Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
                Ok(_) => {}
                Err(e) if e.is_stale_element_reference() => {}
                Err(e) => return Err(failure_of(e)),
            }
            if clock.expired() {
                return Err(StepFailure::TimedOut {
                    what: "non-empty text".into(),
                    waited: clock.waited(),
                });
            }
            poll.wait().await;
        }
    }

    async fn expect_text(&self, r: &Resolved, clock: Clock) -> Result<(), StepFailure> {
        let mut last: Option<String> = None;
        let mut poll = Pause::new();
        loop {
            match self.client.find(Locator::Css(r.selector())).await {
                Ok(el) => match el.text().await {
                    Ok(text) if text.contains(r.value()) => return Ok(()),
                    Ok(text) => last = Some(text),
                    Err(e) if e.is_stale_element_reference() => {}
                    Err(e) => return Err(failure_of(e)),
                },
                Err(e) if e.is_no_such_element() => {}
                Err(e) => return Err(failure_of(e)),
            }
            let login = self.profile.login.username.as_str();
            logged_out(self.shown_in_page(login).await?, clock)?;
            if clock.expired() {
                return Err(match last {
                    None => StepFailure::NotFound {
                        waited: clock.waited(),
                    },
                    Some(found) => StepFailure::TextMismatch {
                        expected: r.shown_value(),
                        found: if r.value_personal {
                            "(not shown: the expected value is personal)".into()
                        } else {
                            quote(found.trim())
                        },
                    },
                });
            }
            poll.wait().await;
        }
    }

    /// Readies the submit step: for a click, waits until its element is
    /// displayed and no mask is up; for `accept_alert`, waits until the
    /// confirm is open. Touches nothing the portal could act on.
    pub(crate) async fn prepare_submit(
        &self,
        fields: &FieldValues,
    ) -> Result<PreparedSubmit, StepError> {
        let Some(step) = self.profile.submit_step() else {
            // Profile loading guarantees one; a hand-built profile may not.
            return Err(StepError {
                step: "(submit)".into(),
                action: None,
                selector: None,
                phase: Some(Phase::Submit),
                failure: StepFailure::NotPrepared,
            });
        };
        let clock = Clock::new(step.timeout());
        debug!(step = %step.name, "preparing the submit step");
        let r =
            Resolved::of(step, fields).map_err(|f| Self::error(step, step.selector.clone(), f))?;
        let found = async {
            if step.action == Action::AcceptAlert {
                self.alert_shown(clock).await?;
                return Ok(PreparedSubmit::Accept);
            }
            self.mask_gone(&self.profile.mask, clock).await?;
            let el = self.displayed(r.selector(), clock).await?;
            self.mask_gone(&self.profile.mask, clock).await?;
            Ok(PreparedSubmit::Click(el))
        }
        .await;
        found.map_err(|f| Self::error(step, r.shown_target.clone(), f))
    }

    /// The submit step, once: the click, or accepting the confirm.
    pub(crate) async fn click_submit(
        &self,
        prepared: Option<PreparedSubmit>,
    ) -> Result<StepTiming, StepError> {
        let started = Instant::now();
        let step = self.profile.submit_step();
        let name = step.map_or_else(|| "(submit)".to_string(), |s| s.name.clone());
        let action = step.map_or(Action::Click, |s| s.action);
        let fail = |failure| StepError {
            step: name.clone(),
            action: Some(action),
            selector: step.and_then(|s| s.selector.clone()),
            phase: Some(Phase::Submit),
            failure,
        };
        let prepared = prepared.ok_or_else(|| fail(StepFailure::NotPrepared))?;
        debug!(step = %name, "submit");
        let done = match prepared {
            PreparedSubmit::Click(el) => el.click().await,
            PreparedSubmit::Accept => self.client.accept_alert().await,
        };
        done.map_err(|e| fail(failure_of(e)))?;
        Ok(StepTiming {
            step: name.clone(),
            action,
            phase: Phase::Submit,
            elapsed: started.elapsed(),
            skipped: false,
        })
    }
}

/// The submit step, readied: what the one submit action will act on.
#[derive(Debug)]
pub(crate) enum PreparedSubmit {
    /// The element to click.
    Click(Element),
    /// The open confirm to accept.
    Accept,
}

/// Focuses an element by script. Typing focuses the field first, then
/// pauses, then sends keys: the portal drops keys that arrive right after a
/// field gains focus, and sending keys to a field that is not focused would
/// focus it at the moment the keys arrive.
pub(crate) async fn focus(client: &Client, el: &Element) -> Result<(), CmdError> {
    let el_json = serde_json::to_value(el).map_err(CmdError::Json)?;
    client
        .execute("arguments[0].focus();", vec![el_json])
        .await
        .map(drop)
}

/// Whether a field holds what was typed, allowing for what portal scripts
/// do to input: change case (names are often upper-cased) and add
/// separators (input masks on phone numbers and dates). Dropped or extra
/// letters and digits still count as a mismatch.
fn same_text(held: &str, typed: &str) -> bool {
    let core = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    held == typed || core(held) == core(typed)
}

/// Escapes a value for a double-quoted CSS string.
fn css_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_error_names_step_action_and_selector() {
        let e = StepError {
            step: "save client".into(),
            action: Some(Action::Click),
            selector: Some("#btnSave".into()),
            phase: Some(Phase::PreSubmit),
            failure: StepFailure::NotFound {
                waited: Duration::from_millis(1500),
            },
        };
        assert_eq!(
            e.to_string(),
            "step \"save client\" (click #btnSave): not found within 1500 ms"
        );
        assert!(e.is_missing());
        assert!(!e.is_browser_gone());
    }

    #[test]
    fn quotes_are_short() {
        let long = "x".repeat(500);
        assert!(quote(&long).chars().count() < 130);
        assert_eq!(quote("ok"), "\"ok\"");
    }

    #[test]
    fn typed_text_comparison_allows_case() {
        assert!(same_text("ARJUN", "Arjun"));
        assert!(same_text("(900) 001-2345", "9000012345"));
        assert!(!same_text("ARJ", "Arjun"));
        assert!(!same_text("900001234", "9000012345"));
    }
}
