//! The portal's pages and XHR endpoints, and the admin endpoints.
//!
//! Pages that need a login answer with the login form (HTTP 200) when the
//! session is missing or expired, as the real ASP.NET portal does; XHR
//! endpoints do the same, and the page's script reloads on a non-JSON answer.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use super::faults::{AfterSave, FaultPatch, Faults};
use super::ledger::LedgerEntry;
use super::pages::{self, PageContext};
use super::session::{self, ClientRecord, Login, Quote, Session, AUTH_COOKIE, SESSION_COOKIE};
use super::validate::{self, FieldError};
use super::{captcha, catalogue, lock, Shared};

type AppState = Arc<Shared>;

/// The whole application.
pub fn router(shared: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { redirect("/Login/IMDLogin") }))
        .route("/Login/IMDLogin", get(login_page).post(login_submit))
        .route("/Login/CaptchaImage", get(captcha_image))
        .route("/Login/Logout", get(logout))
        .route("/Home/Dashboard", get(dashboard))
        .route("/TwoWheeler/Proposal", get(proposal_page))
        .route("/TwoWheeler/GetBranches", get(branches))
        .route("/TwoWheeler/FetchIDV", post(fetch_idv))
        .route("/TwoWheeler/CalculatePremium", post(calculate_premium))
        .route("/TwoWheeler/SaveProposal", post(save_proposal))
        .route("/TwoWheeler/SendPaymentLink", post(send_payment_link))
        .route("/Client/ClientDetails", get(client_page))
        .route("/Client/SaveClient", post(save_client))
        .route("/Master/Pincode", get(pincode))
        .route("/Master/MakeModels", get(make_models))
        .route("/Master/RtoLocations", get(rto_locations))
        .route("/Master/Financiers", get(financiers))
        .route(
            "/Content/site.css",
            get(|| asset("text/css", pages::SITE_CSS)),
        )
        .route("/Scripts/portal.js", get(|| asset(JS, pages::PORTAL_JS)))
        .route("/Scripts/login.js", get(|| asset(JS, pages::LOGIN_JS)))
        .route(
            "/Scripts/proposal.js",
            get(|| asset(JS, pages::PROPOSAL_JS)),
        )
        .route("/Scripts/client.js", get(|| asset(JS, pages::CLIENT_JS)))
        .route("/__admin/faults", get(admin_faults).post(admin_set_faults))
        .route("/__admin/expire-sessions", post(admin_expire_sessions))
        .route("/__admin/sessions", get(admin_sessions))
        .route("/__admin/ledger", get(admin_ledger))
        .route("/__admin/reset", post(admin_reset))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            around_each_request,
        ))
        .with_state(shared)
}

const JS: &str = "application/javascript";

/// A static asset. Cached for a day, as an ASP.NET portal's bundles are:
/// only pages are `no-store`.
async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

/// The fault switches that act around every request: "delay every page",
/// and the due session expiry of "expire every N saves".
async fn around_each_request(State(shared): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/__admin") {
        return next.run(req).await;
    }
    let started = std::time::Instant::now();
    let delay = lock(&shared.faults).page_delay_ms;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    shared.expire_if_due();
    let resp = next.run(req).await;
    shared.expire_if_due();
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    shared.answered.fetch_add(1, Ordering::Relaxed);
    shared.answering_ns.fetch_add(nanos, Ordering::Relaxed);
    resp
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(resp: &mut Response, value: String) {
    // Cookie values here are tokens of letters and digits, always valid.
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
}

fn ctx(shared: &Shared) -> PageContext {
    PageContext::from(&*lock(&shared.faults))
}

fn html(body: String) -> Response {
    let mut resp = Html(body).into_response();
    resp.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    resp
}

/// Shows the login form with a new captcha, reusing the browser's pre-login
/// session when it has a live one.
fn show_login(
    shared: &Shared,
    headers: &HeaderMap,
    username: &str,
    errors: &[&str],
    notice: Option<&str>,
) -> Response {
    let answer = captcha::random_text(&mut rand::thread_rng());
    let mut sessions = lock(&shared.sessions);
    let reusable = cookie(headers, SESSION_COOKIE)
        .filter(|sid| sessions.touch(sid).is_some_and(|s| s.login.is_none()))
        .map(str::to_owned);
    let (sid, fresh) = match reusable {
        Some(sid) => (sid, false),
        None => (sessions.create(), true),
    };
    if let Some(s) = sessions.touch(&sid) {
        s.captcha = Some(answer);
    }
    drop(sessions);

    let mut resp = html(ctx(shared).login(username, errors, notice));
    if fresh {
        set_cookie(
            &mut resp,
            format!("{SESSION_COOKIE}={sid}; path=/; HttpOnly; SameSite=Lax"),
        );
    }
    resp
}

/// What a page without a live login gets: the login form, HTTP 200.
fn logged_out(shared: &Shared, headers: &HeaderMap) -> Response {
    let had_session = cookie(headers, AUTH_COOKIE).is_some();
    let notice = had_session.then_some("Your session has expired. Please log in again.");
    show_login(shared, headers, "", &[], notice)
}

/// Runs `page` with the request's logged-in session, or answers with the
/// login form.
fn with_session(
    shared: &Shared,
    headers: &HeaderMap,
    page: impl FnOnce(&mut Session) -> Response,
) -> Response {
    let mut sessions = lock(&shared.sessions);
    let session = sessions.logged_in(
        cookie(headers, SESSION_COOKIE),
        cookie(headers, AUTH_COOKIE),
    );
    match session {
        Some(session) => page(session),
        None => {
            drop(sessions);
            logged_out(shared, headers)
        }
    }
}

async fn login_page(State(shared): State<AppState>, headers: HeaderMap) -> Response {
    show_login(&shared, &headers, "", &[], None)
}

async fn captcha_image(State(shared): State<AppState>, headers: HeaderMap) -> Response {
    let answer = cookie(&headers, SESSION_COOKIE).and_then(|sid| {
        lock(&shared.sessions)
            .touch(sid)
            .and_then(|s| s.captcha.clone())
    });
    let Some(answer) = answer else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let png = shared.painter.render_png(&answer, &mut rand::thread_rng());
    (
        [
            (CONTENT_TYPE, "image/png"),
            (CACHE_CONTROL, "no-cache, no-store"),
        ],
        png,
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(rename = "UserName", default)]
    username: String,
    #[serde(rename = "Password", default)]
    password: String,
    #[serde(rename = "CaptchaInputText", default)]
    captcha: String,
}

async fn login_submit(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let sid = cookie(&headers, SESSION_COOKIE).map(str::to_owned);

    // The captcha is good for one try, whatever the outcome.
    let expected = sid.as_deref().and_then(|sid| {
        lock(&shared.sessions)
            .touch(sid)
            .and_then(|s| s.captcha.take())
    });
    let captcha_ok = expected.is_some_and(|e| e.eq_ignore_ascii_case(form.captcha.trim()));
    if !captcha_ok {
        warn!("login refused: captcha not valid");
        return show_login(
            &shared,
            &headers,
            &form.username,
            &["Captcha is not valid"],
            None,
        );
    }
    if Faults::from(&shared).take_login_failure() {
        warn!("login refused by the fail-logins fault switch");
        return show_login(
            &shared,
            &headers,
            &form.username,
            &["Login failed. Please try again later."],
            None,
        );
    }
    if form.username != shared.config.username || form.password != shared.config.password {
        warn!("login refused: wrong username or password");
        return show_login(
            &shared,
            &headers,
            &form.username,
            &["Invalid username or password"],
            None,
        );
    }

    // A new session id at login, so a pre-login id never becomes a live one.
    let ticket = session::token(48).to_uppercase();
    let marker = session::token(16);
    let mut sessions = lock(&shared.sessions);
    if let Some(old) = &sid {
        sessions.remove(old);
    }
    let new_sid = sessions.create();
    let label = match sessions.touch(&new_sid) {
        Some(s) => {
            s.login = Some(Login {
                ticket: ticket.clone(),
                marker: marker.clone(),
            });
            s.popup_pending = true;
            s.label.clone()
        }
        None => String::new(),
    };
    drop(sessions);
    info!(session = %label, "login succeeded");

    let mut resp = redirect(&format!("/Home/Dashboard?lgn={marker}"));
    set_cookie(
        &mut resp,
        format!("{SESSION_COOKIE}={new_sid}; path=/; HttpOnly; SameSite=Lax"),
    );
    let expires = (chrono::Utc::now() + chrono::Duration::hours(8))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    set_cookie(
        &mut resp,
        format!("{AUTH_COOKIE}={ticket}; expires={expires}; path=/; HttpOnly; SameSite=Lax"),
    );
    resp
}

async fn logout(State(shared): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(sid) = cookie(&headers, SESSION_COOKIE) {
        lock(&shared.sessions).remove(sid);
    }
    let mut resp = redirect("/Login/IMDLogin");
    for name in [SESSION_COOKIE, AUTH_COOKIE] {
        set_cookie(
            &mut resp,
            format!("{name}=; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/"),
        );
    }
    resp
}

#[derive(Deserialize)]
struct DashboardQuery {
    lgn: Option<String>,
}

/// The dashboard. Opened without this login's marker (a cloned browser
/// opening the bare URL), it redirects to the URL with the marker, so the
/// URL of a logged-in dashboard always carries `lgn=`.
async fn dashboard(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<DashboardQuery>,
) -> Response {
    let (proposals, links) = {
        let ledger = lock(&shared.ledger);
        let links = ledger.iter().filter(|e| e.payment_link_sent).count();
        (ledger.len(), links)
    };
    let ctx = ctx(&shared);
    let user = shared.config.username.clone();
    with_session(&shared, &headers, |s| {
        let marker = s.login.as_ref().map(|l| l.marker.as_str()).unwrap_or("");
        if query.lgn.as_deref() != Some(marker) {
            return redirect(&format!("/Home/Dashboard?lgn={marker}"));
        }
        let popup = std::mem::take(&mut s.popup_pending);
        html(ctx.dashboard(&user, popup, proposals, links))
    })
}

async fn proposal_page(State(shared): State<AppState>, headers: HeaderMap) -> Response {
    let ctx = ctx(&shared);
    let user = shared.config.username.clone();
    let year = today().format("%Y").to_string().parse().unwrap_or(2026);
    with_session(&shared, &headers, |_| html(ctx.proposal(&user, year)))
}

async fn client_page(State(shared): State<AppState>, headers: HeaderMap) -> Response {
    let ctx = ctx(&shared);
    with_session(&shared, &headers, |_| html(ctx.client()))
}

fn today() -> chrono::NaiveDate {
    chrono::Local::now().date_naive()
}

fn errors_json(errors: Vec<FieldError>) -> Response {
    Json(json!({ "ok": false, "errors": errors })).into_response()
}

#[derive(Deserialize)]
struct Lookup {
    #[serde(default)]
    q: String,
}

fn list_json(items: Vec<(&'static str, &'static str)>) -> Response {
    let items: Vec<_> = items
        .into_iter()
        .map(|(code, name)| json!({ "code": code, "name": name }))
        .collect();
    Json(items).into_response()
}

/// Type-ahead lists answer only from three characters on, like the portal.
fn lookup(
    shared: &Shared,
    headers: &HeaderMap,
    q: &str,
    list: &[(&'static str, &'static str)],
) -> Response {
    let found = if q.trim().chars().count() >= 3 {
        catalogue::search(list, q, 20)
    } else {
        Vec::new()
    };
    with_session(shared, headers, |_| list_json(found))
}

async fn make_models(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Query(l): Query<Lookup>,
) -> Response {
    lookup(&shared, &headers, &l.q, &catalogue::make_model_names())
}

async fn rto_locations(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Query(l): Query<Lookup>,
) -> Response {
    lookup(&shared, &headers, &l.q, catalogue::RTO_CITIES)
}

async fn financiers(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Query(l): Query<Lookup>,
) -> Response {
    lookup(&shared, &headers, &l.q, catalogue::FINANCIERS)
}

#[derive(Deserialize)]
struct BranchQuery {
    #[serde(rename = "productCode", default)]
    product_code: String,
}

async fn branches(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<BranchQuery>,
) -> Response {
    let known = catalogue::PRODUCTS.iter().any(|p| p.code == q.product_code);
    let items = if known {
        catalogue::BRANCHES.to_vec()
    } else {
        Vec::new()
    };
    with_session(&shared, &headers, |_| list_json(items))
}

#[derive(Deserialize)]
struct PincodeQuery {
    #[serde(default)]
    pincode: String,
}

async fn pincode(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PincodeQuery>,
) -> Response {
    let answer = match catalogue::pincode(q.pincode.trim()) {
        Some(p) => json!({
            "ok": true, "city": p.city, "state": p.state, "stateCode": p.state_code,
        }),
        None => json!({ "ok": false, "message": "Pincode not found" }),
    };
    with_session(&shared, &headers, |_| Json(answer).into_response())
}

async fn save_client(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<validate::Form>,
) -> Response {
    let errors = validate::client(&form, today());
    with_session(&shared, &headers, |s| {
        if !errors.is_empty() {
            return errors_json(errors);
        }
        let field = |k: &str| form.get(k).map(|v| v.trim()).unwrap_or("");
        let name = format!(
            "{} {} {}",
            field("Salutation"),
            field("FirstName"),
            field("LastName")
        );
        let client_id = format!("C{}", session::token(10).to_uppercase());
        s.clients.insert(
            client_id.clone(),
            ClientRecord {
                fields: form.clone(),
            },
        );
        Json(json!({ "ok": true, "clientId": client_id, "name": name })).into_response()
    })
}

async fn fetch_idv(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<validate::Form>,
) -> Response {
    let get = |k: &str| form.get(k).map(|v| v.trim()).unwrap_or("");
    let model = catalogue::make_model(get("MakeModelCode")).filter(|m| m.name == get("MakeModel"));
    let made = chrono::NaiveDate::from_ymd_opt(
        get("MfgYear").parse().unwrap_or(0),
        get("MfgMonth").parse().unwrap_or(0),
        1,
    );
    let purchase = validate::parse_date(get("PurchaseDate"));
    let answer = match (model, made, purchase) {
        (Some(m), Some(made), Some(p)) => {
            let age = (p.signed_duration_since(made).num_days().max(0) / 30) as u32;
            let (idv, min, max) = catalogue::idv_range(m, age);
            Json(json!({ "ok": true, "idv": idv, "min": min, "max": max })).into_response()
        }
        _ => {
            let mut errors = Vec::new();
            if model.is_none() {
                errors.push(error(
                    "MakeModel",
                    "Please select make and model from the list",
                ));
            }
            if made.is_none() {
                errors.push(error(
                    "MfgMonth",
                    "Please select the month and year of manufacture",
                ));
            }
            if purchase.is_none() {
                errors.push(error(
                    "PurchaseDate",
                    "Purchase date must be a valid date (DD/MM/YYYY)",
                ));
            }
            errors_json(errors)
        }
    };
    with_session(&shared, &headers, |_| answer)
}

fn error(field: &str, message: &str) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

async fn calculate_premium(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<validate::Form>,
) -> Response {
    with_session(&shared, &headers, |s| {
        match validate::proposal(&form, &s.clients, today()) {
            Err(errors) => errors_json(errors),
            Ok(premium) => {
                let quote_id = format!("Q{}", session::token(12).to_uppercase());
                lock(&shared.expiry).quoted(&quote_id);
                s.quotes.insert(
                    quote_id.clone(),
                    Quote {
                        fields: form.clone(),
                        total_premium: premium.total,
                    },
                );
                Json(json!({ "ok": true, "quoteId": quote_id, "premium": premium })).into_response()
            }
        }
    })
}

/// Why a save was refused, or what it recorded.
enum SaveOutcome {
    Refused(Vec<FieldError>),
    Saved(LedgerEntry),
}

async fn save_proposal(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<validate::Form>,
) -> Response {
    let delay = lock(&shared.faults).save_delay_ms;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut outcome = None;
    let refused = with_session(&shared, &headers, |s| {
        outcome = Some(check_save(&shared, s, &form));
        StatusCode::OK.into_response()
    });
    let entry = match outcome {
        None => return refused,
        Some(SaveOutcome::Refused(errors)) => return errors_json(errors),
        Some(SaveOutcome::Saved(entry)) => entry,
    };

    info!(proposal = %entry.proposal_no, session = %entry.session, "proposal saved");
    let saved = {
        let mut ledger = lock(&shared.ledger);
        ledger.push(entry.clone());
        ledger.len()
    };
    let faults = lock(&shared.faults).clone();
    let every = faults.expire_sessions_every_n_saves as usize;
    let quote_id = form.get("QuoteId").map_or("", |v| v.trim());
    let due = every > 0 && saved % every == 0;
    lock(&shared.expiry).saved(quote_id, &entry.proposal_no, due);
    if due {
        warn!("fault switch: every session ends after save {saved}, between proposals");
    }

    match faults.after_save {
        AfterSave::Normal => Json(json!({
            "ok": true,
            "proposalNo": entry.proposal_no,
            "message": "Proposal saved successfully",
        }))
        .into_response(),
        AfterSave::Error500 => {
            warn!("fault switch: answering 500 after save");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html(pages::server_error()),
            )
                .into_response()
        }
        AfterSave::Hang => {
            warn!("fault switch: never answering after save");
            // The connection task is aborted when the simulator shuts down.
            std::future::pending::<Response>().await
        }
    }
}

fn check_save(shared: &Shared, s: &mut Session, form: &validate::Form) -> SaveOutcome {
    let quote_id = form.get("QuoteId").map(|v| v.trim()).unwrap_or("");
    let Some(quote) = s.quotes.get(quote_id).cloned() else {
        return SaveOutcome::Refused(vec![error(
            "QuoteId",
            "Please calculate the premium before saving",
        )]);
    };
    if let Err(errors) = validate::proposal(form, &s.clients, today()) {
        return SaveOutcome::Refused(errors);
    }
    if !validate::matches_quote(form, &quote) {
        return SaveOutcome::Refused(vec![error(
            "QuoteId",
            "The proposal changed after the premium was calculated; please calculate again",
        )]);
    }

    let client_id = form.get("ClientId").map(|v| v.trim()).unwrap_or("");
    let mut fields: BTreeMap<String, String> = s
        .clients
        .get(client_id)
        .map(|c| c.fields.clone())
        .unwrap_or_default();
    fields.extend(form.iter().map(|(k, v)| (k.clone(), v.clone())));

    let seq = shared
        .next_proposal
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    SaveOutcome::Saved(LedgerEntry {
        proposal_no: format!("R{}{seq:08}", today().format("%Y")),
        at: chrono::Utc::now(),
        session: s.label.clone(),
        fields,
        total_premium: quote.total_premium,
        payment_link_sent: false,
    })
}

#[derive(Deserialize)]
struct PaymentLinkForm {
    #[serde(rename = "ProposalNo", default)]
    proposal_no: String,
}

async fn send_payment_link(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<PaymentLinkForm>,
) -> Response {
    with_session(&shared, &headers, |s| {
        let mut ledger = lock(&shared.ledger);
        let entry = ledger
            .iter_mut()
            .find(|e| e.proposal_no == form.proposal_no.trim() && e.session == s.label);
        match entry {
            Some(entry) => {
                entry.payment_link_sent = true;
                lock(&shared.expiry).link_sent(&entry.proposal_no);
                Json(json!({
                    "ok": true,
                    "message": "Payment link sent to the customer's mobile and email",
                }))
                .into_response()
            }
            None => Json(json!({ "ok": false, "message": "Proposal not found" })).into_response(),
        }
    })
}

/// Why an admin request was refused.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("bad fault switches: {0}")]
    BadPatch(#[from] serde_json::Error),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

async fn admin_faults(State(shared): State<AppState>) -> Response {
    Json(Faults::from(&shared).state()).into_response()
}

async fn admin_set_faults(
    State(shared): State<AppState>,
    body: Bytes,
) -> Result<Response, AdminError> {
    let patch: FaultPatch = serde_json::from_slice(&body)?;
    let faults = Faults::from(&shared);
    faults.apply(patch);
    info!("fault switches changed over the admin endpoint");
    Ok(Json(faults.state()).into_response())
}

async fn admin_expire_sessions(State(shared): State<AppState>) -> Response {
    let expired = Faults::from(&shared).expire_sessions_now();
    Json(json!({ "expired": expired })).into_response()
}

async fn admin_sessions(State(shared): State<AppState>) -> Response {
    Json(json!({ "active": lock(&shared.sessions).active() })).into_response()
}

async fn admin_ledger(State(shared): State<AppState>) -> Response {
    Json(lock(&shared.ledger).clone()).into_response()
}

async fn admin_reset(State(shared): State<AppState>) -> Response {
    shared.reset();
    Json(json!({ "ok": true })).into_response()
}
