//! The journal's disk fills up while the daemon is taking jobs and running
//! them. The daemon must stop taking work and say why (in the intake's
//! answer and in `/healthz`), and the journal read back must hold every job
//! it acknowledged, whole, and no half-written event read as valid.
//!
//! The disk is a 2 MiB tmpfs mounted by the test, so the test needs root
//! (or CAP_SYS_ADMIN); it fails, loudly, without it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fast_engine_config, job, Server};
use formwright::invariants::Checker;
use formwright::journal::{Event, JobEvent, Journal, Subject};

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test fills a small tmpfs and must be able to mount one \
             (run it as root or with CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(at.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_intake_and_leaves_no_half_written_event() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("small"), "2m");
    let journal_dir = disk.0.join("journal");
    let server = rt.block_on(Server::start_on(
        &journal_dir,
        tempfile::tempdir().unwrap(),
        true,
        fast_engine_config(3),
        1 << 20,
    ));

    // Jobs keep coming (and running on the scripted portal) until the
    // journal can take no more.
    let mut acked = BTreeSet::new();
    let mut refusal = None;
    for n in 0..20_000 {
        let id = format!("FULL-{n}");
        let r = rt.block_on(server.post("/api/jobs", &job(&id).to_string()));
        match r.status {
            201 => {
                acked.insert(id);
            }
            503 => {
                refusal = Some((id, r.text));
                break;
            }
            other => panic!("job {id}: unexpected status {other}: {}", r.text),
        }
    }
    let (refused, answer) = refusal.expect("the 2 MiB disk never filled up");
    assert!(
        acked.len() > 10,
        "the disk filled too early: {}",
        acked.len()
    );
    eprintln!(
        "disk full after {} jobs; job {refused}: {answer}",
        acked.len()
    );
    assert!(
        answer.contains("journal")
            && answer.contains("stopped taking work")
            && answer.contains("no storage space"),
        "the refusal must say why: {answer}"
    );

    // The daemon says why it stopped, and takes nothing more.
    let health = rt.block_on(server.get("/healthz"));
    assert_eq!(health.status, 503, "{}", health.text);
    assert!(health.text.contains("journal"), "{}", health.text);
    let after = rt.block_on(server.post("/api/jobs", &job("AFTER-FULL").to_string()));
    assert_eq!(after.status, 503, "{}", after.text);
    assert!(server.engine.halted().is_some());
    rt.block_on(server.stop());
    drop(rt);

    // The operator makes room (here: copies the journal off the full disk)
    // and reads it back.
    let copy = dir.path().join("copy");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&journal_dir)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    drop(disk);

    let journal = Journal::open(&copy).expect("the journal opens after the disk filled");
    let mut checker = Checker::new();
    let mut accepted = BTreeSet::new();
    for item in journal.iter() {
        // A value cut short by the full disk fails its checksum and is an
        // error; anything read as valid is a whole event.
        let record = item.expect("every value read back is whole");
        checker.observe(&record);
        if let (Subject::Job(id), Event::Job(JobEvent::Accepted { .. })) =
            (&record.subject, &record.event)
        {
            accepted.insert(id.0.clone());
        }
    }
    let broken = checker.into_violations();
    assert!(broken.is_empty(), "invariants broken: {broken:?}");
    let missing: Vec<_> = acked.difference(&accepted).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    let unknown: Vec<_> = accepted
        .iter()
        .filter(|id| !acked.contains(*id) && **id != refused)
        .collect();
    assert!(unknown.is_empty(), "never acknowledged: {unknown:?}");
}
