//! Property tests of the journal and the two machines: random sequences of
//! events, worker crashes and daemon restarts, checked against the
//! invariants. The machines decide what is legal; the independent
//! [`Checker`] reads the journal they wrote.

use std::collections::HashSet;

use proptest::prelude::*;

use formwright::book::{replay, Recorder};
use formwright::invariants::Checker;
use formwright::journal::{
    FailureKind, JobEvent, JobId, Journal, Level, Record, SessionEvent, Trigger,
};

const MAX_ATTEMPTS: u32 = 3;

#[derive(Clone, Debug)]
enum JobAction {
    Accept(u8),
    /// Start an attempt with a given number (often the wrong one).
    Start(u8, u32),
    Submit(u8),
    Complete(u8),
    Fail(u8),
    PostFail(u8),
    /// The daemon dies and restarts on the same journal.
    Restart,
}

fn job_action() -> impl Strategy<Value = JobAction> {
    let j = 0u8..4;
    prop_oneof![
        2 => j.clone().prop_map(JobAction::Accept),
        4 => (j.clone(), 1u32..6).prop_map(|(j, n)| JobAction::Start(j, n)),
        3 => j.clone().prop_map(JobAction::Submit),
        2 => j.clone().prop_map(JobAction::Complete),
        3 => j.clone().prop_map(JobAction::Fail),
        1 => j.prop_map(JobAction::PostFail),
        1 => Just(JobAction::Restart),
    ]
}

fn id(j: u8) -> JobId {
    JobId(format!("POL-{j}"))
}

fn records(journal: &Journal) -> Vec<Record> {
    journal.iter().map(|r| r.expect("readable")).collect()
}

/// Builds the event an engine would journal for `action`, using the live
/// attempt number where the action does not carry one.
fn job_event(recorder: &Recorder, j: u8, action: &JobAction) -> JobEvent {
    let current = recorder
        .book()
        .job(&id(j))
        .map(|job| job.machine.attempts())
        .unwrap_or(0);
    match action {
        JobAction::Accept(_) => JobEvent::Accepted {
            document: format!("{{\"policyId\":\"POL-{j}\"}}"),
            max_attempts: MAX_ATTEMPTS,
        },
        JobAction::Start(_, n) => JobEvent::AttemptStarted { attempt: *n },
        JobAction::Submit(_) => JobEvent::Submitted { attempt: current },
        JobAction::Complete(_) => JobEvent::Completed {
            proposal_no: format!("R{j}"),
        },
        JobAction::Fail(_) => JobEvent::AttemptFailed {
            attempt: current,
            kind: FailureKind::ElementMissing,
            stage: "type engine_no".into(),
            error: "not found".into(),
            retry_at: 0,
            artifacts: vec![],
        },
        JobAction::PostFail(_) => JobEvent::PostSubmissionFailed {
            stage: "read proposal_no".into(),
            error: "500".into(),
            proposal_no: None,
            artifacts: vec![],
        },
        JobAction::Restart => unreachable!(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// (1) no attempt starts after `submitted`, (2) replay equals the live
    /// state at every restart and at the end, (3) attempts stay within
    /// max_attempts, whatever the order of events and restarts.
    #[test]
    fn jobs_keep_their_promises(actions in prop::collection::vec(job_action(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut recorder, _) = Recorder::open(dir.path()).unwrap();
        let mut submitted: HashSet<JobId> = HashSet::new();
        let mut now = 1_000;

        for action in &actions {
            now += 10;
            let j = match action {
                JobAction::Restart => {
                    let live = recorder.book().fingerprint();
                    drop(recorder);
                    let (reopened, report) = Recorder::open(dir.path()).unwrap();
                    prop_assert!(report.refused.is_empty() && report.unreadable.is_empty());
                    prop_assert_eq!(reopened.book().fingerprint(), live);
                    recorder = reopened;
                    for (job, _) in recorder.settle_after_restart(now, now + 60_000).unwrap() {
                        let status = recorder.book().job(&job).unwrap().status();
                        prop_assert!(status.as_str() != "submitted" && status.as_str() != "filling");
                    }
                    continue;
                }
                JobAction::Accept(j) | JobAction::Start(j, _) | JobAction::Submit(j)
                | JobAction::Complete(j) | JobAction::Fail(j) | JobAction::PostFail(j) => *j,
            };
            let event = job_event(&recorder, j, action);
            let accepted = recorder.job_event(&id(j), event.clone(), now).is_ok();
            if !accepted {
                continue;
            }
            match event {
                JobEvent::AttemptStarted { attempt } => {
                    prop_assert!(!submitted.contains(&id(j)), "attempt after submitted");
                    prop_assert!(attempt <= MAX_ATTEMPTS);
                }
                JobEvent::Submitted { .. } => {
                    submitted.insert(id(j));
                }
                _ => {}
            }
        }

        let violations = Checker::check_all(&records(recorder.journal()));
        prop_assert!(violations.is_empty(), "{:?}", violations);
        let (replayed, report) = replay(recorder.journal());
        prop_assert!(report.refused.is_empty());
        prop_assert_eq!(replayed.fingerprint(), recorder.book().fingerprint());
    }
}

#[derive(Clone, Debug)]
enum SessionAction {
    LoginStarted,
    LoggedIn,
    Expired,
    /// A try failure at a random rung (mostly the wrong one).
    TryFailed(Level, u32),
    /// A try failure at whatever rung the machine says is current.
    FailCurrent,
    BackupRestored,
    CooldownOver,
    Restart,
}

fn session_action() -> impl Strategy<Value = SessionAction> {
    let level = prop_oneof![Just(Level::Soft), Just(Level::Hard), Just(Level::Nuclear)];
    prop_oneof![
        1 => Just(SessionAction::LoginStarted),
        2 => Just(SessionAction::LoggedIn),
        3 => Just(SessionAction::Expired),
        2 => (level, 0u32..4).prop_map(|(l, n)| SessionAction::TryFailed(l, n)),
        6 => Just(SessionAction::FailCurrent),
        1 => Just(SessionAction::BackupRestored),
        2 => Just(SessionAction::CooldownOver),
        1 => Just(SessionAction::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// (4) the recovery ladder never skips or repeats a level and never
    /// exceeds its tries, across restarts.
    #[test]
    fn the_ladder_is_climbed_in_order(actions in prop::collection::vec(session_action(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut recorder, _) = Recorder::open(dir.path()).unwrap();
        let mut now = 0;
        for action in &actions {
            now += 5;
            let event = match action {
                SessionAction::Restart => {
                    drop(recorder);
                    recorder = Recorder::open(dir.path()).unwrap().0;
                    continue;
                }
                SessionAction::LoginStarted => SessionEvent::LoginStarted,
                SessionAction::LoggedIn => SessionEvent::LoggedIn { duration_ms: 10 },
                SessionAction::Expired => SessionEvent::Expired { trigger: Trigger::Heartbeat },
                SessionAction::TryFailed(level, attempt) => SessionEvent::TryFailed {
                    level: *level, attempt: *attempt, duration_ms: 10, error: "refused".into(),
                },
                SessionAction::FailCurrent => {
                    let Some((level, attempt)) = recorder.book().session.machine.rung() else {
                        continue;
                    };
                    SessionEvent::TryFailed { level, attempt, duration_ms: 10, error: "refused".into() }
                }
                SessionAction::BackupRestored => SessionEvent::BackupRestored,
                SessionAction::CooldownOver => SessionEvent::CooldownOver,
            };
            let _ = recorder.session_event(event, now);
        }
        let violations = Checker::check_all(&records(recorder.journal()));
        prop_assert!(violations.is_empty(), "{:?}", violations);

        for recovery in &recorder.book().session.recoveries {
            let rungs: Vec<(Level, u32)> =
                recovery.tries.iter().map(|t| (t.level, t.attempt)).collect();
            let ladder = [
                (Level::Soft, 1), (Level::Soft, 2), (Level::Soft, 3),
                (Level::Hard, 1), (Level::Hard, 2), (Level::Nuclear, 1),
            ];
            prop_assert!(rungs.len() <= ladder.len());
            prop_assert_eq!(&rungs[..], &ladder[..rungs.len()]);
        }
    }
}
