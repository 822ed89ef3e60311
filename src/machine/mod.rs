//! The two typed state machines, built with statig. Both are pure: a handler
//! looks at the current state and one event and decides the next state, or
//! refuses the event. Nothing here touches a browser, a clock or a disk; the
//! engine does that and records what happened as events.

pub mod job;
pub mod session;

use thiserror::Error;

/// An event the machine refuses in its current state. Refusals are how the
/// engine's bugs and a tampered journal are caught, so they say both sides.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{event} is not allowed in state {state}: {why}")]
pub struct TransitionError {
    pub state: String,
    pub event: &'static str,
    pub why: String,
}

/// The context handed to every handler: where a refusal is written down.
/// statig handlers return an outcome, not a `Result`, so a refusing handler
/// notes why here and leaves the state as it was.
#[derive(Debug, Default)]
pub struct Verdict {
    refusal: Option<String>,
}

impl Verdict {
    fn refuse<S>(&mut self, why: impl Into<String>) -> statig::Outcome<S> {
        self.refusal = Some(why.into());
        statig::Outcome::Handled
    }

    fn take(&mut self) -> Option<String> {
        self.refusal.take()
    }
}

/// Hands `event` to a statig machine whose context is a [`Verdict`], and
/// turns a refusal into a [`TransitionError`] naming the state it was
/// refused in. Both machines' `apply` are this.
fn decide<M, E>(
    machine: &mut statig::blocking::StateMachine<M>,
    event: &E,
    event_name: &'static str,
    describe: impl Fn(&M::State) -> String,
) -> Result<(), TransitionError>
where
    M: for<'evt, 'ctx> statig::blocking::IntoStateMachine<Event<'evt> = E, Context<'ctx> = Verdict>,
    M::State: statig::blocking::State<M> + Clone,
    for<'sub> M::Superstate<'sub>: statig::blocking::Superstate<M>,
{
    let mut verdict = Verdict::default();
    let before = machine.state().clone();
    machine.handle_with_context(event, &mut verdict);
    match verdict.take() {
        None => Ok(()),
        Some(why) => Err(TransitionError {
            state: describe(&before),
            event: event_name,
            why,
        }),
    }
}
