//! The HTTP API over a real engine on a scripted portal (no browser), on a
//! real socket on port 0.

mod common;

use common::scripted::Plan;
use formwright::journal::FailureKind;

use std::time::Duration;

use common::{fast_engine_config, job, request, Server, TOKEN};
use formwright::invariants::Checker;
use formwright::journal::{Event, JobEvent, JobId, Subject};
use serde_json::{json, Value};

const LIMIT: usize = 64 * 1024;

async fn idle() -> Server {
    Server::start(false, fast_engine_config(3), LIMIT).await
}

fn accepted_in_journal(server: &Server, id: &str) -> usize {
    server
        .recorder
        .journal()
        .iter()
        .map(|r| r.unwrap())
        .filter(|r| {
            r.subject == Subject::Job(JobId::from(id))
                && matches!(r.event, Event::Job(JobEvent::Accepted { .. }))
        })
        .count()
}

#[tokio::test]
async fn intake_is_idempotent_and_journaled_before_the_answer() {
    let server = idle().await;
    let doc = job("POL-A-1");

    let first = server.post("/api/jobs", &doc.to_string()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    // Read straight from the journal's bytes on disk, right after the 201.
    assert_eq!(accepted_in_journal(&server, "POL-A-1"), 1);
    assert_eq!(server.recorder.journal().last_seq(), 1);
    let body = first.json();
    assert_eq!(body["id"], "POL-A-1");
    assert_eq!(body["status"], "pending");
    assert_eq!(first.headers["location"], "/api/jobs/POL-A-1");

    // The same document, formatted differently: 200 with the same job.
    let again = server
        .post("/api/jobs", &serde_json::to_string_pretty(&doc).unwrap())
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["id"], "POL-A-1");

    // The same id with a different document: 409, nothing journaled.
    let mut changed = doc.clone();
    changed["idv"] = json!("99000");
    let conflict = server.post("/api/jobs", &changed.to_string()).await;
    assert_eq!(conflict.status, 409, "{}", conflict.text);
    assert!(conflict.json()["error"]
        .as_str()
        .unwrap()
        .contains("POL-A-1"));
    assert_eq!(server.recorder.journal().last_seq(), 1);
    assert_eq!(accepted_in_journal(&server, "POL-A-1"), 1);
    server.stop().await;
}

#[tokio::test]
async fn every_example_job_is_accepted() {
    let server = idle().await;
    for doc in common::example_jobs() {
        let r = server.post("/api/jobs", &doc.to_string()).await;
        assert_eq!(r.status, 201, "{}: {}", doc["policyId"], r.text);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_bad_job_lists_every_bad_field_by_json_path_and_is_not_journaled() {
    let server = idle().await;
    let mut doc = job("POL-BAD-1");
    let obj = doc.as_object_mut().unwrap();
    obj.remove("fullName");
    obj.insert("dateOfBirth".into(), json!("2999-01-01"));
    obj.insert("mobileNumber".into(), json!("12345"));
    obj.insert("pincode".into(), json!("5600"));
    obj.insert("manufacturingYear".into(), json!("2099"));
    obj.insert("registrationNumber".into(), json!("NOT A NUMBER"));
    obj.insert("gender".into(), json!("Robot"));
    obj.insert("email".into(), json!("x".repeat(100) + "@example.com"));
    obj.insert("aadharCard".into(), json!({}));

    let r = server.post("/api/jobs", &doc.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let body = r.json();
    let paths: Vec<&str> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for want in [
        "$.fullName",
        "$.dateOfBirth",
        "$.mobileNumber",
        "$.pincode",
        "$.manufacturingYear",
        "$.registrationNumber",
        "$.gender",
        "$.email",
        "$.aadharCard.key",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    assert_eq!(paths.len(), 9, "{paths:?}");
    // Error bodies never quote personal values.
    assert!(!r.text.contains("12345"), "{}", r.text);

    let mut no_id = job("x");
    no_id.as_object_mut().unwrap().remove("policyId");
    let r = server.post("/api/jobs", &no_id.to_string()).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["fields"][0]["path"], "$.policyId");

    let r = server.post("/api/jobs", "[1, 2]").await;
    assert_eq!(r.status, 400);

    assert_eq!(server.recorder.journal().last_seq(), 0, "nothing journaled");
    server.stop().await;
}

#[tokio::test]
async fn malformed_json_names_line_and_column() {
    let server = idle().await;
    let r = server
        .post("/api/jobs", "{\n  \"policyId\": \"P\",\n  oops\n}")
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let body = r.json();
    assert_eq!(body["line"], 3);
    assert_eq!(body["column"], 3);
    assert!(body["error"].as_str().unwrap().contains("line 3, column 3"));
    assert_eq!(server.recorder.journal().last_seq(), 0);
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let server = Server::start(false, fast_engine_config(3), 4096).await;
    let mut doc = job("POL-BIG");
    doc["padding"] = json!("x".repeat(5000));
    let r = server.post("/api/jobs", &doc.to_string()).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(r.json()["error"].as_str().unwrap().contains("4096"));
    assert_eq!(server.recorder.journal().last_seq(), 0);
    // Just under the limit is fine.
    let r = server
        .post("/api/jobs", &job("POL-SMALL").to_string())
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    server.stop().await;
}

#[tokio::test]
async fn every_route_but_healthz_needs_the_token() {
    let server = idle().await;
    let base = &server.base;
    let routes = [
        ("GET", "/api/jobs"),
        ("POST", "/api/jobs"),
        ("GET", "/api/jobs/stats"),
        ("GET", "/api/jobs/X"),
        ("POST", "/api/jobs/X/retry"),
        ("GET", "/api/session"),
        ("GET", "/api/recoveries"),
        ("GET", "/metrics"),
        ("GET", "/dashboard/live"),
    ];
    let near_miss = &TOKEN[..TOKEN.len() - 1];
    for (method, path) in routes {
        for token in [None, Some("wrong"), Some(near_miss)] {
            let body = (method == "POST").then(|| job("POL-AUTH").to_string());
            let r = request(method, &format!("{base}{path}"), token, body, &[]).await;
            assert_eq!(r.status, 401, "{method} {path} with {token:?}");
            assert_eq!(r.headers["www-authenticate"], "Bearer");
            assert!(!r.text.contains(TOKEN));
        }
    }
    let r = request("GET", &format!("{base}/healthz"), None, None, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    // The dashboard without a session shows its login form, no data.
    let r = request("GET", &format!("{base}/"), None, None, &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("name=\"token\""));
    assert!(!r.text.contains("data-job"));
    assert_eq!(server.recorder.journal().last_seq(), 0);
    server.stop().await;
}

#[tokio::test]
async fn unknown_jobs_and_routes_are_404() {
    let server = idle().await;
    assert_eq!(server.get("/api/jobs/NOPE").await.status, 404);
    assert_eq!(server.post("/api/jobs/NOPE/retry", "{}").await.status, 404);
    assert_eq!(server.get("/api/nothing").await.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn the_list_pages_newest_first_with_a_stable_cursor() {
    let server = idle().await;
    for i in 1..=5 {
        let r = server
            .post("/api/jobs", &job(&format!("POL-L-{i}")).to_string())
            .await;
        assert_eq!(r.status, 201);
    }
    let first = server.get("/api/jobs?limit=2").await.json();
    let ids = |v: &Value| -> Vec<String> {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&first), ["POL-L-5", "POL-L-4"]);
    let cursor = first["next_cursor"].as_str().unwrap().to_string();

    // A job arriving between pages does not shift the next page.
    server.post("/api/jobs", &job("POL-L-6").to_string()).await;
    let second = server
        .get(&format!("/api/jobs?limit=2&cursor={cursor}"))
        .await
        .json();
    assert_eq!(ids(&second), ["POL-L-3", "POL-L-2"]);
    let cursor = second["next_cursor"].as_str().unwrap().to_string();
    let third = server
        .get(&format!("/api/jobs?limit=2&cursor={cursor}"))
        .await
        .json();
    assert_eq!(ids(&third), ["POL-L-1"]);
    assert!(third["next_cursor"].is_null());

    let pending = server.get("/api/jobs?status=pending").await.json();
    assert_eq!(ids(&pending).len(), 6);
    let none = server.get("/api/jobs?status=completed").await.json();
    assert!(ids(&none).is_empty());
    assert_eq!(server.get("/api/jobs?status=done").await.status, 400);
    assert_eq!(server.get("/api/jobs?limit=0").await.status, 400);
    assert_eq!(server.get("/api/jobs?cursor=abc").await.status, 400);
    server.stop().await;
}

#[tokio::test]
async fn stats_session_recoveries_and_metrics_follow_the_engine() {
    let server = Server::start(true, fast_engine_config(2), LIMIT).await;
    server
        .portal
        .plan("POL-S-BAD", vec![Plan::FailFill(FailureKind::Validation)]);
    server.portal.plan(
        "POL-S-2",
        vec![Plan::FailFill(FailureKind::SessionExpired), Plan::Complete],
    );
    server.portal.plan("POL-S-POST", vec![Plan::FailAfterClick]);
    for id in ["POL-S-1", "POL-S-2", "POL-S-BAD", "POL-S-POST"] {
        assert_eq!(
            server.post("/api/jobs", &job(id).to_string()).await.status,
            201
        );
    }
    server
        .wait_for(20, "every job to end", |s| {
            s.recorder.book().open_jobs().next().is_none()
        })
        .await;

    let stats = server.get("/api/jobs/stats").await.json();
    assert_eq!(stats["total"], 4);
    assert_eq!(stats["by_status"]["completed"], 2, "{stats}");
    assert_eq!(stats["by_status"]["failed_login_form"], 1);
    assert_eq!(stats["by_status"]["failed_post_submission"], 1);
    assert_eq!(stats["success_rate"], 0.5);
    // POL-S-2 retried once after the expiry, POL-S-BAD once.
    assert_eq!(stats["retries"], 2, "{stats}");
    assert_eq!(stats["attempts"], 6, "{stats}");
    assert!(stats["mean_seconds_per_job"].is_number());

    let bad = server.get("/api/jobs/POL-S-BAD").await.json();
    assert_eq!(bad["status"], "failed_login_form");
    assert_eq!(bad["attempts"], 2);
    assert_eq!(bad["failure"]["type"], "validation");
    assert_eq!(bad["failure"]["stage"], "type engine number");
    assert_eq!(bad["artifacts"].as_array().unwrap().len(), 2);
    let names: Vec<&str> = bad["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "accepted",
            "attempt_started",
            "attempt_failed",
            "attempt_started",
            "attempt_failed"
        ]
    );
    let post = server.get("/api/jobs/POL-S-POST").await.json();
    assert_eq!(post["failure"]["type"], "post_submission");
    let done = server.get("/api/jobs/POL-S-1").await.json();
    assert_eq!(done["proposal_no"], "R-POL-S-1");

    let session = server.get("/api/session").await.json();
    assert_eq!(session["state"], "ready", "{session}");
    assert_eq!(session["health"], "up");
    assert!(session["last_login_at"].is_string());
    assert!(session["current_recovery"].is_null());

    let recoveries = server.get("/api/recoveries").await.json();
    assert_eq!(recoveries["total"], 1, "{recoveries}");
    let r = &recoveries["recoveries"][0];
    assert_eq!(r["trigger"], "job POL-S-2");
    assert_eq!(r["outcome"], "recovered");
    assert_eq!(r["tries"][0]["level"], "soft");

    let metrics = server.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = &metrics.text;
    for line in [
        "formwright_jobs{status=\"completed\"} 2",
        "formwright_jobs{status=\"failed_login_form\"} 1",
        "formwright_jobs{status=\"pending\"} 0",
        "formwright_attempts_total 6",
        "formwright_recoveries_total{level=\"soft\"} 1",
        "formwright_recoveries_total{level=\"nuclear\"} 0",
        "formwright_job_duration_seconds_count 2",
        "formwright_master_session_up 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_operator_retries_failed_jobs_and_a_post_submission_one_only_when_confirmed() {
    let server = Server::start(true, fast_engine_config(1), LIMIT).await;
    server
        .portal
        .plan("POL-R-FORM", vec![Plan::FailFill(FailureKind::Validation)]);
    server.portal.plan("POL-R-POST", vec![Plan::FailAfterClick]);
    for id in ["POL-R-FORM", "POL-R-POST", "POL-R-OK"] {
        server.post("/api/jobs", &job(id).to_string()).await;
    }
    server
        .wait_for(20, "every job to end", |s| {
            s.recorder.book().open_jobs().next().is_none()
        })
        .await;

    // Not failed: refused.
    let r = server.post("/api/jobs/POL-R-OK/retry", "").await;
    assert_eq!(r.status, 409, "{}", r.text);

    // failed_login_form: requeued, a new round that now completes.
    server.portal.plan("POL-R-FORM", vec![Plan::Complete]);
    server.portal.plan("POL-R-POST", vec![Plan::Complete]);
    let r = server
        .post("/api/jobs/POL-R-FORM/retry", r#"{"reason":"mobile fixed"}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["requeues"], 1);
    server
        .wait_for(20, "the requeued job to complete", |s| {
            s.recorder
                .book()
                .job(&JobId::from("POL-R-FORM"))
                .is_some_and(|j| j.status().as_str() == "completed")
        })
        .await;

    // failed_post_submission: not without confirmation, not without reason.
    let r = server.post("/api/jobs/POL-R-POST/retry", "{}").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("confirm_post_submission"));
    let r = server
        .post(
            "/api/jobs/POL-R-POST/retry",
            r#"{"confirm_post_submission":true}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["fields"][0]["path"], "$.reason");
    let r = server
        .post(
            "/api/jobs/POL-R-POST/retry",
            r#"{"confirm_post_submission":"yes"}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    let status = server.get("/api/jobs/POL-R-POST").await.json();
    assert_eq!(status["status"], "failed_post_submission");

    let reason = "checked the portal: no proposal for this chassis";
    let body = json!({"confirm_post_submission": true, "reason": reason}).to_string();
    let r = server.post("/api/jobs/POL-R-POST/retry", &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    server
        .wait_for(20, "the confirmed job to complete", |s| {
            s.recorder
                .book()
                .job(&JobId::from("POL-R-POST"))
                .is_some_and(|j| j.status().as_str() == "completed")
        })
        .await;

    // The reason and the confirmation are in the journal, and the
    // invariants hold over it.
    let records: Vec<_> = server
        .recorder
        .journal()
        .iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(records.iter().any(|r| r.event
        == Event::Job(JobEvent::Requeued {
            reason: reason.into(),
            confirmed_post_submission: true
        })));
    assert_eq!(Checker::check_all(&records), vec![]);
    let timeline = server.get("/api/jobs/POL-R-POST").await.json()["timeline"].clone();
    assert!(timeline.to_string().contains(reason));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_a_submitted_attempt_finish_within_the_drain_time() {
    let server = Server::start(true, fast_engine_config(3), LIMIT).await;
    server.portal.plan(
        "POL-D-SLOW",
        vec![Plan::SlowClick(Duration::from_millis(600))],
    );
    server
        .post("/api/jobs", &job("POL-D-SLOW").to_string())
        .await;
    server
        .wait_for(10, "the job to be submitted", |s| {
            s.recorder
                .book()
                .job(&JobId::from("POL-D-SLOW"))
                .is_some_and(|j| j.status().as_str() == "submitted")
        })
        .await;
    let recorder = std::sync::Arc::clone(&server.recorder);
    server.stop().await;
    let book = recorder.book();
    let job = book.job(&JobId::from("POL-D-SLOW")).unwrap();
    assert_eq!(job.status().as_str(), "completed");
}

#[tokio::test]
async fn shutdown_journals_a_submitted_attempt_that_outlives_the_drain_time() {
    let mut config = fast_engine_config(3);
    config.drain = Duration::from_millis(300);
    let server = Server::start(true, config, LIMIT).await;
    server.portal.plan("POL-D-HANG", vec![Plan::HangOnClick]);
    server
        .post("/api/jobs", &job("POL-D-HANG").to_string())
        .await;
    server
        .wait_for(10, "the job to be submitted", |s| {
            s.recorder
                .book()
                .job(&JobId::from("POL-D-HANG"))
                .is_some_and(|j| j.status().as_str() == "submitted")
        })
        .await;
    let recorder = std::sync::Arc::clone(&server.recorder);
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown was not bounded"
    );
    let book = recorder.book();
    let job = book.job(&JobId::from("POL-D-HANG")).unwrap();
    assert_eq!(job.status().as_str(), "failed_post_submission");
    assert_eq!(job.last_failure.as_ref().unwrap().stage, "shutdown");
}
