//! The journal on disk: corruption is named by sequence number and does not
//! take the other jobs with it; `replay` and `export` report it.

use std::process::Command;

use formwright::book::Recorder;
use formwright::journal::{JobEvent, JobId, Journal};

fn write_three_jobs(dir: &std::path::Path) -> Vec<u64> {
    let (recorder, _) = Recorder::open(dir).unwrap();
    let mut accepted_seqs = Vec::new();
    for j in 0..3 {
        let id = JobId(format!("POL-{j}"));
        let at = 1_764_000_000_000 + j;
        let seq = recorder
            .job_event(
                &id,
                JobEvent::Accepted {
                    document: format!("{{\"policyId\":\"POL-{j}\",\"aadhar\":\"200000001234\"}}"),
                    max_attempts: 3,
                },
                at,
            )
            .unwrap();
        accepted_seqs.push(seq);
        recorder
            .job_event(&id, JobEvent::AttemptStarted { attempt: 1 }, at)
            .unwrap();
        recorder
            .job_event(&id, JobEvent::Submitted { attempt: 1 }, at)
            .unwrap();
        recorder
            .job_event(
                &id,
                JobEvent::Completed {
                    proposal_no: format!("R{j}"),
                },
                at,
            )
            .unwrap();
    }
    accepted_seqs
}

fn formwright(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_formwright"))
        .args(args)
        .output()
        .expect("run formwright");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_clean_journal_replays_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    write_three_jobs(dir.path());
    let path = dir.path().to_str().unwrap();

    let (code, out, err) = formwright(&["replay", "--journal", path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("completed 3"), "{out}");
    assert!(out.contains("journal OK"), "{out}");

    let (code, out, _) = formwright(&["export", "--journal", path, "--job", "POL-1"]);
    assert_eq!(code, 0);
    let events: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["accepted", "attempt_started", "submitted", "completed"]
    );
    assert_eq!(
        events[0]["document"]["aadhar"], "**********34",
        "masked by default"
    );
    assert!(events[0]["at"].as_str().unwrap().starts_with("2025-11-24T"));

    let (_, out, _) = formwright(&["export", "--journal", path, "--format", "ndjson"]);
    assert_eq!(out.lines().count(), 12);
}

#[test]
fn a_corrupt_value_is_named_and_the_rest_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let accepted = write_three_jobs(dir.path());
    let victim = accepted[1] + 2; // POL-1's `submitted`
    {
        let journal = Journal::open(dir.path()).unwrap();
        let mut bytes = journal.raw(victim).unwrap().unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        journal.overwrite_raw(victim, &bytes).unwrap();
    }
    let path = dir.path().to_str().unwrap();

    let (code, out, _) = formwright(&["replay", "--journal", path]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("journal event at sequence {victim} is corrupt")),
        "{out}"
    );
    assert!(
        out.contains(&format!("journal FAILED at sequence {victim}")),
        "{out}"
    );
    // The other jobs are intact.
    assert!(out.contains("job POL-0  [completed]"), "{out}");
    assert!(out.contains("job POL-2  [completed]"), "{out}");

    let (code, out, err) = formwright(&["export", "--journal", path]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("sequence {victim}")), "{err}");
    let events: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(events.as_array().unwrap().len(), 11);
}

#[test]
fn a_tampered_history_fails_replay_with_the_sequence() {
    // A journal a broken engine could write: an attempt after submitted.
    let dir = tempfile::tempdir().unwrap();
    let seq = {
        let journal = Journal::open(dir.path()).unwrap();
        use formwright::journal::{Event, Subject};
        let s = Subject::Job("POL-9".into());
        let job = |e| Event::Job(e);
        journal
            .append(
                &s,
                &job(JobEvent::Accepted {
                    document: "{}".into(),
                    max_attempts: 3,
                }),
                0,
            )
            .unwrap();
        journal
            .append(&s, &job(JobEvent::AttemptStarted { attempt: 1 }), 0)
            .unwrap();
        journal
            .append(&s, &job(JobEvent::Submitted { attempt: 1 }), 0)
            .unwrap();
        journal
            .append(&s, &job(JobEvent::AttemptStarted { attempt: 2 }), 0)
            .unwrap()
    };
    let (code, out, _) = formwright(&["replay", "--journal", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("no-attempt-after-submit"), "{out}");
    assert!(
        out.contains(&format!("journal FAILED at sequence {seq}")),
        "{out}"
    );
}

#[test]
fn restart_rules_are_journaled() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (recorder, _) = Recorder::open(dir.path()).unwrap();
        for (j, stop_at) in [("A", 1), ("B", 2)] {
            let id = JobId(j.into());
            recorder
                .job_event(
                    &id,
                    JobEvent::Accepted {
                        document: "{}".into(),
                        max_attempts: 3,
                    },
                    0,
                )
                .unwrap();
            recorder
                .job_event(&id, JobEvent::AttemptStarted { attempt: 1 }, 0)
                .unwrap();
            if stop_at == 2 {
                recorder
                    .job_event(&id, JobEvent::Submitted { attempt: 1 }, 0)
                    .unwrap();
            }
        }
    }
    let (recorder, _) = Recorder::open(dir.path()).unwrap();
    let changed = recorder.settle_after_restart(100, 60_100).unwrap();
    let statuses: Vec<(String, &str)> = changed
        .iter()
        .map(|(id, s)| (id.0.clone(), s.as_str()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("A".into(), "pending"),
            ("B".into(), "failed_post_submission")
        ]
    );
    let book = recorder.book();
    let b = book.job(&JobId("B".into())).unwrap();
    assert!(b
        .last_failure
        .as_ref()
        .unwrap()
        .error
        .contains("outcome unknown after restart"));
    assert_eq!(
        book.job(&JobId("A".into())).unwrap().machine.not_before(),
        Some(60_100)
    );
}

#[test]
fn tools_refuse_a_folder_that_holds_no_journal() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let (code, _, err) = formwright(&["replay", "--journal", missing.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("there is no journal"), "{err}");
    assert!(!missing.exists(), "nothing was created");

    let (code, _, err) = formwright(&["export", "--journal", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("holds no sled database"), "{err}");
}

#[test]
fn export_of_an_unknown_job_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_three_jobs(dir.path());
    let path = dir.path().to_str().unwrap();
    let (code, _, err) = formwright(&["export", "--journal", path, "--job", "NOPE"]);
    assert_eq!(code, 2);
    assert!(err.contains("no events of job NOPE"), "{err}");
}
