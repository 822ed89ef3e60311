//! The warm browser pool (`pooled`), with real Chromium against the
//! simulated portal: nothing one attempt leaves reaches the next attempt on
//! the same browser; a failed attempt, a browser's N-th attempt and a
//! browser that died each get a new browser; shutdown leaves none running;
//! every attempt's steps are timed.
//!
//! The tests drive the live portal's attempts directly (the engine has no
//! jobs), so they choose what each attempt does and which browser it meets.

use std::path::Path;
use std::time::Duration;

use formwright::browser::portal::{LiveAttempt, LivePortal};
use formwright::browser::{CloneStrategy, JobBrowser};
use formwright::engine::portal::{Attempt, Portal};
use formwright::engine::session::Health;
use formwright::journal::{JobId, Level};
use formwright::portal_sim::session::{AUTH_COOKIE, SESSION_COOKIE};
use formwright::rig::{example_jobs, Rig, RigOptions};
use formwright::timing::{CHECK, CLONE, NAVIGATE, POOL_PHASE, PRELOAD, WIPE};
use serde_json::{json, Value};

/// A rig with no jobs, one worker and no spare (so one pooled browser),
/// and the pool recycling browsers after `recycle_after` attempts.
async fn start(dir: &Path, recycle_after: u32) -> Rig {
    start_with_spare(dir, recycle_after, 0).await
}

/// [`start`] with `spare` browsers beyond the one for the worker.
async fn start_with_spare(dir: &Path, recycle_after: u32, spare: usize) -> Rig {
    start_with(dir, |options| {
        options.pool_recycle_after = recycle_after;
        options.pool_spare = spare;
    })
    .await
}

/// A rig with no jobs, one worker and no spare, as `adjust` changes it,
/// once the master has logged in.
async fn start_with(dir: &Path, adjust: impl FnOnce(&mut RigOptions)) -> Rig {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let mut options = RigOptions::new(dir).expect("the built-in profile and jobs load");
    options.jobs = Vec::new();
    options.workers = 1;
    options.heartbeat = None;
    options.clone_strategy = CloneStrategy::Pooled;
    options.pool_spare = 0;
    adjust(&mut options);
    let rig = Rig::start(options).await.expect("the rig starts");
    let mut health = rig.engine().session().subscribe();
    let up = tokio::time::timeout(
        Duration::from_secs(90),
        health.wait_for(|h| matches!(h, Health::Up(_))),
    )
    .await;
    assert!(matches!(up, Ok(Ok(_))), "the master never logged in");
    rig
}

fn job(n: usize) -> (JobId, String) {
    let (id, doc) = example_jobs().expect("examples").swap_remove(n);
    (id, doc.to_string())
}

async fn open(portal: &LivePortal, n: usize, attempt: u32) -> LiveAttempt {
    let (id, doc) = job(n);
    portal
        .open_attempt(&id, attempt, &doc)
        .await
        .unwrap_or_else(|f| panic!("attempt {attempt} of {id} opens: {f}"))
}

fn browser(attempt: &LiveAttempt) -> &JobBrowser {
    attempt.job_browser().expect("the attempt has its browser")
}

fn session_id(attempt: &LiveAttempt) -> String {
    browser(attempt)
        .session_id()
        .expect("a WebDriver session id")
        .to_string()
}

async fn js(attempt: &LiveAttempt, script: &str) -> Value {
    browser(attempt)
        .client()
        .expect("open")
        .execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

async fn cookie_names(attempt: &LiveAttempt) -> Vec<String> {
    let mut names: Vec<String> = browser(attempt)
        .client()
        .expect("open")
        .get_all_cookies()
        .await
        .expect("cookies")
        .into_iter()
        .map(|c| c.name().to_string())
        .collect();
    names.sort();
    names
}

/// When the page the attempt's browser shows was loaded, in ms since the
/// epoch.
async fn page_loaded_at(attempt: &LiveAttempt) -> f64 {
    js(attempt, "return performance.timeOrigin;")
        .await
        .as_f64()
        .expect("performance.timeOrigin is a number")
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
        * 1000.0
}

/// Waits until parked browsers have preloaded `n` dashboards in all.
async fn wait_for_preloads(portal: &LivePortal, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats = portal.pool_stats().expect("pooled");
        if stats.preloads >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} preloads in 30 s: {stats:?}",
            stats.preloads
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the login cookie `name` in the attempt's browser.
async fn cookie_value(attempt: &LiveAttempt, name: &str) -> String {
    browser(attempt)
        .client()
        .expect("open")
        .get_named_cookie(name)
        .await
        .unwrap_or_else(|e| panic!("cookie {name}: {e}"))
        .value()
        .to_string()
}

/// A cacheable response only the first attempt of a test asks for.
const CACHED_BY_ONE: &str = "/Scripts/portal.js?cached-by-one=1";

/// Whether the browser's HTTP cache holds a response for `path`.
async fn cached(attempt: &LiveAttempt, path: &str) -> Value {
    browser(attempt)
        .client()
        .expect("open")
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0], { cache: 'only-if-cached', mode: 'same-origin' })
               .then((r) => done(r.ok), () => done(false));",
            vec![json!(path)],
        )
        .await
        .expect("asking the HTTP cache")
}

/// What a page of the portal's origin holds that an attempt could leave
/// behind: storage, a script-set cookie, an IndexedDB database, a cached
/// response.
async fn leftovers(attempt: &LiveAttempt) -> Value {
    let client = browser(attempt).client().expect("open");
    let dbs = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             indexedDB.databases().then((d) => done(d.map((x) => x.name)), () => done(null));",
            vec![],
        )
        .await
        .expect("listing IndexedDB databases");
    json!({
        "http_cache": cached(attempt, CACHED_BY_ONE).await,
        "local": js(attempt, "return localStorage.getItem('fw-leak');").await,
        "session": js(attempt, "return sessionStorage.getItem('fw-leak');").await,
        "cookie": js(attempt, "return document.cookie.includes('fw_leak=');").await,
        "indexeddb": dbs,
        "history": js(attempt, "return history.length;").await,
    })
}

/// Processes whose command line names a folder under `dir`.
fn browsers_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|s| s.trim().chars().next());
                !matches!(state, Some('Z') | Some('X') | None)
            })
        })
        .collect()
}

/// Stops the rig and checks that no pooled browser is left running and
/// their folders are gone.
async fn finish(rig: Rig) {
    let pool_dir = rig.portal().settings().browser.pool_dir();
    let report = rig.finish().await.expect("the rig finishes");
    assert!(report.replay_ok(), "the journal replays clean");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = browsers_under(&pool_dir);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pooled browsers still running after shutdown: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let folders: Vec<_> = std::fs::read_dir(&pool_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(folders.is_empty(), "pool folders left: {folders:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_one_attempt_leaves_reaches_the_next_on_the_same_browser() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rig = start(dir.path(), 50).await;
    let portal = rig.portal();
    let first_job = job(0).1;
    let first: Value = serde_json::from_str(&first_job).unwrap();

    // The first attempt stores a value every way a page can, logs to the
    // console, and fills the whole form with its job's data (the save
    // confirm is left open, unanswered).
    let mut a1 = open(portal, 0, 1).await;
    let browser_1 = session_id(&a1);
    let client = browser(&a1).client().unwrap().clone();
    client
        .execute(
            "localStorage.setItem('fw-leak', 'job one');
             sessionStorage.setItem('fw-leak', 'job one');
             document.cookie = 'fw_leak=job-one; path=/; max-age=86400';
             console.log('fw-leak console job one');",
            vec![],
        )
        .await
        .expect("storing values");
    client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const open = indexedDB.open('fw-leak', 1);
             open.onupgradeneeded = () => open.result.createObjectStore('kept');
             open.onsuccess = () => { open.result.close(); done(true); };
             open.onerror = () => done(false);",
            vec![],
        )
        .await
        .expect("creating an IndexedDB database");
    client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0]).then((r) => r.text()).then(() => done(true), () => done(false));",
            vec![json!(CACHED_BY_ONE)],
        )
        .await
        .expect("fetching a cacheable response");
    // The probe sees what was stored, so its silence later means something.
    let seen = leftovers(&a1).await;
    assert_eq!(seen["http_cache"], true, "{seen}");
    assert_eq!(seen["local"], "job one", "{seen}");
    assert_eq!(seen["session"], "job one", "{seen}");
    assert_eq!(seen["cookie"], true, "{seen}");
    assert!(seen["indexeddb"].to_string().contains("fw-leak"), "{seen}");
    assert!(cookie_names(&a1).await.contains(&"fw_leak".to_string()));
    let history = seen["history"].clone();
    // Filling checks that every typed value stuck.
    a1.fill().await.expect("the first job's form fills");
    assert!(portal.step_times().step("engine number").is_some());
    a1.close().await;
    let stats = portal.pool_stats().expect("pooled");
    assert_eq!((stats.started, stats.replaced), (1, 0), "{stats:?}");

    // The second attempt gets the same browser, logged in afresh, and
    // finds none of it.
    let a2 = open(portal, 1, 1).await;
    assert_eq!(session_id(&a2), browser_1, "the same pooled browser");
    assert_eq!(portal.pool_stats().unwrap().reused, 1);
    let seen = leftovers(&a2).await;
    assert_eq!(seen["local"], Value::Null, "{seen}");
    assert_eq!(seen["session"], Value::Null, "{seen}");
    assert_eq!(seen["cookie"], false, "{seen}");
    assert!(!seen["indexeddb"].to_string().contains("fw-leak"), "{seen}");
    assert_eq!(seen["http_cache"], false, "{seen}");
    assert_eq!(
        seen["history"], history,
        "the tab's history holds no page of the first attempt: {seen}"
    );
    let cookies = cookie_names(&a2).await;
    assert!(!cookies.contains(&"fw_leak".to_string()), "{cookies:?}");
    for login in [SESSION_COOKIE, AUTH_COOKIE] {
        assert!(cookies.contains(&login.to_string()), "{cookies:?}");
    }
    let console = formwright::browser::evidence::capture(browser(&a2)).await;
    let console = serde_json::to_string(&console.console).unwrap();
    assert!(!console.contains("fw-leak"), "{console}");

    // What the first job typed is nowhere: not on the dashboard, not on a
    // fresh proposal form.
    let client = browser(&a2).client().unwrap().clone();
    let proposal = format!("{}/TwoWheeler/Proposal", rig.sim().url());
    client.goto(&proposal).await.expect("the proposal page");
    let page = client.source().await.expect("the page");
    for field in ["surname", "mobileNumber", "chassisNumber", "engineNumber"] {
        let value = first[field].as_str().unwrap();
        assert!(
            !page.contains(value),
            "{field} of the first job on the page"
        );
    }
    let engine_no = js(
        &a2,
        "const e = document.getElementById('txtEngineNo'); return e ? e.value : null;",
    )
    .await;
    assert!(
        engine_no.as_str().is_none_or(str::is_empty),
        "the engine number field holds {engine_no}"
    );
    a2.close().await;
    finish(rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_worn_and_dead_browsers_are_replaced_and_every_step_is_timed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rig = start(dir.path(), 2).await;
    let portal = rig.portal();

    // Two clean attempts share a browser; the second is its last (2).
    let a1 = open(portal, 0, 1).await;
    let first = session_id(&a1);
    a1.close().await;
    let a2 = open(portal, 0, 2).await;
    assert_eq!(session_id(&a2), first, "a clean browser is reused");
    a2.close().await;

    let mut a3 = open(portal, 0, 3).await;
    let third = session_id(&a3);
    assert_ne!(third, first, "replaced after its 2nd attempt");

    // A failed attempt (it kept evidence) does not hand its browser on.
    let _ = a3.evidence("test").await;
    a3.close().await;
    let a4 = open(portal, 0, 4).await;
    let fourth = session_id(&a4);
    assert_ne!(fourth, third, "replaced after a failed attempt");

    // A parked browser that died is found out and replaced.
    let pid = browser(&a4).browser_pid().expect("a local browser");
    a4.close().await;
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    let a5 = open(portal, 0, 5).await;
    assert_ne!(session_id(&a5), fourth, "a dead browser is replaced");
    a5.close().await;

    let stats = portal.pool_stats().unwrap();
    assert_eq!(stats.replaced, 3, "{stats:?}");
    assert_eq!(stats.reused, 1, "{stats:?}");

    let times = portal.step_times();
    for span in [CLONE, NAVIGATE, CHECK] {
        let step = times.step(span).unwrap_or_else(|| panic!("no {span} span"));
        assert_eq!(step.count, 5, "{step:?}");
        assert!(step.median > Duration::ZERO, "{step:?}");
    }
    finish(rig).await;
}

/// With a spare, the worker's next attempt does not wait for the wipe of the
/// browser it has just returned: the spare serves it while that one is
/// wiped in the background, and a wiped browser serves a later attempt
/// holding nothing of its last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spare_serves_while_a_returned_browser_is_wiped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rig = start_with_spare(dir.path(), 50, 1).await;
    let portal = rig.portal();
    let store = "localStorage.setItem('fw-leak', 'stored');
                 sessionStorage.setItem('fw-leak', 'stored');
                 document.cookie = 'fw_leak=stored; path=/; max-age=86400';";

    let a1 = open(portal, 0, 1).await;
    let first = session_id(&a1);
    js(&a1, store).await;
    a1.close().await;
    let a2 = open(portal, 1, 1).await;
    let second = session_id(&a2);
    assert_ne!(second, first, "the spare serves the next attempt");
    js(&a2, store).await;
    a2.close().await;

    // Whichever of the two is parked first serves the third attempt, and
    // both stored the same values.
    let a3 = open(portal, 2, 1).await;
    let third = session_id(&a3);
    assert!(
        third == first || third == second,
        "a pooled browser is reused"
    );
    let seen = leftovers(&a3).await;
    assert_eq!(seen["local"], Value::Null, "{seen}");
    assert_eq!(seen["session"], Value::Null, "{seen}");
    assert_eq!(seen["cookie"], false, "{seen}");
    let cookies = cookie_names(&a3).await;
    assert!(!cookies.contains(&"fw_leak".to_string()), "{cookies:?}");
    for login in [SESSION_COOKIE, AUTH_COOKIE] {
        assert!(cookies.contains(&login.to_string()), "{cookies:?}");
    }
    a3.close().await;
    let stats = portal.pool_stats().expect("pooled");
    assert_eq!(
        (stats.started, stats.replaced, stats.reused),
        (2, 0, 1),
        "{stats:?}"
    );
    finish(rig).await;
}

/// A parked browser waits on the dashboard, logged in: the next attempt
/// takes it there and confirms the session with the portal instead of
/// loading the page again, and still finds nothing of the attempt before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_browser_waits_logged_in_on_the_dashboard() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rig = start(dir.path(), 50).await;
    let portal = rig.portal();

    // The first browser preloads as it warms up.
    wait_for_preloads(portal, 1).await;
    let opened = now_ms();
    let a1 = open(portal, 0, 1).await;
    let first = session_id(&a1);
    assert!(
        page_loaded_at(&a1).await < opened,
        "the dashboard was loaded again for the attempt"
    );
    let shown = js(&a1, "return !!document.querySelector('#divMainMotors');").await;
    assert_eq!(shown, true, "the attempt starts on the dashboard");
    js(
        &a1,
        "localStorage.setItem('fw-leak', 'one'); document.cookie = 'fw_leak=one; path=/';",
    )
    .await;
    a1.close().await;

    wait_for_preloads(portal, 2).await;
    let opened = now_ms();
    let a2 = open(portal, 1, 1).await;
    assert_eq!(session_id(&a2), first, "the same pooled browser");
    assert!(page_loaded_at(&a2).await < opened, "loaded again");
    let seen = leftovers(&a2).await;
    assert_eq!(seen["local"], Value::Null, "{seen}");
    assert_eq!(seen["cookie"], false, "{seen}");
    let stats = portal.pool_stats().expect("pooled");
    assert_eq!((stats.preloads, stats.preloaded), (2, 2), "{stats:?}");
    // The background work is timed, apart from the attempts' spans.
    let times = portal.step_times();
    let preload = times.step(PRELOAD).expect("a preload span");
    assert_eq!((preload.count, preload.phase.as_str()), (2, POOL_PHASE));
    let wipe = times.step(WIPE).expect("a wipe span");
    assert_eq!((wipe.count, wipe.phase.as_str()), (1, POOL_PHASE));
    a2.close().await;
    finish(rig).await;
}

/// A preloaded dashboard is not used when the master has logged in again
/// since (the browser is wiped and given the new login), when the portal
/// no longer knows its session (the check says expired, as it would after
/// loading the page), or when it is older than the preload age (loaded
/// again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preload_of_an_old_login_an_expired_session_or_too_long_ago_is_not_used() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rig = start_with(dir.path(), |o| {
        o.pool_preload_max_age = Duration::from_secs(2);
    })
    .await;
    let portal = rig.portal();
    wait_for_preloads(portal, 1).await;
    let a0 = open(portal, 0, 1).await;
    let old_login = cookie_value(&a0, AUTH_COOKIE).await;
    a0.close().await;
    wait_for_preloads(portal, 2).await;

    // The master logs in again: the parked browser holds the old login.
    portal.recover(Level::Soft).await.expect("a soft recovery");
    let opened = now_ms();
    let a1 = open(portal, 1, 1).await;
    assert_ne!(
        cookie_value(&a1, AUTH_COOKIE).await,
        old_login,
        "the attempt carries the master's new login"
    );
    assert!(
        page_loaded_at(&a1).await >= opened,
        "the dashboard was loaded with the new login"
    );
    assert_eq!(portal.pool_stats().unwrap().preloaded, 1);
    a1.close().await;

    // The portal forgets every session after the browser preloaded: the
    // dashboard it shows looks logged in, the portal says otherwise.
    wait_for_preloads(portal, 3).await;
    rig.sim().faults().expire_sessions_now();
    let (id, doc) = job(2);
    let failure = match portal.open_attempt(&id, 1, &doc).await {
        Ok(_) => panic!("an attempt opened on a session the portal has expired"),
        Err(f) => f,
    };
    assert!(failure.is_session_expired(), "{failure}");
    assert_eq!(failure.stage, "clone check", "{failure}");
    // Taken preloaded, but not confirmed: not counted as served so.
    assert_eq!(portal.pool_stats().unwrap().preloaded, 1);

    // Logged in again; a preload older than its age is loaded again.
    portal.recover(Level::Soft).await.expect("a soft recovery");
    let a2 = open(portal, 3, 1).await;
    a2.close().await;
    let preloads = portal.pool_stats().unwrap().preloads;
    wait_for_preloads(portal, preloads + 1).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let opened = now_ms();
    let a3 = open(portal, 4, 1).await;
    assert!(
        page_loaded_at(&a3).await >= opened,
        "a preload older than its age was used as it is"
    );
    a3.close().await;
    finish(rig).await;
}
