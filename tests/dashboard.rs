//! The dashboard in real headless Chromium: sign in through the form, check
//! that its counts and a job's row match the API, watch it refresh, and keep
//! a screenshot under target/test-artifacts/.

mod common;

use common::scripted::Plan;
use formwright::journal::FailureKind;

use std::path::PathBuf;
use std::time::Duration;

use common::{fast_engine_config, job, Server, TOKEN};
use fantoccini::{Client, ClientBuilder, Locator};
use formwright::browser::{BrowserConfig, Driver};

async fn text(client: &Client, css: &str) -> String {
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn check(client: &Client, server: &Server) {
    // Sign in: the token goes in a form field, never in the URL.
    client.goto(&format!("{}/", server.base)).await.unwrap();
    let field = client
        .wait()
        .for_element(Locator::Css("input[name=token]"))
        .await
        .unwrap();
    field.send_keys(TOKEN).await.unwrap();
    client
        .find(Locator::Css("form[action='/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Css("#live"))
        .await
        .expect("the dashboard after sign-in");
    let url = client.current_url().await.unwrap();
    assert!(!url.as_str().contains(TOKEN), "token in the URL {url}");

    // Counts match the API's stats.
    let stats = server.get("/api/jobs/stats").await.json();
    for status in [
        "pending",
        "filling",
        "submitted",
        "completed",
        "failed_login_form",
        "failed_post_submission",
    ] {
        let shown = text(client, &format!("[data-status={status}]")).await;
        assert_eq!(
            shown,
            stats["by_status"][status].to_string(),
            "count of {status}"
        );
    }
    assert_eq!(text(client, "[data-status=total]").await, "3");

    // A failed job's row matches the API's view of it.
    let api = server.get("/api/jobs/POL-UI-BAD").await.json();
    let row = "tr[data-job='POL-UI-BAD']";
    assert_eq!(
        text(client, &format!("{row} [data-field=status]")).await,
        api["status"].as_str().unwrap().replace('_', " ")
    );
    assert_eq!(
        text(client, &format!("{row} [data-field=attempts]")).await,
        format!("{}/{}", api["attempts"], api["max_attempts"])
    );
    let reason = text(client, &format!("{row} [data-field=reason]")).await;
    assert!(
        reason.contains(api["failure"]["error"].as_str().unwrap()),
        "{reason}"
    );
    assert_eq!(text(client, "#session-state").await, "ready");
    assert!(text(client, "#recoveries").await.contains("job POL-UI-1"));

    // It refreshes by itself: a new job shows up without a reload.
    let r = server
        .post("/api/jobs", &job("POL-UI-NEW").to_string())
        .await;
    assert_eq!(r.status, 201);
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("tr[data-job='POL-UI-NEW']"))
        .await
        .expect("the new job appears without a reload");

    let png = client.screenshot().await.unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dashboard.png"), png).unwrap();
}

#[tokio::test]
async fn the_dashboard_matches_the_api_in_a_real_browser() {
    let server = Server::start(true, fast_engine_config(2), 64 * 1024).await;
    server
        .portal
        .plan("POL-UI-BAD", vec![Plan::FailFill(FailureKind::Validation)]);
    server.portal.plan(
        "POL-UI-1",
        vec![Plan::FailFill(FailureKind::SessionExpired), Plan::Complete],
    );
    for id in ["POL-UI-1", "POL-UI-2", "POL-UI-BAD"] {
        assert_eq!(
            server.post("/api/jobs", &job(id).to_string()).await.status,
            201
        );
    }
    server
        .wait_for(20, "every job to end", |s| {
            s.recorder
                .book()
                .jobs()
                .filter(|j| j.status().is_terminal())
                .count()
                == 3
                && s.recorder
                    .book()
                    .job(&"POL-UI-1".into())
                    .is_some_and(|j| j.status().as_str() == "completed")
        })
        .await;

    let work = tempfile::tempdir().unwrap();
    let config = BrowserConfig {
        work_dir: work.path().to_path_buf(),
        ..BrowserConfig::default()
    };
    let mut driver = Driver::start(&config).await.expect("chromedriver starts");
    let client = ClientBuilder::rustls()
        .unwrap()
        .capabilities(driver.capabilities(Some(&work.path().join("profile")), None))
        .connect(driver.url())
        .await
        .expect("a browser");

    // Close the browser whatever happens in the checks.
    let result = catch_panic(check(&client, &server)).await;
    let _ = client.close().await;
    driver.kill().await;
    server.stop().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Runs a future, catching a panic so the browser can be closed first.
async fn catch_panic<F: std::future::Future<Output = ()>>(
    f: F,
) -> Result<(), Box<dyn std::any::Any + Send>> {
    use std::panic::AssertUnwindSafe;
    use std::pin::pin;
    use std::task::Poll;
    let mut f = pin!(f);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| f.as_mut().poll(cx))) {
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
    .await
}
