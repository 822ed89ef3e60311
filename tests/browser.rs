//! The browser layer against real Chromium and a small fixture portal.
//!
//! No mocks: every test starts its own chromedriver (cheap) and browsers.
//! The `Driver` kills chromedriver's whole process group when dropped, and
//! masters and job browsers clean up on drop too, so a failing test leaves
//! no browser and no profile folder behind.

#[path = "browser/fixture.rs"]
mod fixture;

use std::path::Path;
use std::time::{Duration, Instant};

use formwright::browser::{
    BrowserConfig, CloneMode, Credentials, Driver, JobBrowser, LoginError, Master, Outputs,
    SessionCheck, StepFailure,
};
use formwright::captcha::{CaptchaSolver, SolverKind};
use formwright::profile::{FieldValues, Phase, Profile};
use serde_json::json;

use fixture::{lock, Fixture, PASSWORD, PERSISTENT_COOKIE, SESSION_COOKIE, USER};

const PROFILE: &str = r##"
name = "fixture"
base_url = "http://127.0.0.1:1"

[login]
url = "/Login/IMDLogin"
username = "#txtUserName"
password = "#txtPassword"
captcha_image = "#CaptchaImage"
captcha_input = "#CaptchaInputText"
submit = "#btnLogin"
error = ".validation-summary-errors"
logged_in_url_contains = "lgn="
type_pause_ms = 150
max_tries = 3
timeout_ms = 8000

[dashboard]
url = "/Home/Dashboard"
ready = "#divMainMotors"
logout = "#divLogout"
popup_close = "#divPopup .k-window-action"

[captcha]
method = "element"
selector = "#CaptchaText"
charset = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

[fields.product]
from = "product"
required = true

[fields.rto]
from = "rtoCityLocation"
required = true

[fields.title]
from = "proposerTitle"

[fields.purchase]
from = "purchaseDate"
kind = "date"

[fields.is_new]
from = "isNew"
kind = "bool"

[fields.engine]
from = "engineNumber"
required = true
personal = true

[fields.first_name]
from = "fullName"
personal = true

[[steps]]
name = "open form"
phase = "pre_submit"
action = "goto"
url = "/form"

[[steps]]
name = "product"
phase = "pre_submit"
action = "kendo_select"
list = "ddlProduct_listbox"
value = "{product}"

[[steps]]
name = "product shown"
phase = "pre_submit"
action = "expect_text"
selector = "#productText"
value = "{product}"

[[steps]]
name = "fetch idv"
phase = "pre_submit"
action = "click"
selector = "#btnFetchIdv"

[[steps]]
name = "calculate"
phase = "pre_submit"
action = "click"
selector = "#btnCalc"

[[steps]]
name = "premium"
phase = "pre_submit"
action = "expect_text"
selector = "#premium"
value = "1234"
timeout_ms = 3000

[[steps]]
name = "rto"
phase = "pre_submit"
action = "typeahead"
selector = "#txtRto"
value = "{rto}"
list = "#rtoList li.rto-item"

[[steps]]
name = "title"
phase = "pre_submit"
action = "select"
selector = "#ddlTitle"
value = "{title}"

[[steps]]
name = "purchase date"
phase = "pre_submit"
action = "set_date"
selector = "#dtPurchase"
value = "{purchase}"

[[steps]]
name = "new vehicle"
phase = "pre_submit"
action = "check"
selector = "#chkNew"
value = "{is_new}"

[[steps]]
name = "engine number"
phase = "pre_submit"
action = "type"
selector = "#txtEngine"
value = "{engine}"

[[steps]]
name = "confirm"
phase = "pre_submit"
action = "click"
selector = "#btnConfirm"

[[steps]]
name = "accept confirm"
phase = "pre_submit"
action = "accept_alert"

[[steps]]
name = "confirmed"
phase = "pre_submit"
action = "expect_text"
selector = "#confirmed"
value = "yes"
timeout_ms = 3000

[[steps]]
name = "no second alert"
phase = "pre_submit"
action = "accept_alert"
optional = true
timeout_ms = 300

[[steps]]
name = "client frame"
phase = "pre_submit"
action = "enter_frame"
selector = "#frmClient"

[[steps]]
name = "client first name"
phase = "pre_submit"
action = "type"
selector = "#txtFirstName"
value = "{first_name}"

[[steps]]
name = "save client"
phase = "pre_submit"
action = "click"
selector = "#btnSaveClient"

[[steps]]
name = "client saved"
phase = "pre_submit"
action = "expect_text"
selector = "#saved"
value = "saved"
timeout_ms = 3000

[[steps]]
name = "back"
phase = "pre_submit"
action = "leave_frame"

[[steps]]
name = "save"
phase = "submit"
action = "click"
selector = "#btnSave"

[[steps]]
name = "mask after save"
phase = "post_submit"
action = "wait_mask"

[[steps]]
name = "proposal number"
phase = "post_submit"
action = "read"
selector = "#ProposalNo"
into = "proposal_no"
timeout_ms = 5000
"##;

fn profile() -> Profile {
    Profile::from_toml_str(PROFILE).expect("the test profile loads")
}

fn job_document() -> serde_json::Value {
    json!({
        "product": "Two Wheeler",
        "rtoCityLocation": "KA-03 BANGALORE EAST",
        "proposerTitle": "Mrs.",
        "purchaseDate": "2026-11-20",
        "isNew": true,
        "engineNumber": "JF50E8012345",
        "fullName": "Arjun"
    })
}

fn credentials() -> Credentials {
    Credentials::new(USER, PASSWORD)
}

fn element_solver() -> CaptchaSolver {
    let p = profile();
    CaptchaSolver::from_config(p.captcha.as_ref().expect("captcha table")).expect("solver")
}

/// Fails (never skips) when the browser is not installed.
fn config(work: &Path) -> BrowserConfig {
    let config = BrowserConfig {
        work_dir: work.to_path_buf(),
        ..BrowserConfig::default()
    };
    for binary in [&config.chromium, &config.chromedriver] {
        assert!(
            binary.is_file(),
            "{} is missing: install the Debian packages `chromium` and `chromium-driver` \
             (apt-get install chromium chromium-driver) to run the browser tests",
            binary.display()
        );
    }
    config
}

/// One test's world: fixture portal, chromedriver, a work folder. Dropping
/// it stops chromedriver and with it every browser it started.
struct World {
    fixture: Fixture,
    driver: Driver,
    work: tempfile::TempDir,
    profile: Profile,
}

impl World {
    async fn new() -> World {
        // RUST_LOG=formwright=debug shows each step and browser event.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let work = tempfile::tempdir().expect("temp dir");
        let driver = Driver::start(&config(work.path()))
            .await
            .expect("chromedriver starts");
        World {
            fixture: fixture::start().await,
            driver,
            work,
            profile: profile(),
        }
    }

    fn base(&self) -> &str {
        &self.fixture.base_url
    }

    async fn master(&self) -> Master {
        Master::open(
            &self.driver,
            &self.profile,
            self.base(),
            self.work.path().join("master"),
        )
        .await
        .expect("master opens")
    }

    async fn logged_in_master(&self) -> Master {
        let mut master = self.master().await;
        master
            .login(&credentials(), &element_solver())
            .await
            .expect("master logs in");
        master
    }

    /// A clone of `master` running `profile`, found logged in by the
    /// session check, and the example job's fields.
    async fn checked_clone(
        &self,
        master: &Master,
        profile: &Profile,
        name: &str,
    ) -> (JobBrowser, FieldValues) {
        let mut job = JobBrowser::clone_from(
            &self.driver,
            master,
            profile,
            self.base(),
            self.work.path().join(name),
        )
        .await
        .expect("the clone opens");
        assert!(job.check_session().await.unwrap().is_valid());
        let fields = profile.extract(&job_document()).unwrap();
        (job, fields)
    }

    async fn clone_job(&self, master: &Master, name: &str) -> JobBrowser {
        JobBrowser::clone_from(
            &self.driver,
            master,
            &self.profile,
            self.base(),
            self.work.path().join(name),
        )
        .await
        .expect("clone opens")
    }
}

async fn cookie_names(job: &JobBrowser) -> Vec<String> {
    let mut names: Vec<String> = job
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

#[tokio::test]
async fn driver_starts_and_stops() {
    let work = tempfile::tempdir().unwrap();
    let mut driver = Driver::start(&config(work.path())).await.unwrap();
    let status = format!("{}status", driver.url());
    assert!(driver.pid().is_some());
    assert!(!driver.is_remote());

    let fixture = fixture::start().await;
    let master = Master::open(
        &driver,
        &profile(),
        &fixture.base_url,
        work.path().join("m"),
    )
    .await
    .unwrap();
    let chromium = master.browser_pid().expect("local browsers have a pid");
    assert!(Path::new(&format!("/proc/{chromium}")).exists());

    // Killing the driver takes its browsers down with it.
    driver.kill().await;
    let answered = tokio::net::TcpStream::connect(
        status
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap(),
    )
    .await;
    assert!(answered.is_err(), "chromedriver still listens");
    let started = Instant::now();
    while alive(chromium) && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(chromium), "chromium outlived its driver");
    drop(master);
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim().starts_with('Z'))
        .unwrap_or(false)
}

#[tokio::test]
async fn master_logs_in_and_closes_the_popup() {
    let w = World::new().await;
    let mut master = w.logged_in_master().await;
    assert!(master.is_logged_in().await.unwrap());
    assert!(master.user_agent().contains("Chrome"));

    // The popup shows 300 ms after the dashboard loads; login closed it.
    let client = master.client().unwrap().clone();
    client
        .goto(&format!("{}/Home/Dashboard", w.base()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let names: Vec<String> = master
        .cookies()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert!(names.contains(&SESSION_COOKIE.to_string()), "{names:?}");
    master.close().await.unwrap();
    assert!(
        w.work.path().join("master").exists(),
        "the master profile persists"
    );
}

#[tokio::test]
async fn login_retries_a_refused_captcha_but_not_a_bad_password() {
    let w = World::new().await;
    lock(&w.fixture.portal).refuse_captchas = 2;
    let mut master = w.master().await;
    master
        .login(&credentials(), &element_solver())
        .await
        .unwrap();
    assert_eq!(lock(&w.fixture.portal).login_posts, 3);

    lock(&w.fixture.portal).refuse_captchas = 3;
    let err = master
        .login(&credentials(), &element_solver())
        .await
        .unwrap_err();
    assert!(
        matches!(err, LoginError::CaptchaTries { tries: 3, .. }),
        "{err}"
    );

    let posts = lock(&w.fixture.portal).login_posts;
    let wrong = Credentials::new(USER, "wrong");
    let err = master.login(&wrong, &element_solver()).await.unwrap_err();
    assert!(matches!(err, LoginError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains("Invalid user name or password"),
        "{err}"
    );
    assert_eq!(
        lock(&w.fixture.portal).login_posts,
        posts + 1,
        "a bad password is not retried"
    );
    assert!(!format!("{wrong:?}").contains("wrong\""));
    master.close().await.unwrap();
}

#[tokio::test]
async fn http_and_command_solvers_get_the_captcha_image_from_the_browser() {
    let w = World::new().await;
    let mut master = w.master().await;

    let mut http = CaptchaSolver::new(SolverKind::Http {
        url: format!("{}/solve", w.base()),
    });
    http.charset = Some("ABCDEFGHJKLMNPQRSTUVWXYZ23456789".into());
    master.login(&credentials(), &http).await.unwrap();
    // The canvas capture keeps the image's natural size (the page shows it
    // at twice that).
    assert_eq!(lock(&w.fixture.portal).solved_images, vec![(120, 40)]);

    // A stand-in OCR program: checks it was handed a PNG file, then prints
    // the answer the fixture keeps (a real one would read the pixels).
    let answer_file = w.work.path().join("answer.txt");
    let command = CaptchaSolver::new(SolverKind::Command {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "head -c 8 \"$1\" | grep -q PNG && cat \"$2\"".into(),
            "ocr".into(),
            "{image}".into(),
            answer_file.display().to_string(),
        ],
    });
    let mut master2 = Master::open(&w.driver, &w.profile, w.base(), w.work.path().join("m2"))
        .await
        .unwrap();
    master2
        .client()
        .unwrap()
        .goto(&format!("{}/Login/IMDLogin", w.base()))
        .await
        .unwrap();
    // The login reloads the page (new captcha); answer the one it will see.
    let portal = w.fixture.portal.clone();
    let file = answer_file.clone();
    let writer = tokio::spawn(async move {
        let mut last = String::new();
        loop {
            let now = lock(&portal).last_captcha.clone();
            if now != last {
                std::fs::write(&file, &now).unwrap();
                last = now;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let result = master2.login(&credentials(), &command).await;
    writer.abort();
    result.unwrap();
    master2.close().await.unwrap();
    master.close().await.unwrap();
}

#[tokio::test]
async fn clone_carries_the_login_right_after_it() {
    let w = World::new().await;
    let master = w.logged_in_master().await;

    // Seconds after the login: Chromium has not written cookies to disk
    // yet, so only the WebDriver transfer can carry them.
    let mut job = w.clone_job(&master, "job1").await;
    assert_eq!(job.mode(), CloneMode::ProfileCopyAndCookies);
    let check = job.check_session().await.unwrap();
    assert!(check.is_valid(), "{check:?}");
    assert!(check.elapsed() < Duration::from_secs(2), "{check:?}");
    let names = cookie_names(&job).await;
    assert!(names.contains(&SESSION_COOKIE.to_string()), "{names:?}");
    assert!(names.contains(&PERSISTENT_COOKIE.to_string()), "{names:?}");
    eprintln!("valid clone decided in {:?}", check.elapsed());

    let dir = job.job_dir().to_path_buf();
    assert!(dir.join("profile").exists());
    job.close().await.unwrap();
    assert!(!dir.exists(), "the job folder is deleted on close");
    master.close().await.unwrap();
}

#[tokio::test]
async fn an_expired_clone_is_detected_quickly() {
    let w = World::new().await;
    let mut master = w.logged_in_master().await;
    let mut job = w.clone_job(&master, "job1").await;

    lock(&w.fixture.portal).expire_all();
    let started = Instant::now();
    let check = job.check_session().await.unwrap();
    let wall = started.elapsed();
    assert!(matches!(check, SessionCheck::Expired { .. }), "{check:?}");
    assert!(check.elapsed() < Duration::from_secs(2), "{check:?}");
    assert!(wall < Duration::from_secs(2), "{wall:?}");
    eprintln!("expired clone decided in {:?}", check.elapsed());

    assert!(!master.is_logged_in().await.unwrap());
    job.close().await.unwrap();
    master.close().await.unwrap();
}

/// The session dies while a form is being filled: the next page is the
/// login form, and a step waiting on the page (for an element, a text, or
/// a type-ahead suggestion) ends at once, saying the session expired,
/// rather than at its 15 s timeout.
#[tokio::test]
async fn a_session_that_dies_mid_form_ends_the_step_at_once() {
    let w = World::new().await;
    let mut master = w.logged_in_master().await;
    // The type-ahead types into a field the login page has, so its wait for
    // a suggestion is what meets the login form.
    let waits = [
        (
            "branch list",
            r##"action = "wait_for"
selector = "#ddlBranch""##,
        ),
        (
            "state matches",
            r##"action = "expect_text"
selector = "#lblState"
value = "Maharashtra""##,
        ),
        (
            "make and model",
            r##"action = "typeahead"
selector = "#txtUserName"
list = "ul#makeModelList li"
value = "Honda Activa""##,
        ),
    ];
    for (name, wait) in waits {
        // Not the URL the session check loads, so it is loaded again and
        // meets the expired session.
        let profile = profile_with(&format!(
            r##"
[[steps]]
name = "open dashboard"
phase = "pre_submit"
action = "goto"
url = "/Home/Dashboard?from=menu"

[[steps]]
name = "{name}"
phase = "pre_submit"
timeout_ms = 15000
{wait}
"##
        ));
        let (mut job, fields) = w.checked_clone(&master, &profile, "mid-form").await;

        lock(&w.fixture.portal).expire_all();
        let started = Instant::now();
        let err = job
            .run_phase(Phase::PreSubmit, &fields, &mut Outputs::new())
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(err.failure, StepFailure::LoggedOut { .. }),
            "{name}: {err}"
        );
        assert_eq!(err.step, name);
        assert!(
            took < Duration::from_secs(3),
            "{name}: noticed after {took:?}"
        );
        eprintln!("mid-form expiry noticed in {took:?}: {err}");
        job.close().await.unwrap();
        master
            .login(&credentials(), &element_solver())
            .await
            .expect("logged in again");
    }
    master.close().await.unwrap();
}

/// The session check has just loaded the dashboard and found it logged in:
/// an attempt whose first step opens the dashboard does not load it again,
/// while a later step that opens it does.
#[tokio::test]
async fn a_first_step_opening_the_checked_dashboard_does_not_reload_it() {
    let w = World::new().await;
    let master = w.logged_in_master().await;
    let profile = goto_then_wait("/Home/Dashboard", "menu", "#divMainMotors");
    let (mut job, fields) = w.checked_clone(&master, &profile, "no-reload").await;
    let client = job.client().unwrap().clone();
    let marked = "window.fwMarker = 'checked'; return window.fwMarker;";
    assert_eq!(client.execute(marked, vec![]).await.unwrap(), "checked");
    let marker = "return window.fwMarker || null;";

    job.run_phase(Phase::PreSubmit, &fields, &mut Outputs::new())
        .await
        .expect("the steps run");
    let kept = client.execute(marker, vec![]).await.unwrap();
    assert_eq!(kept, "checked", "the checked page was loaded again");

    // Only right after the check: the next run opens the page afresh.
    job.run_phase(Phase::PreSubmit, &fields, &mut Outputs::new())
        .await
        .expect("the steps run again");
    let kept = client.execute(marker, vec![]).await.unwrap();
    assert_eq!(
        kept,
        serde_json::Value::Null,
        "the dashboard was not opened"
    );
    job.close().await.unwrap();
    master.close().await.unwrap();
}

#[tokio::test]
async fn every_step_action_runs() {
    let w = World::new().await;
    let master = w.logged_in_master().await;
    let mut job = w.clone_job(&master, "job1").await;
    let fields = w.profile.extract(&job_document()).unwrap();
    let mut outputs = Outputs::new();

    let timings = job
        .run_phase(Phase::PreSubmit, &fields, &mut outputs)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(timings.len(), w.profile.steps_of(Phase::PreSubmit).count());
    let skipped: Vec<&str> = timings
        .iter()
        .filter(|t| t.skipped)
        .map(|t| t.step.as_str())
        .collect();
    assert_eq!(skipped, vec!["no second alert"]);

    let client = job.client().unwrap().clone();
    let read = |js: &'static str| {
        let client = client.clone();
        async move { client.execute(js, vec![]).await.unwrap() }
    };
    assert_eq!(
        read("return document.getElementById('RtoCode').value").await,
        "KA-03"
    );
    assert_eq!(
        read("return document.getElementById('titleEcho').textContent").await,
        "vMrs."
    );
    assert_eq!(
        read("return document.getElementById('dateEcho').textContent").await,
        "2026-11-20"
    );
    assert_eq!(
        read("return document.getElementById('chkNew').checked").await,
        true
    );
    assert_eq!(
        read("return document.getElementById('txtEngine').value").await,
        "JF50E8012345"
    );

    // The submit phase only runs through prepare/click, never run_phase.
    let refused = job
        .run_phase(Phase::Submit, &fields, &mut outputs)
        .await
        .unwrap_err();
    assert_eq!(refused.failure, StepFailure::NotPrepared);

    job.prepare_submit(&fields).await.unwrap();
    assert!(lock(&w.fixture.portal).proposals.is_empty());
    job.click_submit().await.unwrap();
    job.run_phase(Phase::PostSubmit, &fields, &mut outputs)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outputs.proposal_no(), Some("P-0001"));
    assert_eq!(
        lock(&w.fixture.portal).proposals.len(),
        1,
        "one click, one proposal"
    );

    // The submit click is not repeatable without a new preparation.
    let again = job.click_submit().await.unwrap_err();
    assert_eq!(again.failure, StepFailure::NotPrepared);
    assert_eq!(lock(&w.fixture.portal).proposals.len(), 1);

    // Hover opens the CSS menu whose link is then clickable.
    let hover = Profile::from_toml_str(&format!(
        "{}\n{}",
        PROFILE.split("[[steps]]").next().unwrap(),
        r##"
[[steps]]
name = "dashboard"
phase = "pre_submit"
action = "goto"
url = "/Home/Dashboard"

[[steps]]
name = "menu"
phase = "pre_submit"
action = "hover"
selector = "#divMainMotors"

[[steps]]
name = "two wheeler"
phase = "pre_submit"
action = "click"
selector = "#lnkTwoWheeler"
timeout_ms = 2000

[[steps]]
name = "picked"
phase = "pre_submit"
action = "expect_text"
selector = "#picked"
value = "Two Wheeler"

[[steps]]
name = "save"
phase = "submit"
action = "click"
selector = "#x"
"##
    ))
    .unwrap();
    let mut hover_job = JobBrowser::clone_from(
        &w.driver,
        &master,
        &hover,
        w.base(),
        w.work.path().join("job2"),
    )
    .await
    .unwrap();
    hover_job
        .run_phase(Phase::PreSubmit, &fields, &mut Outputs::new())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    hover_job.close().await.unwrap();
    job.close().await.unwrap();
    master.close().await.unwrap();
}

/// A profile of the fixture's login with the given steps.
/// A profile whose attempt opens `url`, then waits (15 s at most) for
/// `selector` in a step named `name`.
fn goto_then_wait(url: &str, name: &str, selector: &str) -> Profile {
    profile_with(&format!(
        r##"
[[steps]]
name = "open dashboard"
phase = "pre_submit"
action = "goto"
url = "{url}"

[[steps]]
name = "{name}"
phase = "pre_submit"
action = "wait_for"
selector = "{selector}"
timeout_ms = 15000
"##
    ))
}

fn profile_with(steps: &str) -> Profile {
    let head = PROFILE.split("[[steps]]").next().unwrap();
    let submit = "\n[[steps]]\nname = \"save\"\nphase = \"submit\"\naction = \"click\"\nselector = \"#btnSave\"\n";
    Profile::from_toml_str(&format!("{head}{steps}{submit}")).unwrap()
}

#[tokio::test]
async fn step_failures_name_the_step_and_selector() {
    let w = World::new().await;
    let master = w.master().await;
    let profile = profile_with(
        r##"
[[steps]]
name = "open form"
phase = "pre_submit"
action = "goto"
url = "/form"

[[steps]]
name = "maybe banner"
phase = "pre_submit"
action = "wait_for"
selector = "#banner"
optional = true
timeout_ms = 300

[[steps]]
name = "branch list"
phase = "pre_submit"
action = "wait_for"
selector = "#ddlBranch"
timeout_ms = 500
"##,
    );
    let mut job = JobBrowser::clone_from(
        &w.driver,
        &master,
        &profile,
        w.base(),
        w.work.path().join("j"),
    )
    .await
    .unwrap();
    let fields = profile.extract(&job_document()).unwrap();
    let started = Instant::now();
    let err = job
        .run_phase(Phase::PreSubmit, &fields, &mut Outputs::new())
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.step, "branch list");
    assert_eq!(err.selector.as_deref(), Some("#ddlBranch"));
    assert!(err.is_missing());
    assert_eq!(
        err.to_string().split(':').next().unwrap(),
        "step \"branch list\" (wait_for #ddlBranch)"
    );

    // Text mismatch names what was expected; a personal value is not shown.
    let profile = profile_with(
        r##"
[[steps]]
name = "open form"
phase = "pre_submit"
action = "goto"
url = "/form"

[[steps]]
name = "engine shown"
phase = "pre_submit"
action = "expect_text"
selector = "#premium"
value = "{engine}"
timeout_ms = 300
"##,
    );
    let mut job2 = JobBrowser::clone_from(
        &w.driver,
        &master,
        &profile,
        w.base(),
        w.work.path().join("j2"),
    )
    .await
    .unwrap();
    let err = job2
        .run_phase(Phase::PreSubmit, &fields, &mut Outputs::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err.failure, StepFailure::TextMismatch { .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("JF50E8012345"), "{err}");

    // A browser that died is reported as gone.
    let pid = job2.browser_pid().unwrap();
    unsafe_kill(pid);
    let err = job2
        .run_phase(Phase::PreSubmit, &fields, &mut Outputs::new())
        .await
        .unwrap_err();
    assert!(err.is_browser_gone(), "{err}");
    job2.close().await.ok();
    job.close().await.unwrap();
    master.close().await.unwrap();
}

fn unsafe_kill(pid: u32) {
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
}

/// Evidence from a live browser holds the page; from a dead one it holds
/// no picture but says why, and taking it neither fails nor hangs.
#[tokio::test]
async fn evidence_from_a_dead_browser_says_why_it_is_missing() {
    let w = World::new().await;
    let master = w.logged_in_master().await;
    let mut job = w.clone_job(&master, "evidence").await;
    assert!(job.check_session().await.unwrap().is_valid());

    let live = formwright::browser::evidence::capture(&job).await;
    assert!(live.missing.is_empty(), "{:?}", live.missing);
    assert!(fixture::png_size(live.png.as_deref().unwrap()).is_some());
    assert!(live.html.as_deref().unwrap().contains("</html>"));
    assert!(live.url.as_deref().unwrap().starts_with("http://127.0.0.1"));

    unsafe_kill(job.browser_pid().unwrap());
    let started = Instant::now();
    let dead = formwright::browser::evidence::capture(&job).await;
    assert!(started.elapsed() < Duration::from_secs(35), "capture hung");
    assert!(dead.png.is_none() && dead.html.is_none());
    assert!(!dead.missing.is_empty(), "no reason given: {dead:?}");
    let why = dead.missing.join("; ");
    assert!(why.contains("screenshot") || why.contains("png"), "{why}");
    eprintln!("dead browser's evidence: {why}");
    job.close().await.ok();
    master.close().await.unwrap();
}

#[tokio::test]
async fn a_dropped_job_browser_leaves_nothing_behind() {
    let w = World::new().await;
    let master = w.master().await;
    let job = w.clone_job(&master, "dropped").await;
    let dir = job.job_dir().to_path_buf();
    let pid = job.browser_pid().unwrap();
    assert!(dir.exists());
    drop(job);
    assert!(!dir.exists(), "the job folder is deleted on drop");
    let started = Instant::now();
    while alive(pid) && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(pid), "the dropped job's browser still runs");
    master.close().await.unwrap();
}

#[tokio::test]
async fn a_remote_clone_works_by_cookies_alone() {
    let w = World::new().await;
    let remote = BrowserConfig {
        webdriver_url: Some(w.driver.url().to_string()),
        ..config(w.work.path())
    };
    let driver = Driver::start(&remote).await.unwrap();
    assert!(driver.is_remote());

    let mut master = Master::open(&driver, &w.profile, w.base(), w.work.path().join("unused"))
        .await
        .unwrap();
    master
        .login(&credentials(), &element_solver())
        .await
        .unwrap();
    let mut job = JobBrowser::clone_from(
        &driver,
        &master,
        &w.profile,
        w.base(),
        w.work.path().join("rjob"),
    )
    .await
    .unwrap();
    assert_eq!(job.mode(), CloneMode::CookiesOnly);
    assert!(
        !job.job_dir().join("profile").exists(),
        "no profile copy in remote mode"
    );
    let check = job.check_session().await.unwrap();
    assert!(check.is_valid(), "{check:?}");
    let names = cookie_names(&job).await;
    assert!(names.contains(&PERSISTENT_COOKIE.to_string()), "{names:?}");
    job.close().await.unwrap();
    master.close().await.unwrap();
}
