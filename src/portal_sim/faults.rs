//! Fault switches: the ways the simulated portal misbehaves on purpose.
//!
//! Each switch can be set from Rust through [`Faults`] or over HTTP with
//! `POST /__admin/faults` and a [`FaultPatch`] as JSON. All are off by
//! default except the fast-typing drop, which the real portal has.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{lock, Shared};

/// What the save request does once the proposal is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterSave {
    /// Answer normally with the proposal number.
    #[default]
    Normal,
    /// Answer HTTP 500 with an ASP.NET-style error page.
    Error500,
    /// Never answer (until the simulator shuts down).
    Hang,
}

/// The state of every fault switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultState {
    /// The login page drops key input that arrives within
    /// `fast_typing_window_ms` of a keystroke in another field.
    pub fast_typing_drop: bool,
    /// The fast-typing window, 80 ms by default. Over WebDriver two typing
    /// commands are rarely closer than about 100 ms, so the default mostly
    /// bites typing that moves between fields in one command (Tab); a test
    /// that wants the drop to hit field-by-field typing without a pause can
    /// widen it (around 200 ms still lets the profile's 150 ms pause through
    /// on this machine, where a paused hand-over took about 250 ms).
    pub fast_typing_window_ms: u64,
    /// Expire every session after each N-th saved proposal; 0 is off. The
    /// expiry waits until no proposal is between its premium and its
    /// payment link (see [`ExpiryWatch`]).
    pub expire_sessions_every_n_saves: u32,
    /// This many coming logins fail even with the right password.
    pub fail_next_logins: u32,
    /// Every login fails.
    pub fail_all_logins: bool,
    /// Every request except `/__admin` waits this long before it is handled.
    pub page_delay_ms: u64,
    /// The loading mask stays this long after each request; 0 means the
    /// usual 200-400 ms.
    pub mask_hold_ms: u64,
    /// No artificial delays in the pages: the loading mask goes as soon as
    /// its request is answered (unless `mask_hold_ms` holds it) and a
    /// type-ahead looks up what was typed at once instead of 250 ms later.
    /// With `fast_typing_drop` off, nothing but the answers themselves
    /// paces a form.
    pub no_delays: bool,
    /// The save request waits this long before it records the proposal:
    /// a slow save, so a test can act between formwright's click and the
    /// proposal's existence.
    pub save_delay_ms: u64,
    /// What the save request does after recording the proposal.
    pub after_save: AfterSave,
    /// This many coming requests (except `/__admin`) get their connection
    /// closed without an answer.
    pub drop_next_requests: u32,
    /// Element ids served under another id: `{"txtEngineNo":
    /// "txtEngineNumber"}`.
    pub renamed_ids: BTreeMap<String, String>,
}

impl Default for FaultState {
    fn default() -> Self {
        Self {
            fast_typing_drop: true,
            fast_typing_window_ms: 80,
            expire_sessions_every_n_saves: 0,
            fail_next_logins: 0,
            fail_all_logins: false,
            page_delay_ms: 0,
            mask_hold_ms: 0,
            no_delays: false,
            save_delay_ms: 0,
            after_save: AfterSave::Normal,
            drop_next_requests: 0,
            renamed_ids: BTreeMap::new(),
        }
    }
}

/// A partial update of the switches: absent keys keep their value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPatch {
    /// See [`FaultState::fast_typing_drop`].
    pub fast_typing_drop: Option<bool>,
    /// See [`FaultState::fast_typing_window_ms`].
    pub fast_typing_window_ms: Option<u64>,
    /// See [`FaultState::expire_sessions_every_n_saves`].
    pub expire_sessions_every_n_saves: Option<u32>,
    /// See [`FaultState::fail_next_logins`].
    pub fail_next_logins: Option<u32>,
    /// See [`FaultState::fail_all_logins`].
    pub fail_all_logins: Option<bool>,
    /// See [`FaultState::page_delay_ms`].
    pub page_delay_ms: Option<u64>,
    /// See [`FaultState::mask_hold_ms`].
    pub mask_hold_ms: Option<u64>,
    /// See [`FaultState::no_delays`].
    pub no_delays: Option<bool>,
    /// See [`FaultState::save_delay_ms`].
    pub save_delay_ms: Option<u64>,
    /// See [`FaultState::after_save`].
    pub after_save: Option<AfterSave>,
    /// See [`FaultState::drop_next_requests`].
    pub drop_next_requests: Option<u32>,
    /// Replaces [`FaultState::renamed_ids`]; `{}` clears it.
    pub renamed_ids: Option<BTreeMap<String, String>>,
}

impl FaultState {
    /// Applies a partial update.
    pub fn apply(&mut self, patch: FaultPatch) {
        let FaultPatch {
            fast_typing_drop,
            fast_typing_window_ms,
            expire_sessions_every_n_saves,
            fail_next_logins,
            fail_all_logins,
            page_delay_ms,
            mask_hold_ms,
            no_delays,
            save_delay_ms,
            after_save,
            drop_next_requests,
            renamed_ids,
        } = patch;
        if let Some(v) = fast_typing_drop {
            self.fast_typing_drop = v;
        }
        if let Some(v) = fast_typing_window_ms {
            self.fast_typing_window_ms = v;
        }
        if let Some(v) = expire_sessions_every_n_saves {
            self.expire_sessions_every_n_saves = v;
        }
        if let Some(v) = fail_next_logins {
            self.fail_next_logins = v;
        }
        if let Some(v) = fail_all_logins {
            self.fail_all_logins = v;
        }
        if let Some(v) = page_delay_ms {
            self.page_delay_ms = v;
        }
        if let Some(v) = mask_hold_ms {
            self.mask_hold_ms = v;
        }
        if let Some(v) = no_delays {
            self.no_delays = v;
        }
        if let Some(v) = save_delay_ms {
            self.save_delay_ms = v;
        }
        if let Some(v) = after_save {
            self.after_save = v;
        }
        if let Some(v) = drop_next_requests {
            self.drop_next_requests = v;
        }
        if let Some(v) = renamed_ids {
            self.renamed_ids = v;
        }
    }
}

/// A cheap, clonable handle on the simulator's fault switches.
#[derive(Clone)]
pub struct Faults {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Faults").field(&self.state()).finish()
    }
}

impl Faults {
    fn update(&self, change: impl FnOnce(&mut FaultState)) {
        change(&mut lock(&self.shared.faults));
    }

    /// The current switches.
    pub fn state(&self) -> FaultState {
        lock(&self.shared.faults).clone()
    }

    /// Applies a partial update, as `POST /__admin/faults` does.
    pub fn apply(&self, patch: FaultPatch) {
        self.update(|f| f.apply(patch));
    }

    /// Turns every switch back to its default.
    pub fn reset(&self) {
        self.update(|f| *f = FaultState::default());
    }

    /// Turns the login page's fast-typing drop on or off.
    pub fn set_fast_typing_drop(&self, on: bool) {
        self.update(|f| f.fast_typing_drop = on);
    }

    /// Sets the fast-typing window (default 80 ms).
    pub fn set_fast_typing_window(&self, window: Duration) {
        self.update(|f| f.fast_typing_window_ms = millis(window));
    }

    /// Expires every session now; returns how many were logged in.
    pub fn expire_sessions_now(&self) -> usize {
        lock(&self.shared.sessions).expire_all()
    }

    /// Expires every session after each `n`-th saved proposal; 0 turns it
    /// off.
    pub fn expire_sessions_every(&self, n: u32) {
        self.update(|f| f.expire_sessions_every_n_saves = n);
    }

    /// Makes the next `n` logins fail.
    pub fn fail_next_logins(&self, n: u32) {
        self.update(|f| f.fail_next_logins = n);
    }

    /// Makes every login fail, or stops doing so.
    pub fn fail_all_logins(&self, on: bool) {
        self.update(|f| f.fail_all_logins = on);
    }

    /// Delays every request (except `/__admin`) by `delay`.
    pub fn delay_pages(&self, delay: Duration) {
        self.update(|f| f.page_delay_ms = millis(delay));
    }

    /// Holds the loading mask for `hold` after each request; zero restores
    /// the usual 200-400 ms.
    pub fn hold_mask(&self, hold: Duration) {
        self.update(|f| f.mask_hold_ms = millis(hold));
    }

    /// Turns the pages' artificial delays (the loading mask's 200-400 ms,
    /// the type-ahead's 250 ms) off or back on, for pages loaded after the
    /// change.
    pub fn set_no_delays(&self, on: bool) {
        self.update(|f| f.no_delays = on);
    }

    /// Holds each save request for `delay` before it records the proposal.
    pub fn delay_saves(&self, delay: Duration) {
        self.update(|f| f.save_delay_ms = millis(delay));
    }

    /// Chooses what the save request does after recording the proposal.
    pub fn break_after_save(&self, how: AfterSave) {
        self.update(|f| f.after_save = how);
    }

    /// Closes the connection of the next `n` requests without an answer.
    pub fn drop_next_requests(&self, n: u32) {
        self.update(|f| f.drop_next_requests = n);
    }

    /// Serves the element id `from` as `to` on every page.
    pub fn rename_id(&self, from: &str, to: &str) {
        self.update(|f| {
            f.renamed_ids.insert(from.to_owned(), to.to_owned());
        });
    }

    /// Serves every element under its own id again.
    pub fn clear_renames(&self) {
        self.update(|f| f.renamed_ids.clear());
    }

    /// Takes one request from the drop counter; true if this request's
    /// connection is to be dropped.
    pub(super) fn take_drop(&self) -> bool {
        let mut faults = lock(&self.shared.faults);
        if faults.drop_next_requests > 0 {
            faults.drop_next_requests -= 1;
            true
        } else {
            false
        }
    }

    /// Decides whether a login with good credentials fails anyway, using up
    /// one of the "fail next" count.
    pub(super) fn take_login_failure(&self) -> bool {
        let mut faults = lock(&self.shared.faults);
        if faults.fail_all_logins {
            return true;
        }
        if faults.fail_next_logins > 0 {
            faults.fail_next_logins -= 1;
            return true;
        }
        false
    }
}

/// Carries out the "expire every N saves" switch at a moment between
/// proposals.
///
/// An expiry that lands between a flow's premium and its save cannot be
/// told from a lost save (formwright has journaled `submitted` by then and
/// must fail the job for manual review), and one between the save and the
/// payment link fails a proposal that exists. Both are real hazards, with
/// their own tests; this switch is for watching recovery, so it waits until
/// no flow is in that final stretch. A flow that has stood still in it for
/// [`ExpiryWatch::STALE`] (its browser gave up) no longer holds it back.
#[derive(Debug, Default)]
pub(crate) struct ExpiryWatch {
    /// The N-th proposal was saved and the sessions are still to end.
    due: bool,
    /// Flows in their final stretch, by quote id (premium calculated) or
    /// proposal number (saved, payment link not sent), since when.
    open: HashMap<String, Instant>,
}

impl ExpiryWatch {
    pub(crate) const STALE: Duration = Duration::from_secs(60);

    /// A premium was calculated: the flow holding `quote_id` is about to
    /// save.
    pub(crate) fn quoted(&mut self, quote_id: &str) {
        self.open.insert(quote_id.to_owned(), Instant::now());
    }

    /// A proposal was saved from `quote_id`; `due` when it was an N-th.
    pub(crate) fn saved(&mut self, quote_id: &str, proposal_no: &str, due: bool) {
        self.open.remove(quote_id);
        self.open.insert(proposal_no.to_owned(), Instant::now());
        self.due |= due;
    }

    /// The payment link of `proposal_no` was sent: its flow is through.
    pub(crate) fn link_sent(&mut self, proposal_no: &str) {
        self.open.remove(proposal_no);
    }

    /// Whether the sessions are to end now; clears the due flag if so.
    pub(crate) fn take_due(&mut self) -> bool {
        if !self.due {
            return false;
        }
        self.open.retain(|_, since| since.elapsed() < Self::STALE);
        if self.open.is_empty() {
            self.due = false;
            return true;
        }
        false
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_changes_only_given_switches() {
        let mut state = FaultState::default();
        let patch: FaultPatch =
            serde_json::from_str(r#"{"fail_next_logins": 2, "after_save": "hang"}"#)
                .expect("patch");
        state.apply(patch);
        assert_eq!(state.fail_next_logins, 2);
        assert_eq!(state.after_save, AfterSave::Hang);
        assert!(state.fast_typing_drop);
        assert_eq!(state.page_delay_ms, 0);
        assert!(!state.no_delays);

        let patch: FaultPatch =
            serde_json::from_str(r#"{"no_delays": true, "fast_typing_drop": false}"#)
                .expect("patch");
        state.apply(patch);
        assert!(state.no_delays);
        assert!(!state.fast_typing_drop);
        assert_eq!(state.fail_next_logins, 2);
    }

    #[test]
    fn a_due_expiry_waits_for_flows_in_their_final_stretch() {
        let mut watch = ExpiryWatch::default();
        watch.quoted("Q1");
        watch.quoted("Q2");
        assert!(!watch.take_due(), "nothing is due yet");
        watch.saved("Q1", "R1", true);
        assert!(
            !watch.take_due(),
            "Q2 is about to save, R1 to send its link"
        );
        watch.saved("Q2", "R2", false);
        watch.link_sent("R1");
        assert!(!watch.take_due(), "R2 has not sent its link");
        watch.link_sent("R2");
        assert!(watch.take_due());
        assert!(!watch.take_due(), "one expiry per due save");
    }

    #[test]
    fn a_stale_flow_does_not_hold_a_due_expiry_back() {
        let mut watch = ExpiryWatch::default();
        watch.saved("Q1", "R1", true);
        if let Some(since) = watch.open.get_mut("R1") {
            *since -= ExpiryWatch::STALE;
        }
        assert!(watch.take_due());
    }

    #[test]
    fn unknown_switch_is_refused() {
        let parsed = serde_json::from_str::<FaultPatch>(r#"{"fail_logins": 2}"#);
        assert!(parsed.is_err());
    }
}
