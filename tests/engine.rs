//! The engine against a scripted portal: retries, the submit rule, panics,
//! and the master session's one-recovery-at-a-time ladder. No browser.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::scripted::{portal, Plan, Scripted};
use formwright::book::Recorder;
use formwright::engine::session::{Health, SessionConfig};
use formwright::engine::{Engine, EngineConfig, Intake};
use formwright::journal::{Event, FailureKind, JobId, Level, SessionEvent};
use formwright::machine::job::Status;

fn config() -> EngineConfig {
    EngineConfig {
        workers: 3,
        backoff: Duration::from_millis(20),
        heartbeat: None,
        session: SessionConfig {
            try_pause: Duration::from_millis(5),
            cooldown: Duration::from_millis(200),
        },
        ..EngineConfig::default()
    }
}

struct Run {
    engine: Engine<Scripted>,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Run {
    fn start(portal: &Scripted, config: EngineConfig, jobs: &[&str]) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let (recorder, _) = Recorder::open(dir.path().join("journal")).unwrap();
        let engine = Engine::new(Arc::new(recorder), Arc::new(portal.clone()), config);
        for id in jobs {
            let doc = format!("{{\"policyId\":\"{id}\"}}");
            assert!(matches!(
                engine.intake(&JobId((*id).into()), &doc).unwrap(),
                Intake::Accepted { .. }
            ));
        }
        let task = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.run().await })
        };
        Run { engine, dir, task }
    }

    fn status(&self, id: &str) -> Status {
        self.engine
            .recorder()
            .book()
            .job(&JobId(id.into()))
            .unwrap()
            .status()
    }

    fn attempts(&self, id: &str) -> u32 {
        self.engine
            .recorder()
            .book()
            .job(&JobId(id.into()))
            .unwrap()
            .attempts_started
    }

    fn session_events(&self) -> Vec<SessionEvent> {
        self.engine
            .recorder()
            .journal()
            .iter()
            .filter_map(|r| match r.unwrap().event {
                Event::Session(e) => Some(e),
                Event::Job(_) => None,
            })
            .collect()
    }

    async fn finish(self) -> tempfile::TempDir {
        self.engine.shutdown();
        self.task.await.unwrap();
        self.dir
    }
}

#[tokio::test]
async fn completes_every_job_once() {
    let portal = portal();
    let run = Run::start(&portal, config(), &["A", "B", "C", "D", "E"]);
    assert!(run.engine.wait_idle(Duration::from_secs(10)).await);
    for id in ["A", "B", "C", "D", "E"] {
        assert_eq!(run.status(id), Status::Completed, "{id}");
        assert_eq!(portal.clicks_for(id), 1, "{id}");
    }
    run.finish().await;
    assert_eq!(
        portal
            .open_attempts
            .load(std::sync::atomic::Ordering::SeqCst),
        portal.closed.load(std::sync::atomic::Ordering::SeqCst),
        "every browser opened was closed"
    );
}

#[tokio::test]
async fn a_failure_before_the_click_retries_until_max_attempts() {
    let portal = portal();
    portal.plan("A", vec![Plan::FailFill(FailureKind::ElementMissing)]);
    portal.plan(
        "B",
        vec![Plan::FailFill(FailureKind::Timeout), Plan::Complete],
    );
    let run = Run::start(&portal, config(), &["A", "B"]);
    assert!(run.engine.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(run.status("A"), Status::FailedLoginForm);
    assert_eq!(run.attempts("A"), 3);
    assert_eq!(portal.clicks_for("A"), 0);
    assert_eq!(run.status("B"), Status::Completed);
    assert_eq!(run.attempts("B"), 2);
    let failure = {
        let book = run.engine.recorder().book();
        let job = book.job(&JobId("A".into())).unwrap();
        job.last_failure.clone().unwrap()
    };
    assert!(failure.error.contains("#txtEngineNo"), "{failure:?}");
    assert_eq!(failure.artifacts, vec!["A/evidence.png".to_string()]);
    run.finish().await;
}

#[tokio::test]
async fn a_failure_after_the_click_is_never_retried() {
    let portal = portal();
    portal.plan("A", vec![Plan::FailAfterClick]);
    let run = Run::start(&portal, config(), &["A"]);
    assert!(run.engine.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(run.status("A"), Status::FailedPostSubmission);
    assert_eq!(run.attempts("A"), 1);
    assert_eq!(portal.clicks_for("A"), 1);
    run.finish().await;
}

#[tokio::test]
async fn a_panicking_attempt_is_a_failed_attempt() {
    let portal = portal();
    portal.plan("A", vec![Plan::PanicInFill, Plan::Complete]);
    let run = Run::start(&portal, config(), &["A"]);
    assert!(run.engine.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(run.status("A"), Status::Completed);
    assert_eq!(run.attempts("A"), 2);
    run.finish().await;
}

#[tokio::test]
async fn one_expiry_with_three_jobs_in_flight_is_one_recovery() {
    let portal = portal();
    *portal.fill_delay.lock().unwrap() = Duration::from_millis(100);
    let run = Run::start(&portal, config(), &["A", "B", "C"]);
    // Let the three attempts start filling, then log the master out.
    tokio::time::sleep(Duration::from_millis(40)).await;
    portal.expire();
    assert!(run.engine.wait_idle(Duration::from_secs(10)).await);
    for id in ["A", "B", "C"] {
        assert_eq!(run.status(id), Status::Completed, "{id}");
        assert_eq!(portal.clicks_for(id), 1, "{id}");
    }
    let expiries = run
        .session_events()
        .iter()
        .filter(|e| matches!(e, SessionEvent::Expired { .. }))
        .count();
    assert_eq!(expiries, 1);
    assert_eq!(*portal.recover_calls.lock().unwrap(), vec![Level::Soft]);
    run.finish().await;
}

#[tokio::test]
async fn logins_always_failing_climb_the_whole_ladder_and_fail_no_job() {
    let portal = portal();
    let run = Run::start(&portal, config(), &[]);
    assert!(wait_for(|| matches!(run.engine.session().health(), Health::Up(_))).await);

    portal.refuse_logins(true);
    portal.expire();
    let id = JobId("A".into());
    run.engine.intake(&id, "{\"policyId\":\"A\"}").unwrap();
    assert!(wait_for(|| run.engine.session().health() == Health::Down).await);

    use Level::*;
    assert_eq!(
        *portal.recover_calls.lock().unwrap(),
        vec![Soft, Soft, Soft, Hard, Hard, Nuclear]
    );
    let events = run.session_events();
    assert!(events.contains(&SessionEvent::BackupRestored));
    assert_eq!(run.status("A"), Status::Pending, "an outage fails no job");
    let critical: Vec<_> = run
        .engine
        .session()
        .alerts()
        .history()
        .into_iter()
        .filter(|a| a.severity == "critical")
        .collect();
    assert_eq!(critical.len(), 1, "{critical:?}");

    // Logins work again: the next ladder (after the cool-down) heals it.
    portal.refuse_logins(false);
    assert!(run.engine.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(run.status("A"), Status::Completed);
    assert!(events.len() < run.session_events().len());
    assert!(run.session_events().contains(&SessionEvent::CooldownOver));
    run.finish().await;
}

#[tokio::test]
async fn the_heartbeat_heals_an_expiry_with_no_job_in_flight() {
    let portal = portal();
    let config = EngineConfig {
        heartbeat: Some(Duration::from_millis(30)),
        ..config()
    };
    let run = Run::start(&portal, config, &[]);
    assert!(wait_for(|| matches!(run.engine.session().health(), Health::Up(1))).await);
    portal.expire();
    assert!(wait_for(|| matches!(run.engine.session().health(), Health::Up(2))).await);
    assert!(!portal.is_expired());
    let recovery = {
        let book = run.engine.recorder().book();
        book.session.recoveries.last().unwrap().clone()
    };
    assert_eq!(recovery.trigger, "heartbeat");
    run.finish().await;
}

#[tokio::test]
async fn shutdown_journals_a_filling_attempt_as_interrupted() {
    // A is mid-fill when the daemon is told to stop.
    let portal1 = portal();
    *portal1.fill_delay.lock().unwrap() = Duration::from_secs(60);
    let run = Run::start(&portal1, config(), &["A"]);
    assert!(wait_for(|| run.status("A") == Status::Filling).await);
    let dir = run.finish().await;
    {
        let (recorder, _) = Recorder::open(dir.path().join("journal")).unwrap();
        let book = recorder.book();
        let a = book.job(&JobId("A".into())).unwrap();
        assert_eq!(
            a.status(),
            Status::Pending,
            "shutdown journals it interrupted"
        );
        assert_eq!(
            a.last_failure.as_ref().unwrap().kind,
            Some(FailureKind::Interrupted)
        );
    }
}

async fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn intake_is_idempotent_on_the_job_id() {
    let portal = portal();
    let run = Run::start(&portal, config(), &["A"]);
    let id = JobId("A".into());
    let same = "{ \"policyId\" : \"A\" }";
    assert_eq!(run.engine.intake(&id, same).unwrap(), Intake::Existing);
    let other = "{\"policyId\":\"A\",\"idv\":\"1\"}";
    assert!(run.engine.intake(&id, other).is_err());
    assert_eq!(run.engine.recorder().book().len(), 1);
    run.finish().await;
}

#[tokio::test]
async fn a_damaged_journal_starts_no_attempt() {
    // A job completed; then its `submitted` value is damaged on disk. Its
    // history now reads "filling": a retry would raise the proposal again.
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().join("journal");
    let submitted_seq = {
        let (recorder, _) = Recorder::open(&journal_dir).unwrap();
        let id = JobId("A".into());
        let doc = "{\"policyId\":\"A\"}".to_string();
        use formwright::journal::JobEvent::*;
        recorder
            .job_event(
                &id,
                Accepted {
                    document: doc,
                    max_attempts: 3,
                },
                0,
            )
            .unwrap();
        recorder
            .job_event(&id, AttemptStarted { attempt: 1 }, 0)
            .unwrap();
        let seq = recorder
            .job_event(&id, Submitted { attempt: 1 }, 0)
            .unwrap();
        recorder
            .job_event(
                &id,
                Completed {
                    proposal_no: "R1".into(),
                },
                0,
            )
            .unwrap();
        seq
    };
    {
        let journal = formwright::journal::Journal::open(&journal_dir).unwrap();
        let mut bytes = journal.raw(submitted_seq).unwrap().unwrap();
        bytes[3] ^= 0x10;
        journal.overwrite_raw(submitted_seq, &bytes).unwrap();
    }

    let portal = portal();
    let (recorder, _) = Recorder::open(&journal_dir).unwrap();
    assert_eq!(recorder.damaged(), &[submitted_seq, submitted_seq + 1]);
    let engine = Engine::new(Arc::new(recorder), Arc::new(portal.clone()), config());
    tokio::time::timeout(Duration::from_secs(10), engine.run())
        .await
        .expect("the engine stops at once");
    let halted = engine.halted().expect("halted");
    assert!(
        halted.contains(&format!("sequence {submitted_seq}")),
        "{halted}"
    );
    assert_eq!(
        portal
            .open_attempts
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert_eq!(portal.clicks_for("A"), 0);
    assert!(engine.intake(&JobId("B".into()), "{}").is_err());
}
