//! The master session and its recovery ladder.
//!
//! ```text
//!   any ──login_started──▶ logging_in            (a daemon run begins)
//!   logging_in ──logged_in──▶ ready
//!   logging_in | ready ──expired──▶ recovering{soft, 1}
//!   recovering{l, n} ──logged_in──▶ ready
//!   recovering{l, n} ──try_failed(l, n)──▶ recovering{l, n+1}   n < tries(l)
//!                                      └─▶ recovering{next(l), 1}
//!                                      └─▶ down                  after nuclear
//!   recovering{nuclear, 1} ──backup_restored──▶ (unchanged)
//!   down ──cooldown_over──▶ recovering{soft, 1}
//! ```
//!
//! Soft allows 3 tries, hard 2, nuclear 1 (see [`Level::tries`]). A second
//! `expired` while a recovery runs is refused: there is one recovery at a
//! time, and every job that needs one joins it.

use serde::Serialize;
use statig::prelude::*;

use super::{TransitionError, Verdict};
use crate::journal::{Level, SessionEvent};

#[derive(Clone, Debug, Default)]
pub struct MasterLifecycle;

#[state_machine(
    initial = "State::starting()",
    state(derive(Clone, Debug, PartialEq, Eq)),
    superstate(derive(Debug))
)]
impl MasterLifecycle {
    #[state(superstate = "any")]
    fn starting(context: &mut Verdict, event: &SessionEvent) -> Outcome<State> {
        let _ = (context, event);
        Super
    }

    #[state(superstate = "any")]
    fn logging_in(event: &SessionEvent) -> Outcome<State> {
        match event {
            SessionEvent::LoggedIn { .. } => Transition(State::ready()),
            SessionEvent::Expired { .. } => Transition(State::recovering(Level::Soft, 1)),
            _ => Super,
        }
    }

    #[state(superstate = "any")]
    fn ready(event: &SessionEvent) -> Outcome<State> {
        match event {
            SessionEvent::Expired { .. } => Transition(State::recovering(Level::Soft, 1)),
            _ => Super,
        }
    }

    #[state(superstate = "any")]
    fn recovering(
        level: &Level,
        attempt: &u32,
        context: &mut Verdict,
        event: &SessionEvent,
    ) -> Outcome<State> {
        match event {
            SessionEvent::LoggedIn { .. } => Transition(State::ready()),
            SessionEvent::TryFailed {
                level: l,
                attempt: n,
                ..
            } if (l, n) != (level, attempt) => context.refuse(format!(
                "the running try is {} {attempt}, not {} {n}",
                level.as_str(),
                l.as_str()
            )),
            SessionEvent::TryFailed { .. } => {
                if *attempt < level.tries() {
                    Transition(State::recovering(*level, attempt + 1))
                } else {
                    match level.next() {
                        Some(next) => Transition(State::recovering(next, 1)),
                        None => Transition(State::down()),
                    }
                }
            }
            SessionEvent::BackupRestored if *level == Level::Nuclear => Handled,
            SessionEvent::Expired { .. } => {
                context.refuse("a recovery is already running; join it")
            }
            _ => Super,
        }
    }

    #[state(superstate = "any")]
    fn down(event: &SessionEvent) -> Outcome<State> {
        match event {
            SessionEvent::CooldownOver => Transition(State::recovering(Level::Soft, 1)),
            _ => Super,
        }
    }

    /// What every state shares: a new daemon run may always begin, anything
    /// else a state did not take is refused.
    #[superstate]
    fn any(context: &mut Verdict, event: &SessionEvent) -> Outcome<State> {
        match event {
            SessionEvent::LoginStarted => Transition(State::logging_in()),
            _ => context.refuse("not expected here"),
        }
    }
}

/// The session's status as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Starting,
    LoggingIn,
    Ready,
    Recovering,
    Down,
}

/// The master session's machine with a `Result`-returning face.
#[derive(Clone)]
pub struct SessionMachine {
    inner: statig::blocking::StateMachine<MasterLifecycle>,
}

impl Default for SessionMachine {
    fn default() -> Self {
        SessionMachine::new()
    }
}

impl SessionMachine {
    pub fn new() -> SessionMachine {
        SessionMachine {
            inner: MasterLifecycle.state_machine(),
        }
    }

    pub fn apply(&mut self, event: &SessionEvent) -> Result<(), TransitionError> {
        super::decide(&mut self.inner, event, event.name(), describe)
    }

    pub fn check(&self, event: &SessionEvent) -> Result<(), TransitionError> {
        self.clone().apply(event)
    }

    pub fn state(&self) -> &State {
        self.inner.state()
    }

    pub fn status(&self) -> SessionStatus {
        match self.state() {
            State::Starting {} => SessionStatus::Starting,
            State::LoggingIn {} => SessionStatus::LoggingIn,
            State::Ready {} => SessionStatus::Ready,
            State::Recovering { .. } => SessionStatus::Recovering,
            State::Down {} => SessionStatus::Down,
        }
    }

    /// The rung to try next while recovering.
    pub fn rung(&self) -> Option<(Level, u32)> {
        match self.state() {
            State::Recovering { level, attempt } => Some((*level, *attempt)),
            _ => None,
        }
    }
}

pub fn describe(state: &State) -> String {
    match state {
        State::Starting {} => "starting".into(),
        State::LoggingIn {} => "logging_in".into(),
        State::Ready {} => "ready".into(),
        State::Recovering { level, attempt } => {
            format!("recovering ({} try {attempt})", level.as_str())
        }
        State::Down {} => "down".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Trigger;

    fn fail(level: Level, attempt: u32) -> SessionEvent {
        SessionEvent::TryFailed {
            level,
            attempt,
            duration_ms: 1,
            error: "login refused".into(),
        }
    }

    #[test]
    fn climbs_the_whole_ladder_then_goes_down() {
        let mut s = SessionMachine::new();
        s.apply(&SessionEvent::LoginStarted).unwrap();
        s.apply(&SessionEvent::LoggedIn { duration_ms: 5 }).unwrap();
        s.apply(&SessionEvent::Expired {
            trigger: Trigger::Heartbeat,
        })
        .unwrap();
        let mut seen = vec![];
        while let Some((level, attempt)) = s.rung() {
            seen.push((level, attempt));
            s.apply(&fail(level, attempt)).unwrap();
        }
        use Level::*;
        assert_eq!(
            seen,
            vec![
                (Soft, 1),
                (Soft, 2),
                (Soft, 3),
                (Hard, 1),
                (Hard, 2),
                (Nuclear, 1)
            ]
        );
        assert_eq!(s.status(), SessionStatus::Down);
        s.apply(&SessionEvent::CooldownOver).unwrap();
        assert_eq!(s.rung(), Some((Soft, 1)));
    }

    #[test]
    fn one_recovery_at_a_time() {
        let mut s = SessionMachine::new();
        s.apply(&SessionEvent::LoginStarted).unwrap();
        s.apply(&SessionEvent::LoggedIn { duration_ms: 5 }).unwrap();
        let expired = SessionEvent::Expired {
            trigger: Trigger::Job("A".into()),
        };
        s.apply(&expired).unwrap();
        assert!(s.apply(&expired).is_err());
        assert!(s.apply(&fail(Level::Hard, 1)).is_err(), "cannot skip soft");
        s.apply(&SessionEvent::LoggedIn { duration_ms: 9 }).unwrap();
        assert_eq!(s.status(), SessionStatus::Ready);
    }
}
