//! Hostile input: bytes that are not a journal value, documents that are
//! not jobs. Nothing here may panic, and every refusal must say what is
//! wrong and where (the sequence number, the JSON path), without losing
//! what was already accepted.

mod common;

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use common::{fast_engine_config, job, Server};
use formwright::journal::codec::{self, FORMAT_VERSION};
use formwright::journal::{
    Event, FailureKind, JobEvent, JobId, Journal, Level, Record, RecordRef, SessionEvent, Subject,
    Trigger,
};

// ---- the journal decoder ------------------------------------------------

/// Every kind of event, with arbitrary contents.
fn any_event() -> impl Strategy<Value = Event> {
    let text = "[ -~]{0,24}";
    prop_oneof![
        (text, 1u32..5).prop_map(|(document, max_attempts)| Event::Job(JobEvent::Accepted {
            document,
            max_attempts
        })),
        (1u32..9).prop_map(|attempt| Event::Job(JobEvent::AttemptStarted { attempt })),
        (1u32..9, text, text, any::<i64>()).prop_map(|(attempt, stage, error, retry_at)| {
            Event::Job(JobEvent::AttemptFailed {
                attempt,
                kind: FailureKind::Timeout,
                stage,
                error,
                retry_at,
                artifacts: vec!["evidence/J/1-x.png".into()],
            })
        }),
        (1u32..9).prop_map(|attempt| Event::Job(JobEvent::Submitted { attempt })),
        text.prop_map(|proposal_no| Event::Job(JobEvent::Completed { proposal_no })),
        (text, proptest::option::of(text)).prop_map(|(stage, proposal_no)| {
            Event::Job(JobEvent::PostSubmissionFailed {
                stage,
                error: "HTTP 500".into(),
                proposal_no,
                artifacts: vec![],
            })
        }),
        Just(Event::Session(SessionEvent::Expired {
            trigger: Trigger::Heartbeat,
        })),
        (1u32..4).prop_map(|attempt| Event::Session(SessionEvent::TryFailed {
            level: Level::Hard,
            attempt,
            duration_ms: 12,
            error: "refused".into(),
        })),
    ]
}

fn encoded(seq: u64, event: &Event) -> Vec<u8> {
    let subject = match event {
        Event::Job(_) => Subject::Job(JobId("POL-1".into())),
        Event::Session(_) => Subject::MasterSession,
    };
    codec::encode(&RecordRef {
        seq,
        at: 1_764_000_000_000,
        subject: &subject,
        event,
    })
    .expect("encodes")
}

/// A damaged value's error names the sequence number it is stored under.
fn names_seq(e: &impl std::fmt::Display, seq: u64) -> bool {
    e.to_string().contains(&format!("sequence {seq}"))
}

/// How a stored value can be damaged.
#[derive(Clone, Debug)]
enum Damage {
    Flip { at: usize, mask: u8 },
    Truncate { to: usize },
    Extend { with: Vec<u8> },
    Insert { at: usize, byte: u8 },
}

fn any_damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        any::<usize>().prop_map(|to| Damage::Truncate { to }),
        proptest::collection::vec(any::<u8>(), 1..16).prop_map(|with| Damage::Extend { with }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Damage::Insert { at, byte }),
    ]
}

fn damage(mut bytes: Vec<u8>, how: &Damage) -> Vec<u8> {
    let len = bytes.len();
    match how {
        Damage::Flip { at, mask } => bytes[at % len] ^= mask,
        Damage::Truncate { to } => bytes.truncate(to % len),
        Damage::Extend { with } => bytes.extend_from_slice(with),
        Damage::Insert { at, byte } => bytes.insert(at % (len + 1), *byte),
    }
    bytes
}

proptest! {
    #![proptest_config(Config { cases: 4000, ..Config::default() })]

    #[test]
    fn random_bytes_are_refused_naming_the_sequence(
        seq in any::<u64>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        match codec::decode(seq, &bytes) {
            // Only a value that passes its checksum could decode; random
            // bytes do so once in 2^32.
            Ok(record) => prop_assert_eq!(record.seq, seq),
            Err(e) => prop_assert!(names_seq(&e, seq), "{}", e),
        }
    }

    #[test]
    fn a_damaged_value_never_decodes(
        seq in 1u64..1_000_000,
        event in any_event(),
        how in any_damage(),
    ) {
        let good = encoded(seq, &event);
        let bad = damage(good.clone(), &how);
        prop_assume!(bad != good);
        match codec::decode(seq, &bad) {
            Ok(record) => prop_assert!(false, "{how:?} decoded as {record:?}"),
            Err(e) => prop_assert!(names_seq(&e, seq), "{}", e),
        }
    }

    /// Bytes with a correct checksum get past the first guard: the body
    /// itself must then be refused (or be a real record) without a panic
    /// or a huge allocation from a forged length.
    #[test]
    fn checksummed_garbage_is_refused_by_its_structure(
        seq in any::<u64>(),
        version in 1u8..=FORMAT_VERSION,
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = vec![version];
        bytes.extend_from_slice(&body);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        match codec::decode(seq, &bytes) {
            Ok(record) => prop_assert_eq!(record.seq, seq),
            Err(e) => prop_assert!(names_seq(&e, seq), "{}", e),
        }
    }

    /// A forged length prefix claiming gigabytes must not be believed.
    #[test]
    fn a_forged_length_is_refused(seq in 1u64..1000, huge in 1u64 << 30..u64::MAX >> 1) {
        let good = encoded(seq, &Event::Job(JobEvent::Completed { proposal_no: "R1".into() }));
        // The first string in a job record is the job id: its varint
        // length follows the version, the sequence, the time and the
        // subject's tag.
        let record: Record = codec::decode(seq, &good).unwrap();
        let prefix = postcard::to_stdvec(&(record.seq, record.at)).unwrap();
        let at = 1 + prefix.len() + 1;
        let mut forged = good[..at].to_vec();
        let mut n = huge;
        while n >= 0x80 {
            forged.push((n as u8) | 0x80);
            n >>= 7;
        }
        forged.push(n as u8);
        forged.extend_from_slice(&good[at + 1..good.len() - 4]);
        let crc = crc32fast::hash(&forged);
        forged.extend_from_slice(&crc.to_le_bytes());
        let e = codec::decode(seq, &forged).unwrap_err();
        prop_assert!(names_seq(&e, seq), "{}", e);
    }
}

/// A whole journal with garbage under some of its keys: replay reports
/// each damaged sequence and reads everything else.
#[test]
fn garbage_values_in_a_journal_are_named_and_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let subject = Subject::Job(JobId("POL-1".into()));
    for attempt in 1..=50 {
        let event = Event::Job(JobEvent::AttemptStarted { attempt });
        journal.append(&subject, &event, 0).unwrap();
    }
    let mut runner = TestRunner::new(Config::with_cases(1));
    let garbage = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 10);
    let values = garbage.new_tree(&mut runner).unwrap().current();
    let victims: BTreeSet<u64> = (0..10).map(|i| 3 + i * 5).collect();
    for (seq, bytes) in victims.iter().zip(values) {
        journal.overwrite_raw(*seq, &bytes).unwrap();
    }

    let mut bad = BTreeSet::new();
    let mut good = 0;
    for item in journal.iter() {
        match item {
            Ok(_) => good += 1,
            Err(e) => {
                bad.insert(e.seq().unwrap_or_else(|| panic!("no sequence in: {e}")));
            }
        }
    }
    assert_eq!(bad, victims);
    assert_eq!(good, 40);
}

// ---- job intake ---------------------------------------------------------

/// JSON of any shape, small.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("\\PC{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What a hostile client sends to the intake.
#[derive(Clone, Debug)]
enum Body {
    /// Any bytes at all.
    Bytes(Vec<u8>),
    /// Well-formed JSON of any shape.
    Json(Value),
    /// A real job with one field replaced by anything, or removed.
    Altered {
        n: usize,
        field: usize,
        with: Option<Value>,
    },
    /// A real job cut short.
    Cut { n: usize, at: usize },
}

fn any_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(Body::Bytes),
        1 => any_json().prop_map(Body::Json),
        4 => (0usize..20, any::<usize>(), proptest::option::of(any_json()))
            .prop_map(|(n, field, with)| Body::Altered { n, field, with }),
        1 => (0usize..20, any::<usize>()).prop_map(|(n, at)| Body::Cut { n, at }),
    ]
}

fn render(body: &Body, examples: &[Value]) -> (Vec<u8>, Option<String>) {
    match body {
        Body::Bytes(b) => (b.clone(), None),
        Body::Json(v) => (v.to_string().into_bytes(), None),
        Body::Altered { n, field, with } => {
            let mut doc = examples[*n].clone();
            let id = format!("FUZZ-{n}-{field}");
            doc["policyId"] = json!(id);
            let obj = doc.as_object_mut().unwrap();
            let keys: Vec<String> = obj.keys().cloned().collect();
            let key = &keys[field % keys.len()];
            match with {
                Some(v) => obj.insert(key.clone(), v.clone()),
                None => obj.remove(key),
            };
            (doc.to_string().into_bytes(), Some(id))
        }
        Body::Cut { n, at } => {
            let text = examples[*n].to_string();
            // Cut anywhere, even inside a character: invalid UTF-8 is
            // hostile input too.
            let cut = at % text.len();
            (text.as_bytes()[..cut].to_vec(), None)
        }
    }
}

async fn post_bytes(server: &Server, body: Vec<u8>) -> common::Reply {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("{}/api/jobs", server.base))
        .header("authorization", format!("Bearer {}", common::TOKEN))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = client.request(req).await.expect("the API answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    common::Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Hundreds of hostile bodies against a live API: each is accepted (a
/// real job can survive an alteration) or refused with a 4xx that says
/// what is wrong; nothing refused reaches the journal, nothing accepted
/// leaves it.
#[test]
fn hostile_intake_is_refused_clearly_and_loses_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(Server::start(false, fast_engine_config(3), 64 * 1024));
    let examples = common::example_jobs();

    // Jobs accepted before the storm must come through it untouched.
    for id in ["KEEP-1", "KEEP-2"] {
        let r = rt.block_on(server.post("/api/jobs", &job(id).to_string()));
        assert_eq!(r.status, 201, "{}", r.text);
    }
    // The runner's closure is `Fn`: what it learns goes into cells.
    let accepted: std::cell::RefCell<BTreeSet<String>> =
        std::cell::RefCell::new(["KEEP-1".into(), "KEEP-2".into()].into());

    let mut runner = TestRunner::new(Config {
        cases: 600,
        failure_persistence: None,
        ..Config::default()
    });
    let refusals = std::cell::Cell::new(0);
    let outcome = runner.run(&any_body(), |body| {
        let (bytes, id) = render(&body, &examples);
        let before = server.recorder.journal().last_seq();
        let r = rt.block_on(post_bytes(&server, bytes));
        let after = server.recorder.journal().last_seq();
        match r.status {
            201 => {
                prop_assert_eq!(after, before + 1, "a 201 journals one event");
                let id = id.expect("only a real job can be accepted");
                accepted.borrow_mut().insert(id);
            }
            200 => prop_assert_eq!(after, before, "a repeat journals nothing"),
            400 | 409 | 413 | 415 | 422 => {
                refusals.set(refusals.get() + 1);
                prop_assert_eq!(after, before, "a refusal journals nothing: {}", r.text);
                let answer: Value = serde_json::from_str(&r.text)
                    .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {}", r.text)))?;
                let error = answer["error"].as_str().unwrap_or_default();
                prop_assert!(!error.is_empty(), "no error message: {}", r.text);
                if let Some(fields) = answer["fields"].as_array() {
                    prop_assert!(!fields.is_empty(), "{}", r.text);
                    for f in fields {
                        let path = f["path"].as_str().unwrap_or_default();
                        prop_assert!(path.starts_with('$'), "{}", r.text);
                        prop_assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()));
                    }
                }
            }
            other => prop_assert!(false, "status {other} for {body:?}: {}", r.text),
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    let refusals = refusals.get();
    assert!(
        refusals > 300,
        "the bodies were too tame: {refusals} refusals"
    );

    // Everything accepted is in the journal, once, and nothing else is.
    let journaled: BTreeSet<String> = server
        .recorder
        .journal()
        .iter()
        .map(|r| r.expect("readable"))
        .filter(|r| matches!(r.event, Event::Job(JobEvent::Accepted { .. })))
        .map(|r| match r.subject {
            Subject::Job(id) => id.0,
            Subject::MasterSession => unreachable!(),
        })
        .collect();
    assert_eq!(journaled, accepted.into_inner());
    rt.block_on(server.stop());
}

// ---- a second daemon on the same journal ---------------------------------

/// A second `formwright run` pointed at a journal another process holds
/// exits at once with an error saying so, and leaves the journal as it was.
#[test]
fn a_second_daemon_on_a_held_journal_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().join("journal");
    let journal = Journal::open(&journal_dir).unwrap();
    let subject = Subject::Job(JobId("HELD-1".into()));
    let accepted = Event::Job(JobEvent::Accepted {
        document: job("HELD-1").to_string(),
        max_attempts: 3,
    });
    journal.append(&subject, &accepted, 1).unwrap();
    let before: Vec<Vec<u8>> = (1..=journal.last_seq())
        .map(|seq| journal.raw(seq).unwrap().unwrap().to_vec())
        .collect();

    let profile = dir.path().join("sim.toml");
    std::fs::write(&profile, common::SIM_PROFILE).unwrap();
    let config = dir.path().join("formwright.toml");
    std::fs::write(
        &config,
        format!(
            "journal_dir = {:?}\nwork_dir = {:?}\nprofile = {:?}\n\
             [portal]\nusername = \"agent01\"\nbase_url = \"http://127.0.0.1:9\"\n[api]\nport = 0\n",
            journal_dir,
            dir.path().join("work"),
            profile
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_formwright"))
        .args(["run", "--config"])
        .arg(&config)
        .env("FORMWRIGHT_PORTAL_PASSWORD", "not-used-0123")
        .env("FORMWRIGHT_API_TOKEN", common::TOKEN)
        .output()
        .expect("formwright runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second daemon started: {stderr}");
    assert!(
        stderr.contains("in use by another formwright process"),
        "the refusal must say why: {stderr}"
    );
    assert!(!stderr.contains("not-used-0123"), "{stderr}");

    let after: Vec<Vec<u8>> = (1..=journal.last_seq())
        .map(|seq| journal.raw(seq).unwrap().unwrap().to_vec())
        .collect();
    assert_eq!(before, after, "the refused daemon changed the journal");
    let record = journal.iter().next().unwrap().unwrap();
    assert_eq!(record.subject, subject);
}
