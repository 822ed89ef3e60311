//! The dashboard: one server-rendered page, refreshed by a few lines of
//! JavaScript that fetch its live part again every two seconds.
//!
//! Logging in posts the token once through a form; the answer sets an
//! HttpOnly, SameSite=Strict cookie holding a random session id (not the
//! token), which the dashboard's GETs carry. The token never appears in a
//! URL, the page or a log line.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use tracing::{info, warn};

use super::{views, AppState, DASHBOARD_SESSION, SESSION_COOKIE};
use crate::book::{Book, RecoveryOutcome};
use crate::engine::session::Health;
use crate::export::rfc3339;
use crate::machine::job::Status;

const PAGE: &str = include_str!("dashboard.html");
const RECENT_JOBS: usize = 50;
const RECENT_RECOVERIES: usize = 20;

pub use crate::html::escape as esc;

fn short_time(at: i64) -> String {
    // 2026-12-03T17:22:23.123Z -> 2026-12-03 17:22:23 UTC
    let t = rfc3339(at);
    format!("{} {} UTC", &t[..10], &t[11..19])
}

fn html_page(body: &str, title: &str) -> Html<String> {
    Html(PAGE.replace("{{title}}", title).replace("{{body}}", body))
}

fn login_form(message: Option<&str>) -> String {
    let note = message.map_or(String::new(), |m| {
        format!("<p class=\"note bad\" role=\"alert\">{}</p>", esc(m))
    });
    format!(
        "<section class=\"login card\"><h1>formwright</h1>\
         <p>Sign in with the daemon's API token.</p>{note}\
         <form method=\"post\" action=\"/login\" autocomplete=\"off\">\
         <label for=\"token\">API token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" required autofocus>\
         <button type=\"submit\">Sign in</button></form></section>"
    )
}

/// `GET /`: the dashboard, or its login form.
pub(super) async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.cookie_ok(&headers) {
        return html_page(&login_form(None), "formwright: sign in").into_response();
    }
    let live = render_live(&state);
    let body = format!(
        "<header><h1>formwright</h1><span class=\"sub\">agent-portal jobs</span>\
         <span class=\"spacer\"></span><span id=\"updated\" class=\"sub\"></span>\
         <form method=\"post\" action=\"/logout\"><button class=\"link\">Sign out</button></form>\
         </header><main id=\"live\">{live}</main>{SCRIPT}"
    );
    html_page(&body, "formwright").into_response()
}

/// `GET /dashboard/live`: the part of the page that changes.
pub(super) async fn live(State(state): State<AppState>) -> Response {
    Html(render_live(&state)).into_response()
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

/// `POST /login`: checks the token, sets the session cookie.
pub(super) async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    if !state.token_matches(form.token.trim()) {
        warn!("dashboard sign-in with a wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            html_page(
                &login_form(Some("That token is not right.")),
                "formwright: sign in",
            ),
        )
            .into_response();
    }
    info!("dashboard sign-in");
    let id = state.new_session();
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        DASHBOARD_SESSION.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// `POST /logout`: ends the session.
pub(super) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    state.end_session(&headers);
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

fn render_live(state: &AppState) -> String {
    let (health, halted) = (state.0.desk.health(), state.0.desk.halted());
    let book = state.0.desk.recorder().book();
    let mut out = String::new();
    if let Some(why) = halted {
        out.push_str(&format!(
            "<p class=\"note bad\">The engine has halted: {}</p>",
            esc(&why)
        ));
    }
    out.push_str(&counts(&book));
    out.push_str("<div class=\"columns\">");
    out.push_str(&jobs_table(&book));
    out.push_str("<div class=\"side\">");
    out.push_str(&session_card(&book, health));
    out.push_str(&recoveries_table(&book));
    out.push_str("</div></div>");
    out
}

fn counts(book: &Book) -> String {
    let stats = views::stats(book);
    let mut out = String::from("<section class=\"counts\">");
    let total = stats["total"].as_u64().unwrap_or(0);
    out.push_str(&format!(
        "<div class=\"count card\"><span class=\"n\" data-status=\"total\">{total}</span>\
         <span class=\"label\">jobs</span></div>"
    ));
    for status in Status::ALL {
        let n = stats["by_status"][status.as_str()].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "<div class=\"count card s-{s}\"><span class=\"n\" data-status=\"{s}\">{n}</span>\
             <span class=\"label\">{label}</span></div>",
            s = status.as_str(),
            label = status.as_str().replace('_', " ")
        ));
    }
    let rate = stats["success_rate"]
        .as_f64()
        .map_or("–".to_string(), |r| format!("{:.0}%", r * 100.0));
    let mean = stats["mean_seconds_per_job"]
        .as_f64()
        .map_or("–".to_string(), |s| format!("{s:.1} s"));
    out.push_str(&format!(
        "<div class=\"count card\"><span class=\"n\" data-stat=\"success_rate\">{rate}</span>\
         <span class=\"label\">success</span></div>\
         <div class=\"count card\"><span class=\"n\" data-stat=\"mean\">{mean}</span>\
         <span class=\"label\">mean per job</span></div></section>"
    ));
    out
}

fn jobs_table(book: &Book) -> String {
    let mut rows = String::new();
    for job in book.jobs().rev().take(RECENT_JOBS) {
        let status = job.status();
        let reason = match status {
            Status::Completed => String::new(),
            _ => views::failure_line(job).unwrap_or_default(),
        };
        rows.push_str(&format!(
            "<tr data-job=\"{id}\"><td class=\"id\">{id}</td>\
             <td><span class=\"badge s-{s}\" data-field=\"status\">{label}</span></td>\
             <td class=\"num\" data-field=\"attempts\">{attempts}/{max}</td>\
             <td data-field=\"proposal\">{proposal}</td>\
             <td class=\"reason\" data-field=\"reason\">{reason}{evidence}</td>\
             <td class=\"when\">{updated}</td></tr>",
            id = esc(&job.id.0),
            s = status.as_str(),
            label = status.as_str().replace('_', " "),
            attempts = views::round_attempts(job),
            max = job.machine.max_attempts(),
            proposal = esc(job.proposal_no.as_deref().unwrap_or("")),
            reason = esc(&reason),
            evidence = evidence_links(job),
            updated = short_time(job.updated_at),
        ));
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"6\" class=\"empty\">No jobs yet.</td></tr>");
    }
    format!(
        "<section class=\"card jobs\"><h2>Recent jobs</h2><table id=\"jobs\">\
         <thead><tr><th>job</th><th>status</th><th class=\"num\">attempts</th>\
         <th>proposal</th><th>failure reason</th><th>updated</th></tr></thead>\
         <tbody>{rows}</tbody></table></section>"
    )
}

/// Links to the last failure's evidence, one per file, named by its kind.
fn evidence_links(job: &crate::book::JobRecord) -> String {
    let Some(failure) = job
        .last_failure
        .as_ref()
        .filter(|_| job.status() != Status::Completed)
    else {
        return String::new();
    };
    failure
        .artifacts
        .iter()
        .map(|key| {
            let kind = key.rsplit_once('.').map_or("file", |(_, ext)| ext);
            format!(
                " <a class=\"evidence\" href=\"{}\" target=\"_blank\" rel=\"noopener\">{}</a>",
                esc(&super::evidence::href(key)),
                esc(kind)
            )
        })
        .collect()
}

fn session_card(book: &Book, health: Health) -> String {
    let s = &book.session;
    let state = format!("{:?}", s.status()).to_lowercase();
    let rung = s.machine.rung().map_or(String::new(), |(level, attempt)| {
        format!("<dt>recovery</dt><dd>{} try {attempt}</dd>", level.as_str())
    });
    let current = s.current_recovery().map_or(String::new(), |r| {
        format!(
            "<dt>since</dt><dd>{} ({})</dd>",
            short_time(r.started_at),
            esc(&r.trigger)
        )
    });
    format!(
        "<section class=\"card session\"><h2>Master session</h2><dl>\
         <dt>state</dt><dd><span class=\"badge m-{state}\" id=\"session-state\">{state}</span></dd>\
         <dt>workers see</dt><dd>{health}</dd>\
         <dt>last login</dt><dd>{login}</dd>{rung}{current}</dl></section>",
        health = views::health_str(health),
        login = s.last_login_at.map_or("never".into(), short_time),
    )
}

fn recoveries_table(book: &Book) -> String {
    let mut rows = String::new();
    for r in book.session.recoveries.iter().rev().take(RECENT_RECOVERIES) {
        let tries: Vec<String> = r
            .tries
            .iter()
            .map(|t| {
                let mark = if t.error.is_none() { "✓" } else { "✗" };
                format!("{} {}{mark}", t.level.as_str(), t.attempt)
            })
            .collect();
        let outcome = match r.outcome {
            RecoveryOutcome::Running => "running",
            RecoveryOutcome::Recovered => "recovered",
            RecoveryOutcome::Down => "down",
            RecoveryOutcome::Abandoned => "abandoned",
        };
        rows.push_str(&format!(
            "<tr><td class=\"when\" title=\"{}\">{}</td><td>{}</td><td>{}</td>\
             <td><span class=\"badge r-{outcome}\">{outcome}</span></td></tr>",
            short_time(r.started_at),
            &short_time(r.started_at)[11..19],
            esc(&r.trigger),
            esc(&tries.join(", ")),
        ));
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"4\" class=\"empty\">No recoveries.</td></tr>");
    }
    format!(
        "<section class=\"card\"><h2>Recoveries</h2><table id=\"recoveries\">\
         <thead><tr><th>started</th><th>trigger</th><th>tries</th><th>outcome</th></tr></thead>\
         <tbody>{rows}</tbody></table></section>"
    )
}

/// Refreshes `#live` every two seconds; a signed-out answer reloads the
/// page (which then shows the login form).
const SCRIPT: &str = r#"<script>
(function () {
  var live = document.getElementById('live');
  var updated = document.getElementById('updated');
  function stamp() { updated.textContent = 'updated ' + new Date().toLocaleTimeString(); }
  function refresh() {
    fetch('/dashboard/live', { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) {
        if (r.status === 401) { location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) { if (html !== null) { live.innerHTML = html; stamp(); } })
      .catch(function () { updated.textContent = 'daemon unreachable'; });
  }
  stamp();
  setInterval(refresh, 2000);
})();
</script>"#;
