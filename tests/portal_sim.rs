//! The simulated portal over plain HTTP: login and captcha, sessions,
//! the proposal flow and its validation, every fault switch, the admin
//! endpoints, the captcha's OCR rate, the profiles and the example jobs.
//!
//! No browser: a small cookie-keeping client stands in for one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use formwright::portal_sim::{AfterSave, LedgerEntry, PortalSim, SimConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

// ---- a tiny browser ----------------------------------------------------------

struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn location(&self) -> String {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }

    fn is_login_form(&self) -> bool {
        self.status == 200 && self.text().contains("id=\"txtUserName\"")
    }
}

fn encode(pairs: &[(&str, &str)]) -> String {
    fn part(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", part(k), part(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Clone)]
struct Browser {
    addr: String,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new(sim: &PortalSim) -> Self {
        Self {
            addr: sim.url().trim_start_matches("http://").to_owned(),
            cookies: BTreeMap::new(),
        }
    }

    async fn try_send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>> {
        let stream = tokio::net::TcpStream::connect(&self.addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.addr)
            .header("cookie", cookie);
        if body.is_some() {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        let answer = Answer {
            status,
            headers,
            body,
        };
        for c in answer.set_cookies() {
            let pair = c.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        Ok(answer)
    }

    /// GET without following a redirect.
    async fn get_raw(&mut self, path: &str) -> Answer {
        self.try_send("GET", path, None)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// GET, following redirects as a browser does.
    async fn get(&mut self, path: &str) -> Answer {
        let mut answer = self.get_raw(path).await;
        for _ in 0..5 {
            if answer.status != 302 {
                break;
            }
            answer = self.get_raw(&answer.location()).await;
        }
        answer
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.try_send("POST", path, Some(encode(form)))
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    fn session_cookie(&self) -> String {
        self.cookies
            .get("ASP.NET_SessionId")
            .cloned()
            .expect("session cookie")
    }

    /// Opens the login page and posts the form; `captcha` None means the
    /// right answer.
    async fn try_login(
        &mut self,
        sim: &PortalSim,
        password: &str,
        captcha: Option<&str>,
    ) -> Answer {
        let page = self.get("/Login/IMDLogin").await;
        assert!(page.is_login_form());
        let answer = sim
            .captcha_answer_for_tests(&self.session_cookie())
            .expect("captcha answer");
        let captcha = captcha.map(str::to_owned).unwrap_or(answer);
        self.post(
            "/Login/IMDLogin",
            &[
                ("UserName", "agent01"),
                ("Password", password),
                ("CaptchaInputText", &captcha),
            ],
        )
        .await
    }

    async fn login(&mut self, sim: &PortalSim) {
        let answer = self.try_login(sim, "sim-password", None).await;
        assert_eq!(answer.status, 302, "login failed: {}", answer.text());
    }
}

async fn start() -> PortalSim {
    PortalSim::start(SimConfig::default())
        .await
        .expect("sim starts")
}

// ---- a proposal's forms --------------------------------------------------------

fn client_form() -> Vec<(&'static str, String)> {
    [
        ("Salutation", "Mr."),
        ("FirstName", "Arjun"),
        ("LastName", "Mehta"),
        ("DateOfBirth", "17/04/1988"),
        ("Gender", "Male"),
        ("MobileNo", "9000012345"),
        ("EmailId", "arjun.mehta@example.com"),
        ("FlatNo", "12B"),
        ("FloorNo", "2"),
        ("PremisesName", "Lakshmi Residency"),
        ("RoadName", "4th Cross Road"),
        ("AreaName", "Indiranagar"),
        ("Pincode", "560038"),
        ("City", "BENGALURU"),
        ("StateCode", "KA"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

fn proposal_form(client_id: &str) -> Vec<(&'static str, String)> {
    [
        ("ProductCode", "2311"),
        ("BranchCode", "101"),
        ("ClientId", client_id),
        ("MakeModel", "HONDA ACTIVA 6G STD"),
        ("MakeModelCode", "HON001"),
        ("RTOCity", "KA-03 BANGALORE EAST"),
        ("RTOCode", "KA03"),
        ("MfgMonth", "10"),
        ("MfgYear", "2026"),
        ("EngineNo", "JF50E8012345"),
        ("ChassisNo", "ME4JF50A8RT012345"),
        ("PurchaseDate", "20/11/2026"),
        ("RegistrationDate", "25/11/2026"),
        ("IsNewVehicle", "true"),
        ("RegistrationNo", ""),
        ("IsHypothecated", "true"),
        ("FinancierType", "Hypothecation"),
        ("FinancierName", "HDFC BANK LTD"),
        ("FinancierCode", "F001"),
        ("FinancierAddress", "Indiranagar, Bengaluru"),
        ("IDV", "72000"),
        ("ZeroDep", "true"),
        ("PACover", "true"),
        ("TPPD", "false"),
        ("ODDiscount", "10"),
        ("QuoteId", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

fn pairs<'a>(form: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    form.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn set(form: &mut [(&'static str, String)], key: &str, value: &str) {
    let slot = form.iter_mut().find(|(k, _)| *k == key).expect("field");
    slot.1 = value.to_owned();
}

/// Saves the client and calculates the premium; returns the proposal form
/// ready to save.
async fn prepare(
    b: &mut Browser,
    client: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let saved = b.post("/Client/SaveClient", &pairs(client)).await.json();
    assert_eq!(saved["ok"], true, "client refused: {saved}");
    let client_id = saved["clientId"].as_str().expect("client id").to_owned();
    let mut form = proposal_form(&client_id);
    let quote = b
        .post("/TwoWheeler/CalculatePremium", &pairs(&form))
        .await
        .json();
    assert_eq!(quote["ok"], true, "premium refused: {quote}");
    set(
        &mut form,
        "QuoteId",
        quote["quoteId"].as_str().expect("quote"),
    );
    form
}

async fn save(b: &mut Browser, form: &[(&'static str, String)]) -> Answer {
    b.post("/TwoWheeler/SaveProposal", &pairs(form)).await
}

// ---- login and sessions ---------------------------------------------------------

#[tokio::test]
async fn login_with_right_captcha_reaches_dashboard_with_marker_and_cookies() {
    let sim = start().await;
    let mut b = Browser::new(&sim);
    let pre_login = {
        b.get("/Login/IMDLogin").await;
        b.session_cookie()
    };

    let answer = b.try_login(&sim, "sim-password", None).await;
    assert_eq!(answer.status, 302);
    assert!(
        answer.location().starts_with("/Home/Dashboard?lgn="),
        "{}",
        answer.location()
    );
    let cookies = answer.set_cookies();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("ASP.NET_SessionId="))
        .expect("session");
    assert!(
        session.contains("HttpOnly") && !session.contains("expires"),
        "{session}"
    );
    let auth = cookies
        .iter()
        .find(|c| c.starts_with(".ASPXAUTH="))
        .expect("auth");
    assert!(
        auth.contains("HttpOnly") && auth.contains("expires="),
        "{auth}"
    );
    assert_ne!(
        b.session_cookie(),
        pre_login,
        "session id must change at login"
    );
    assert_eq!(sim.active_sessions(), 1);

    let first = b.get(&answer.location()).await.text();
    assert!(first.contains("id=\"divMainMotors\"") && first.contains("id=\"divLogout\""));
    assert!(first.contains("id=\"lnkTwoWheeler\"") && first.contains(">Two Wheeler<"));
    assert!(
        first.contains("id=\"divPopup\""),
        "notice shows after login"
    );
    let bare = b.get_raw("/Home/Dashboard").await;
    assert_eq!(bare.status, 302, "the bare dashboard URL gains the marker");
    assert_eq!(bare.location(), answer.location());
    let second = b.get(&answer.location()).await.text();
    assert!(!second.contains("id=\"divPopup\""), "notice shows once");
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_captcha_and_wrong_password_are_refused_with_the_portals_messages() {
    let sim = start().await;
    let mut b = Browser::new(&sim);

    let answer = b.try_login(&sim, "sim-password", Some("WRONG")).await;
    assert!(answer.is_login_form());
    let page = answer.text();
    assert!(page.contains("validation-summary-errors") && page.contains("Captcha is not valid"));
    assert!(
        sim.captcha_answer_for_tests(&b.session_cookie()).is_some(),
        "new captcha"
    );

    let answer = b.try_login(&sim, "nope", None).await;
    assert!(answer.is_login_form());
    assert!(answer.text().contains("Invalid username or password"));
    assert_eq!(sim.active_sessions(), 0);

    // A captcha answer works once only.
    b.get("/Login/IMDLogin").await;
    let captcha = sim
        .captcha_answer_for_tests(&b.session_cookie())
        .expect("captcha");
    let form = [
        ("UserName", "agent01"),
        ("Password", "sim-password"),
        ("CaptchaInputText", captcha.as_str()),
    ];
    b.post(
        "/Login/IMDLogin",
        &[
            ("UserName", "x"),
            ("Password", "y"),
            ("CaptchaInputText", "Z"),
        ],
    )
    .await;
    let replay = b.post("/Login/IMDLogin", &form).await;
    assert!(replay.text().contains("Captcha is not valid"));
    sim.shutdown().await;
}

#[tokio::test]
async fn captcha_image_is_a_png() {
    let sim = start().await;
    let mut b = Browser::new(&sim);
    b.get("/Login/IMDLogin").await;
    let img = b.get("/Login/CaptchaImage").await;
    assert_eq!(img.status, 200);
    assert_eq!(
        img.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"image/png"[..])
    );
    assert_eq!(&img.body[..8], b"\x89PNG\r\n\x1a\n");
    sim.shutdown().await;
}

#[tokio::test]
async fn idle_session_expires_to_the_login_form_with_200() {
    let sim = PortalSim::start(SimConfig {
        idle_timeout: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let mut b = Browser::new(&sim);
    b.login(&sim).await;
    assert!(b
        .get("/TwoWheeler/Proposal")
        .await
        .text()
        .contains("id=\"frmProposal\""));

    tokio::time::sleep(Duration::from_millis(500)).await;
    let page = b.get("/TwoWheeler/Proposal").await;
    assert!(page.is_login_form(), "status {}", page.status);
    assert!(page.text().contains("session has expired"));
    assert_eq!(sim.active_sessions(), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn no_session_at_all_gets_the_login_form_everywhere() {
    let sim = start().await;
    let mut b = Browser::new(&sim);
    for path in [
        "/Home/Dashboard",
        "/TwoWheeler/Proposal",
        "/Client/ClientDetails",
        "/Master/MakeModels?q=hon",
    ] {
        let page = b.get(path).await;
        assert!(page.is_login_form(), "{path}: {}", page.status);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_cloned_cookie_pair_is_logged_in_and_logout_ends_it() {
    let sim = start().await;
    let mut master = Browser::new(&sim);
    master.login(&sim).await;
    let mut clone = Browser::new(&sim);
    clone.cookies = master.cookies.clone();
    assert!(clone
        .get("/Home/Dashboard")
        .await
        .text()
        .contains("divMainMotors"));

    // The session cookie alone is not enough.
    let mut half = Browser::new(&sim);
    half.cookies
        .insert("ASP.NET_SessionId".into(), master.session_cookie());
    assert!(half.get("/Home/Dashboard").await.is_login_form());

    master.get("/Login/Logout").await;
    assert!(clone.get("/Home/Dashboard").await.is_login_form());
    sim.shutdown().await;
}

// ---- the proposal flow ---------------------------------------------------------------

#[tokio::test]
async fn saving_records_the_proposal_with_every_field_in_the_ledger() {
    let sim = start().await;
    let mut b = Browser::new(&sim);
    b.login(&sim).await;

    let branches = b
        .get("/TwoWheeler/GetBranches?productCode=2311")
        .await
        .json();
    assert!(branches.as_array().is_some_and(|a| !a.is_empty()));
    let pin = b.get("/Master/Pincode?pincode=560038").await.json();
    assert_eq!(pin["state"], "KARNATAKA");
    let models = b.get("/Master/MakeModels?q=activa").await.json();
    assert!(models.to_string().contains("HONDA ACTIVA 6G STD"));
    assert_eq!(
        b.get("/Master/MakeModels?q=ac").await.json(),
        serde_json::json!([])
    );

    let form = prepare(&mut b, &client_form()).await;
    let saved = save(&mut b, &form).await.json();
    assert_eq!(saved["ok"], true, "{saved}");
    let number = saved["proposalNo"].as_str().expect("number").to_owned();
    assert!(
        number.starts_with('R') && number[1..].chars().all(|c| c.is_ascii_digit()),
        "{number}"
    );

    let ledger = sim.ledger();
    assert_eq!(ledger.len(), 1);
    let entry = &ledger[0];
    assert_eq!(entry.proposal_no, number);
    for (k, v) in client_form().iter().chain(form.iter()) {
        assert_eq!(entry.fields.get(*k), Some(v), "field {k}");
    }
    assert!(entry.total_premium > 0);

    let link = b
        .post("/TwoWheeler/SendPaymentLink", &[("ProposalNo", &number)])
        .await
        .json();
    assert_eq!(link["ok"], true);
    assert!(link["message"]
        .as_str()
        .unwrap_or_default()
        .contains("Payment link sent"));
    assert!(sim.ledger()[0].payment_link_sent);

    // Saving again makes a second proposal: the portal does not stop
    // duplicates, which is why formwright must.
    assert_eq!(save(&mut b, &form).await.json()["ok"], true);
    assert_eq!(sim.ledger().len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn client_validation_names_each_bad_field() {
    let sim = start().await;
    let mut b = Browser::new(&sim);
    b.login(&sim).await;
    let mut client = client_form();
    set(&mut client, "MobileNo", "98765");
    set(&mut client, "Pincode", "5600");
    set(&mut client, "DateOfBirth", "2030-01-01");
    let answer = b.post("/Client/SaveClient", &pairs(&client)).await.json();
    assert_eq!(answer["ok"], false);
    let fields: Vec<&str> = answer["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["DateOfBirth", "MobileNo", "Pincode"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn validation_errors_and_a_missing_or_stale_premium_block_the_save() {
    let sim = start().await;
    let mut b = Browser::new(&sim);
    b.login(&sim).await;
    let form = prepare(&mut b, &client_form()).await;

    let mut no_quote = form.clone();
    set(&mut no_quote, "QuoteId", "");
    let answer = save(&mut b, &no_quote).await.json();
    assert_eq!(answer["ok"], false);
    assert!(answer.to_string().contains("calculate the premium"));

    let mut no_engine = form.clone();
    set(&mut no_engine, "EngineNo", "");
    let answer = save(&mut b, &no_engine).await.json();
    assert_eq!(answer["errors"][0]["field"], "EngineNo", "{answer}");

    let mut stale = form.clone();
    set(&mut stale, "IDV", "70000");
    let answer = save(&mut b, &stale).await.json();
    assert!(answer.to_string().contains("calculate again"), "{answer}");

    let mut out_of_range = form.clone();
    set(&mut out_of_range, "IDV", "10000");
    let answer = b
        .post("/TwoWheeler/CalculatePremium", &pairs(&out_of_range))
        .await
        .json();
    assert_eq!(answer["errors"][0]["field"], "IDV", "{answer}");

    assert!(sim.ledger().is_empty());
    sim.shutdown().await;
}

// ---- fault switches -----------------------------------------------------------------

#[tokio::test]
async fn fail_next_logins_fails_exactly_that_many() {
    let sim = start().await;
    sim.faults().fail_next_logins(2);
    let mut b = Browser::new(&sim);
    for _ in 0..2 {
        let answer = b.try_login(&sim, "sim-password", None).await;
        assert!(answer.text().contains("Login failed"), "{}", answer.status);
    }
    b.login(&sim).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn fail_all_logins_fails_until_turned_off() {
    let sim = start().await;
    sim.faults().fail_all_logins(true);
    let mut b = Browser::new(&sim);
    for _ in 0..3 {
        assert!(b
            .try_login(&sim, "sim-password", None)
            .await
            .is_login_form());
    }
    sim.faults().fail_all_logins(false);
    b.login(&sim).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn expire_sessions_now_logs_everyone_out() {
    let sim = start().await;
    let mut a = Browser::new(&sim);
    let mut b = Browser::new(&sim);
    a.login(&sim).await;
    b.login(&sim).await;
    assert_eq!(sim.active_sessions(), 2);
    assert_eq!(sim.faults().expire_sessions_now(), 2);
    assert!(a.get("/Home/Dashboard").await.is_login_form());
    assert!(b
        .get("/Master/Pincode?pincode=560038")
        .await
        .is_login_form());
    sim.shutdown().await;
}

#[tokio::test]
async fn expire_every_nth_save_logs_out_once_that_proposal_is_through() {
    let sim = start().await;
    sim.faults().expire_sessions_every(2);
    let mut b = Browser::new(&sim);
    b.login(&sim).await;
    let form = prepare(&mut b, &client_form()).await;
    let logged_in = |page: Answer| page.text().contains("divMainMotors");

    let first = save(&mut b, &form).await.json();
    assert_eq!(first["ok"], true);
    send_link(&mut b, &first).await;
    assert!(logged_in(b.get("/Home/Dashboard").await));

    let second = save(&mut b, &form).await.json();
    assert_eq!(second["ok"], true, "the 2nd save itself succeeds");
    assert!(
        logged_in(b.get("/Home/Dashboard").await),
        "the 2nd proposal's flow is not through yet"
    );
    send_link(&mut b, &second).await;
    assert!(b.get("/Home/Dashboard").await.is_login_form());
    assert_eq!(sim.ledger().len(), 2);
    sim.shutdown().await;
}

async fn send_link(b: &mut Browser, saved: &serde_json::Value) {
    let number = saved["proposalNo"].as_str().unwrap_or_default();
    let link = b
        .post("/TwoWheeler/SendPaymentLink", &[("ProposalNo", number)])
        .await
        .json();
    assert_eq!(link["ok"], true, "the payment link of {number}");
}

#[tokio::test]
async fn page_delay_slows_pages_but_not_admin() {
    let sim = start().await;
    let mut b = Browser::new(&sim);
    sim.faults().delay_pages(Duration::from_millis(400));
    let t = Instant::now();
    b.get("/Login/IMDLogin").await;
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    b.get("/__admin/faults").await;
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn mask_hold_and_fast_typing_reach_the_page() {
    let sim = start().await;
    let mut b = Browser::new(&sim);
    let page = b.get("/Login/IMDLogin").await.text();
    assert!(
        page.contains("data-fast-typing-drop=\"1\""),
        "on by default"
    );
    assert!(page.contains("data-mask-hold-ms=\"0\""));

    sim.faults().hold_mask(Duration::from_millis(5000));
    sim.faults().set_fast_typing_drop(false);
    let page = b.get("/Login/IMDLogin").await.text();
    assert!(page.contains("data-fast-typing-drop=\"0\""));
    assert!(page.contains("data-mask-hold-ms=\"5000\""));

    let script = b.get("/Scripts/login.js").await.text();
    assert!(script.contains("WINDOW_MS") && script.contains("preventDefault"));
    assert!(page.contains("data-fast-typing-window-ms=\"80\""));
    sim.shutdown().await;
}

#[tokio::test]
async fn no_delays_over_the_admin_endpoint_reaches_the_pages() {
    let sim = start().await;
    let mut b = Browser::new(&sim);
    let page = b.get("/Login/IMDLogin").await.text();
    assert!(page.contains("data-no-delays=\"0\""), "off by default");

    let answer = b
        .try_send(
            "POST",
            "/__admin/faults",
            Some(r#"{"no_delays": true, "fast_typing_drop": false}"#.into()),
        )
        .await
        .expect("post");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["no_delays"], true);
    assert!(sim.faults().state().no_delays);
    b.login(&sim).await;
    for path in ["/Home/Dashboard", "/TwoWheeler/Proposal"] {
        let page = b.get(path).await.text();
        assert!(page.contains("data-no-delays=\"1\""), "{path}");
        assert!(page.contains("data-fast-typing-drop=\"0\""), "{path}");
    }
    // Both the mask and the type-ahead read the switch.
    let script = b.get("/Scripts/portal.js").await.text();
    assert!(script.contains("data-no-delays"));
    assert_eq!(script.matches("noDelays() ? 0").count(), 2, "{script}");

    sim.faults().set_no_delays(false);
    let page = b.get("/Home/Dashboard").await.text();
    assert!(page.contains("data-no-delays=\"0\""));
    sim.shutdown().await;
}

#[tokio::test]
async fn error_after_save_records_the_proposal_then_answers_500() {
    let sim = start().await;
    let mut b = Browser::new(&sim);
    b.login(&sim).await;
    let form = prepare(&mut b, &client_form()).await;
    sim.faults().break_after_save(AfterSave::Error500);
    let answer = save(&mut b, &form).await;
    assert_eq!(answer.status, 500);
    assert!(answer.text().contains("Server Error"));
    assert_eq!(sim.ledger().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_delayed_save_records_the_proposal_only_after_the_delay() {
    let sim = start().await;
    let mut b = Browser::new(&sim);
    b.login(&sim).await;
    let form = prepare(&mut b, &client_form()).await;
    sim.faults().delay_saves(Duration::from_millis(600));
    let mut saving = b.clone();
    let body = encode(&pairs(&form));
    let started = std::time::Instant::now();
    let save = tokio::spawn(async move {
        saving
            .try_send("POST", "/TwoWheeler/SaveProposal", Some(body))
            .await
            .map(|a| a.status)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sim.ledger().is_empty(), "recorded before the delay ran out");
    let status = save.await.unwrap().expect("the save answers");
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!(sim.ledger().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn hang_after_save_records_the_proposal_and_never_answers() {
    let sim = start().await;
    let mut b = Browser::new(&sim);
    b.login(&sim).await;
    let form = prepare(&mut b, &client_form()).await;
    sim.faults().break_after_save(AfterSave::Hang);
    let mut hanging = b.clone();
    let body = encode(&pairs(&form));
    let waited = tokio::time::timeout(
        Duration::from_millis(800),
        hanging.try_send("POST", "/TwoWheeler/SaveProposal", Some(body)),
    )
    .await;
    assert!(waited.is_err(), "the save answered");
    assert_eq!(sim.ledger().len(), 1);
    // Shutting down ends the held request instead of waiting for it.
    tokio::time::timeout(Duration::from_secs(5), sim.shutdown())
        .await
        .expect("shutdown with a hanging request");
}

#[tokio::test]
async fn dropped_requests_get_no_answer_then_service_resumes() {
    let sim = start().await;
    let mut b = Browser::new(&sim);
    sim.faults().drop_next_requests(2);
    for _ in 0..2 {
        assert!(b.try_send("GET", "/Login/IMDLogin", None).await.is_err());
    }
    assert!(b.get("/Login/IMDLogin").await.is_login_form());
    sim.shutdown().await;
}

#[tokio::test]
async fn renamed_id_is_served_under_the_new_id() {
    let sim = start().await;
    let mut b = Browser::new(&sim);
    b.login(&sim).await;
    sim.faults().rename_id("txtEngineNo", "txtEngineNumber");
    let page = b.get("/TwoWheeler/Proposal").await.text();
    assert!(page.contains("id=\"txtEngineNumber\""));
    assert!(!page.contains("id=\"txtEngineNo\""));
    sim.faults().clear_renames();
    assert!(b
        .get("/TwoWheeler/Proposal")
        .await
        .text()
        .contains("id=\"txtEngineNo\""));
    sim.shutdown().await;
}

// ---- admin endpoints ---------------------------------------------------------------

#[tokio::test]
async fn admin_endpoints_set_switches_show_ledger_and_reset() {
    let sim = start().await;
    let mut admin = Browser::new(&sim);
    let body = r#"{"fail_next_logins": 1, "page_delay_ms": 5,
                   "renamed_ids": {"btnSave": "btnSaveProposal"}}"#;
    let answer = admin
        .try_send("POST", "/__admin/faults", Some(body.into()))
        .await
        .expect("post");
    assert_eq!(answer.status, 200, "{}", answer.text());
    let state = admin.get("/__admin/faults").await.json();
    assert_eq!(state["fail_next_logins"], 1);
    assert_eq!(state["page_delay_ms"], 5);
    assert_eq!(state["renamed_ids"]["btnSave"], "btnSaveProposal");
    assert_eq!(state["fast_typing_drop"], true);
    assert_eq!(sim.faults().state().fail_next_logins, 1);

    let bad = admin
        .try_send("POST", "/__admin/faults", Some(r#"{"nope": 1}"#.into()))
        .await
        .expect("post");
    assert_eq!(bad.status, 400);

    let mut b = Browser::new(&sim);
    sim.faults().fail_next_logins(0);
    b.login(&sim).await;
    assert_eq!(admin.get("/__admin/sessions").await.json()["active"], 1);
    let form = prepare(&mut b, &client_form()).await;
    assert_eq!(save(&mut b, &form).await.json()["ok"], true);
    let ledger: Vec<LedgerEntry> =
        serde_json::from_value(admin.get("/__admin/ledger").await.json()).expect("ledger");
    assert_eq!(ledger, sim.ledger());

    let expired = admin
        .try_send("POST", "/__admin/expire-sessions", Some(String::new()))
        .await
        .expect("post");
    assert_eq!(expired.json()["expired"], 1);
    assert!(b.get("/Home/Dashboard").await.is_login_form());

    admin
        .try_send("POST", "/__admin/reset", Some(String::new()))
        .await
        .expect("reset");
    assert!(sim.ledger().is_empty());
    assert!(sim.faults().state().renamed_ids.is_empty());
    sim.shutdown().await;
}

// ---- captcha readability ------------------------------------------------------------

/// Tesseract, the profile's default solver, must read at least 80% of the
/// captchas exactly (after keeping only the charset).
#[tokio::test]
async fn captcha_is_readable_by_tesseract() {
    let version = std::process::Command::new("tesseract")
        .arg("--version")
        .output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "tesseract is missing: install it (apt-get install tesseract-ocr); this test needs it"
    );
    let sim = start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    const CHARSET: &str = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let total = 60;
    let mut read = 0;
    for i in 0..total {
        let mut b = Browser::new(&sim);
        b.get("/Login/IMDLogin").await;
        let answer = sim
            .captcha_answer_for_tests(&b.session_cookie())
            .expect("answer");
        let png = b.get("/Login/CaptchaImage").await.body;
        let path = dir.path().join(format!("{i}.png"));
        std::fs::write(&path, &png).expect("write png");
        let out = std::process::Command::new("tesseract")
            .arg(&path)
            .args(["stdout", "--psm", "7"])
            .output()
            .expect("run tesseract");
        let text: String = String::from_utf8_lossy(&out.stdout)
            .chars()
            .filter(|c| CHARSET.contains(*c))
            .collect();
        if text == answer {
            read += 1;
        }
    }
    let rate = read as f64 / total as f64;
    println!("captcha OCR rate: {read}/{total} = {:.0}%", rate * 100.0);
    assert!(
        rate >= 0.8,
        "tesseract read only {read} of {total} captchas"
    );
    sim.shutdown().await;
}

// ---- profiles ----------------------------------------------------------------------

fn profile(path: &str) -> toml::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `#id`s a CSS selector names.
fn ids_in(selector: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = selector;
    while let Some(at) = rest.find('#') {
        let id: String = rest[at + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        rest = &rest[at + 1 + id.len()..];
        ids.push(id);
    }
    ids
}

#[test]
fn both_profiles_parse_and_have_exactly_one_submit_step() {
    for path in ["profiles/sim.toml", "profiles/reliance-smartzone.toml"] {
        let p = profile(path);
        let steps = p["steps"].as_array().expect("steps");
        let submits = steps
            .iter()
            .filter(|s| s["phase"].as_str() == Some("submit"))
            .count();
        assert_eq!(submits, 1, "{path}");
        assert!(
            steps
                .iter()
                .any(|s| s.get("into").and_then(|v| v.as_str()) == Some("proposal_no")),
            "{path} reads no proposal_no"
        );
        for s in steps {
            let phase = s["phase"].as_str().unwrap_or_default();
            assert!(
                ["pre_submit", "submit", "post_submit"].contains(&phase),
                "{path}: {s}"
            );
        }
    }
}

#[tokio::test]
async fn every_selector_of_the_sim_profile_exists_on_the_sims_pages() {
    let sim = start().await;
    let mut b = Browser::new(&sim);
    let mut html = b.get("/Login/IMDLogin").await.text();
    b.login(&sim).await;
    for path in [
        "/Home/Dashboard",
        "/TwoWheeler/Proposal",
        "/Client/ClientDetails",
    ] {
        html.push_str(&b.get(path).await.text());
    }

    let p = profile("profiles/sim.toml");
    let mut selectors: Vec<String> = Vec::new();
    for table in ["login", "dashboard"] {
        for (_, v) in p[table].as_table().expect("table") {
            if let Some(s) = v.as_str().filter(|s| s.contains('#')) {
                selectors.push(s.to_owned());
            }
        }
    }
    for step in p["steps"].as_array().expect("steps") {
        for key in ["selector", "list"] {
            if let Some(s) = step.get(key).and_then(|v| v.as_str()) {
                selectors.push(s.to_owned());
            }
        }
        if step["action"].as_str() == Some("kendo_select") {
            let list = step["list"].as_str().expect("list");
            assert!(
                html.contains(&format!("aria-owns=\"{list}\"")),
                "no drop-down for {list}"
            );
            selectors.push(format!("#{list}"));
        }
    }
    let mut checked = 0;
    for selector in &selectors {
        for id in ids_in(selector) {
            assert!(
                html.contains(&format!("id=\"{id}\"")),
                "#{id} ({selector}) is not on any page"
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} ids checked");
    sim.shutdown().await;
}

// ---- the example jobs ----------------------------------------------------------------

fn dmy(iso: &str) -> String {
    let parts: Vec<&str> = iso.split('-').collect();
    format!("{}/{}/{}", parts[2], parts[1], parts[0])
}

/// Runs every job of `examples/jobs.json` through the sim the way
/// `profiles/sim.toml` maps it, and checks each one saves and lands in the
/// ledger as typed.
#[tokio::test]
async fn every_example_job_passes_the_sims_validation() {
    let jobs: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string("examples/jobs.json").expect("jobs"))
            .expect("jobs parse");
    assert_eq!(jobs.len(), 20);
    let ids: std::collections::BTreeSet<&str> =
        jobs.iter().filter_map(|j| j["policyId"].as_str()).collect();
    assert_eq!(ids.len(), 20, "policyId must be distinct");

    let sim = start().await;
    let mut b = Browser::new(&sim);
    b.login(&sim).await;
    let lookup = |list: &serde_json::Value, name: &str| -> String {
        list.as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == name))
            .and_then(|x| x["code"].as_str())
            .unwrap_or_else(|| panic!("{name} is not in the type-ahead list"))
            .to_owned()
    };
    for job in &jobs {
        let s = |k: &str| job[k].as_str().unwrap_or_default().to_owned();
        let flag = |k: &str| job[k].as_bool().unwrap_or(false).to_string();
        let pin = b
            .get(&format!("/Master/Pincode?pincode={}", s("pincode")))
            .await
            .json();
        assert_eq!(
            pin["state"].as_str(),
            Some(s("state").as_str()),
            "{}",
            s("policyId")
        );
        let client: Vec<(&'static str, String)> = vec![
            ("Salutation", s("proposerTitle")),
            ("FirstName", s("fullName")),
            ("LastName", s("surname")),
            ("DateOfBirth", dmy(&s("dateOfBirth"))),
            ("Gender", s("gender")),
            ("MobileNo", s("mobileNumber")),
            ("EmailId", s("email")),
            ("FlatNo", s("flatDoorNo")),
            ("FloorNo", s("floorNo")),
            ("PremisesName", s("buildingName")),
            ("RoadName", s("roadStreetLane")),
            ("AreaName", s("areaAndLocality")),
            ("Pincode", s("pincode")),
            ("City", pin["city"].as_str().unwrap_or_default().to_owned()),
            (
                "StateCode",
                pin["stateCode"].as_str().unwrap_or_default().to_owned(),
            ),
        ];
        let saved = b.post("/Client/SaveClient", &pairs(&client)).await.json();
        assert_eq!(saved["ok"], true, "{}: {saved}", s("policyId"));

        let make_model = format!("{} {}", s("vehicleMake"), s("vehicleModel"));
        let q = |text: &str| text.replace(' ', "+");
        let models = b
            .get(&format!("/Master/MakeModels?q={}", q(&make_model)))
            .await
            .json();
        let rtos = b
            .get(&format!(
                "/Master/RtoLocations?q={}",
                q(&s("rtoCityLocation"))
            ))
            .await
            .json();
        let financed = job["hasFinancier"].as_bool().unwrap_or(false);
        let financier_code = if financed {
            let list = b
                .get(&format!(
                    "/Master/Financiers?q={}",
                    q(&s("financierName")).replace('&', "%26")
                ))
                .await
                .json();
            lookup(&list, &s("financierName"))
        } else {
            String::new()
        };
        let month = format!(
            "{:02}",
            s("manufacturingMonth").parse::<u32>().expect("month")
        );
        let mut form: Vec<(&'static str, String)> = vec![
            ("ProductCode", "2311".into()),
            ("BranchCode", "101".into()),
            (
                "ClientId",
                saved["clientId"].as_str().unwrap_or_default().into(),
            ),
            ("MakeModelCode", lookup(&models, &make_model)),
            ("MakeModel", make_model.clone()),
            ("RTOCode", lookup(&rtos, &s("rtoCityLocation"))),
            ("RTOCity", s("rtoCityLocation")),
            ("MfgMonth", month),
            ("MfgYear", s("manufacturingYear")),
            ("EngineNo", s("engineNumber")),
            ("ChassisNo", s("chassisNumber")),
            ("PurchaseDate", dmy(&s("purchaseDate"))),
            ("RegistrationDate", dmy(&s("registrationDate"))),
            ("IsNewVehicle", "true".into()),
            ("IsHypothecated", flag("hasFinancier")),
            ("FinancierType", s("financierType")),
            ("FinancierName", s("financierName")),
            ("FinancierCode", financier_code),
            ("FinancierAddress", s("financierAddress")),
            ("IDV", s("idv")),
            ("ZeroDep", flag("zeroDepreciation")),
            ("PACover", flag("paCover")),
            ("TPPD", flag("tppdRestrict")),
            ("ODDiscount", s("ODDiscount")),
            ("QuoteId", String::new()),
        ];
        let idv = b.post("/TwoWheeler/FetchIDV", &pairs(&form)).await.json();
        assert_eq!(idv["ok"], true, "{}: {idv}", s("policyId"));
        let quote = b
            .post("/TwoWheeler/CalculatePremium", &pairs(&form))
            .await
            .json();
        assert_eq!(quote["ok"], true, "{}: {quote}", s("policyId"));
        set(
            &mut form,
            "QuoteId",
            quote["quoteId"].as_str().unwrap_or_default(),
        );
        let answer = save(&mut b, &form).await.json();
        assert_eq!(answer["ok"], true, "{}: {answer}", s("policyId"));

        let entry = sim.ledger().pop().expect("entry");
        assert_eq!(entry.fields["EngineNo"], s("engineNumber"));
        assert_eq!(entry.fields["FirstName"], s("fullName"));
    }
    assert_eq!(sim.ledger().len(), 20);
    sim.shutdown().await;
}

// ---- in a real browser ----------------------------------------------------------------

/// Chromedriver on a free port, killed when dropped.
struct Chromedriver {
    child: std::process::Child,
    port: u16,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn chromedriver() -> Chromedriver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = std::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver is installed");
    let driver = Chromedriver { child, port };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not start");
}

type Wd = fantoccini::Client;
type WdResult<T> = Result<T, fantoccini::error::CmdError>;

async fn css(wd: &Wd, selector: &str) -> WdResult<fantoccini::elements::Element> {
    wd.wait()
        .at_most(Duration::from_secs(10))
        .for_element(fantoccini::Locator::Css(selector))
        .await
}

async fn wait_mask(wd: &Wd) -> WdResult<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if wd
            .find_all(fantoccini::Locator::Css(".k-loading-mask"))
            .await?
            .is_empty()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the loading mask stayed up");
}

async fn wait_displayed(wd: &Wd, selector: &str) -> WdResult<fantoccini::elements::Element> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let el = css(wd, selector).await?;
        if el.is_displayed().await? {
            return Ok(el);
        }
        assert!(Instant::now() < deadline, "{selector} never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(wd: &Wd, selector: &str) -> WdResult<()> {
    wait_mask(wd).await?;
    wait_displayed(wd, selector).await?.click().await
}

async fn type_into(wd: &Wd, selector: &str, value: &str) -> WdResult<()> {
    wait_mask(wd).await?;
    let el = css(wd, selector).await?;
    el.clear().await?;
    tokio::time::sleep(Duration::from_millis(150)).await;
    el.send_keys(value).await
}

async fn value_of(wd: &Wd, selector: &str) -> WdResult<String> {
    Ok(css(wd, selector)
        .await?
        .prop("value")
        .await?
        .unwrap_or_default())
}

async fn pick_item(wd: &Wd, items: &str, text: &str) -> WdResult<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for li in wd.find_all(fantoccini::Locator::Css(items)).await? {
            if li.is_displayed().await? && li.text().await? == text {
                return li.click().await;
            }
        }
        assert!(Instant::now() < deadline, "no item {text:?} in {items}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn kendo_select(wd: &Wd, list: &str, text: &str) -> WdResult<()> {
    click(wd, &format!("span[aria-owns={list}]")).await?;
    pick_item(wd, &format!("ul#{list} li"), text).await
}

async fn typeahead(wd: &Wd, selector: &str, text: &str) -> WdResult<()> {
    type_into(wd, selector, text).await?;
    pick_item(wd, &format!("{selector}_listbox li"), text).await
}

async fn select(wd: &Wd, selector: &str, text: &str) -> WdResult<()> {
    css(wd, selector).await?.select_by_label(text).await
}

async fn check(wd: &Wd, selector: &str, on: bool) -> WdResult<()> {
    let el = css(wd, selector).await?;
    if el.is_selected().await? != on {
        el.click().await?;
    }
    Ok(())
}

async fn walk_through(wd: &Wd, sim: &PortalSim, shots: &std::path::Path) -> WdResult<String> {
    let shot = |name: &'static str| async move {
        let png = wd.screenshot().await?;
        std::fs::write(shots.join(format!("{name}.png")), png).expect("screenshot");
        WdResult::Ok(())
    };

    // Typing into the next field at once loses the first keystrokes.
    wd.goto(&format!("{}/Login/IMDLogin", sim.url())).await?;
    css(wd, "#txtUserName")
        .await?
        .send_keys("agent01\u{e004}sim-password")
        .await?;
    let typed = value_of(wd, "#txtPassword").await?;
    assert!(
        typed.len() < "sim-password".len() && "sim-password".ends_with(&typed),
        "fast typing was not dropped: {typed:?}"
    );
    sim.faults().set_fast_typing_drop(false);
    wd.goto(&format!("{}/Login/IMDLogin", sim.url())).await?;
    css(wd, "#txtUserName")
        .await?
        .send_keys("agent01\u{e004}sim-password")
        .await?;
    assert_eq!(
        value_of(wd, "#txtPassword").await?,
        "sim-password",
        "switch off: nothing dropped"
    );
    sim.faults().set_fast_typing_drop(true);
    wd.goto(&format!("{}/Login/IMDLogin", sim.url())).await?;

    // With the profile's pause it all arrives; the captcha is read by OCR.
    let mut logged_in = false;
    for _ in 0..3 {
        type_into(wd, "#txtUserName", "agent01").await?;
        type_into(wd, "#txtPassword", "sim-password").await?;
        assert_eq!(value_of(wd, "#txtPassword").await?, "sim-password");
        let png = css(wd, "#CaptchaImage").await?.screenshot().await?;
        let path = shots.join("captcha.png");
        std::fs::write(&path, png).expect("captcha file");
        let out = std::process::Command::new("tesseract")
            .arg(&path)
            .args(["stdout", "--psm", "7"])
            .output()
            .expect("tesseract");
        let text: String = String::from_utf8_lossy(&out.stdout)
            .chars()
            .filter(|c| "ABCDEFGHJKLMNPQRSTUVWXYZ23456789".contains(*c))
            .collect();
        type_into(wd, "#CaptchaInputText", &text).await?;
        click(wd, "#btnLogin").await?;
        css(wd, "#divMainMotors, #txtUserName").await?;
        if wd.current_url().await?.as_str().contains("lgn=") {
            logged_in = true;
            break;
        }
    }
    assert!(logged_in, "three captcha misreads in a row");
    shot("dashboard").await?;

    click(wd, "#divPopup .k-window-action").await?;
    let menu = css(wd, "#divMainMotors").await?;
    let hover = fantoccini::actions::MouseActions::new("mouse".into()).then(
        fantoccini::actions::PointerAction::MoveToElement {
            element: menu,
            duration: None,
            x: 0.0,
            y: 0.0,
        },
    );
    use fantoccini::actions::InputSource;
    wd.perform_actions(hover).await?;
    click(wd, "#lnkTwoWheeler").await?;
    css(wd, "#frmProposal").await?;

    kendo_select(wd, "ddlProduct_listbox", "Two Wheeler Package Policy").await?;
    kendo_select(wd, "ddlBranch_listbox", "BANGALORE - MG ROAD").await?;

    click(wd, "#btnClientDetails").await?;
    css(wd, "#ifrmClientDetails").await?.enter_frame().await?;
    css(wd, "#txtFirstName").await?;
    select(wd, "#ddlSalutation", "Mr.").await?;
    for (sel, v) in [
        ("#txtFirstName", "Arjun"),
        ("#txtLastName", "Mehta"),
        ("#txtDOB", "17/04/1988"),
    ] {
        type_into(wd, sel, v).await?;
    }
    select(wd, "#ddlGender", "Male").await?;
    for (sel, v) in [
        ("#txtMobileNo", "9000012345"),
        ("#txtEmailId", "arjun.mehta@example.com"),
        ("#txtFlatNo", "12B"),
        ("#txtFloorNo", "2"),
        ("#txtPremisesName", "Lakshmi Residency"),
        ("#txtRoadName", "4th Cross Road"),
        ("#txtAreaName", "Indiranagar"),
        ("#txtPincode", "560038"),
    ] {
        type_into(wd, sel, v).await?;
    }
    click(wd, "#btnSearchPincode").await?;
    wait_mask(wd).await?;
    assert_eq!(css(wd, "#lblState").await?.text().await?, "KARNATAKA");
    shot("client").await?;
    click(wd, "#btnSaveClient").await?;
    wd.enter_parent_frame().await?;
    wait_displayed(wd, "#spnClientSaved").await?;

    typeahead(wd, "#txtMakeModel", "HONDA ACTIVA 6G STD").await?;
    typeahead(wd, "#txtRTOCity", "KA-03 BANGALORE EAST").await?;
    select(wd, "#ddlMfgMonth", "10").await?;
    select(wd, "#ddlMfgYear", "2026").await?;
    type_into(wd, "#txtEngineNo", "JF50E8012345").await?;
    type_into(wd, "#txtChassisNo", "ME4JF50A8RT012345").await?;
    for (sel, v) in [
        ("#txtPurchaseDate", "20/11/2026"),
        ("#txtRegistrationDate", "25/11/2026"),
    ] {
        let el = css(wd, sel).await?;
        wd.execute(
            "arguments[0].value = arguments[1]; \
             arguments[0].dispatchEvent(new Event('change', {bubbles: true}));",
            vec![serde_json::to_value(&el).expect("element"), v.into()],
        )
        .await?;
    }
    check(wd, "#chkNewVehicle", true).await?;
    check(wd, "#chkHypothecation", true).await?;
    select(wd, "#ddlFinancierType", "Hypothecation").await?;
    typeahead(wd, "#txtFinancier", "HDFC BANK LTD").await?;
    type_into(wd, "#txtFinancierAddress", "Indiranagar, Bengaluru").await?;

    click(wd, "#btnFetchIDV").await?;
    wait_mask(wd).await?;
    type_into(wd, "#txtIDV", "72000").await?;
    check(wd, "#chkZeroDep", true).await?;
    check(wd, "#chkPACover", true).await?;
    check(wd, "#chkTPPD", false).await?;
    type_into(wd, "#txtODDiscount", "10").await?;
    click(wd, "#btnCalculatePremium").await?;
    wait_displayed(wd, "#divPremiumDetails").await?;
    shot("proposal").await?;

    click(wd, "#btnSave").await?;
    assert_eq!(
        wd.get_alert_text().await?,
        "Are you sure you want to save the proposal?"
    );
    wd.accept_alert().await?;
    let number = wait_displayed(wd, "#lblProposalNo").await?.text().await?;

    click(wd, "#btnSendPaymentLink").await?;
    wd.accept_alert().await?;
    wait_mask(wd).await?;
    let status = css(wd, "#lblPaymentLinkStatus").await?.text().await?;
    assert!(status.contains("Payment link sent"), "{status}");
    shot("saved").await?;
    Ok(number)
}

/// The whole flow in headless Chromium, the way `profiles/sim.toml` drives
/// it: proves the pages' scripts work under WebDriver. Needs chromium,
/// chromedriver and tesseract (`scripts/setup` installs them); fails loudly
/// without them. Screenshots go to `target/portal-sim-shots/`.
#[tokio::test]
async fn browser_walks_the_whole_flow() {
    let sim = start().await;
    let driver = chromedriver().await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"],
        }),
    );
    let wd = fantoccini::ClientBuilder::rustls()
        .expect("tls")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("browser session");
    let shots = std::path::PathBuf::from("target/portal-sim-shots");
    std::fs::create_dir_all(&shots).expect("shots dir");

    let outcome = walk_through(&wd, &sim, &shots).await;
    // Close the browser whatever happened.
    let _ = wd.close().await;
    let number = outcome.expect("walk through");

    let ledger = sim.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].proposal_no, number);
    assert!(ledger[0].payment_link_sent);
    for (k, v) in client_form() {
        assert_eq!(ledger[0].fields.get(k), Some(&v), "{k}");
    }
    assert_eq!(ledger[0].fields["MakeModelCode"], "HON001");
    assert_eq!(ledger[0].fields["IDV"], "72000");
    assert_eq!(ledger[0].fields["IsHypothecated"], "true");
    sim.shutdown().await;
}
