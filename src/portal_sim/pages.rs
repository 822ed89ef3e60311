//! The HTML pages, built from the templates in `assets/`.
//!
//! Templates mark slots as `{{name}}`. Values given as text are escaped;
//! values given as markup are inserted as they are. The rename fault switch
//! is applied last, to the finished page.

use std::collections::BTreeMap;

use super::catalogue;
use super::faults::FaultState;

const LAYOUT: &str = include_str!("assets/layout.html");
const HEADER: &str = include_str!("assets/header.html");
const LOGIN: &str = include_str!("assets/login.html");
const DASHBOARD: &str = include_str!("assets/dashboard.html");
const POPUP: &str = include_str!("assets/popup.html");
const PROPOSAL: &str = include_str!("assets/proposal.html");
const CLIENT: &str = include_str!("assets/client.html");

/// The stylesheet, served at `/Content/site.css`.
pub const SITE_CSS: &str = include_str!("assets/site.css");
/// Widgets and helpers, served at `/Scripts/portal.js`.
pub const PORTAL_JS: &str = include_str!("assets/portal.js");
/// The login page's script, served at `/Scripts/login.js`.
pub const LOGIN_JS: &str = include_str!("assets/login.js");
/// The proposal page's script, served at `/Scripts/proposal.js`.
pub const PROPOSAL_JS: &str = include_str!("assets/proposal.js");
/// The client form's script, served at `/Scripts/client.js`.
pub const CLIENT_JS: &str = include_str!("assets/client.js");

pub use crate::html::escape;

/// Fills a template's slots with markup.
fn fill(template: &str, slots: &[(&str, &str)]) -> String {
    let mut page = template.to_owned();
    for (name, markup) in slots {
        page = page.replace(&format!("{{{{{name}}}}}"), markup);
    }
    page
}

/// What every page needs from the fault switches.
#[derive(Debug, Clone)]
pub struct PageContext {
    fast_typing_drop: bool,
    fast_typing_window_ms: u64,
    mask_hold_ms: u64,
    no_delays: bool,
    renamed_ids: BTreeMap<String, String>,
}

impl From<&FaultState> for PageContext {
    fn from(f: &FaultState) -> Self {
        Self {
            fast_typing_drop: f.fast_typing_drop,
            fast_typing_window_ms: f.fast_typing_window_ms,
            mask_hold_ms: f.mask_hold_ms,
            no_delays: f.no_delays,
            renamed_ids: f.renamed_ids.clone(),
        }
    }
}

impl PageContext {
    fn page(
        &self,
        title: &str,
        body_class: &str,
        header: &str,
        body: &str,
        script: &str,
    ) -> String {
        let scripts = if script.is_empty() {
            String::new()
        } else {
            format!("<script src=\"/Scripts/{script}\"></script>")
        };
        let html = fill(
            LAYOUT,
            &[
                ("title", &escape(title)),
                ("body_class", body_class),
                (
                    "fast_typing_drop",
                    if self.fast_typing_drop { "1" } else { "0" },
                ),
                (
                    "fast_typing_window_ms",
                    &self.fast_typing_window_ms.to_string(),
                ),
                ("mask_hold_ms", &self.mask_hold_ms.to_string()),
                ("no_delays", if self.no_delays { "1" } else { "0" }),
                ("header", header),
                ("body", body),
                ("scripts", &scripts),
            ],
        );
        self.rename(html)
    }

    /// Applies the rename fault: `id="from"` (and labels pointing at it)
    /// become `id="to"`.
    fn rename(&self, mut html: String) -> String {
        for (from, to) in &self.renamed_ids {
            html = html
                .replace(&format!("id=\"{from}\""), &format!("id=\"{to}\""))
                .replace(&format!("for=\"{from}\""), &format!("for=\"{to}\""));
        }
        html
    }

    fn header(&self, user: &str) -> String {
        fill(HEADER, &[("user", &escape(user))])
    }

    /// The login form. `errors` go in the validation summary; `notice` is
    /// shown above it (for example after a session expired).
    pub fn login(&self, username: &str, errors: &[&str], notice: Option<&str>) -> String {
        let errors = if errors.is_empty() {
            String::new()
        } else {
            let items: String = errors
                .iter()
                .map(|e| format!("<li>{}</li>", escape(e)))
                .collect();
            format!(
                "<div class=\"validation-summary-errors\" id=\"divLoginErrors\">\
                 <ul>{items}</ul></div>"
            )
        };
        let notice = notice
            .map(|n| {
                format!(
                    "<div class=\"session-info\" id=\"divSessionInfo\">{}</div>",
                    escape(n)
                )
            })
            .unwrap_or_default();
        let nonce = super::session::token(8);
        let body = fill(
            LOGIN,
            &[
                ("errors", &errors),
                ("notice", &notice),
                ("username", &escape(username)),
                ("nonce", &nonce),
            ],
        );
        let header =
            "<header class=\"topbar\"><div class=\"brand\"><span class=\"brand-mark\">A</span> \
                      Agent Portal <small>simulated</small></div></header>";
        self.page("Login", "login", header, &body, "login.js")
    }

    /// The dashboard; `show_popup` adds the after-login notice.
    pub fn dashboard(
        &self,
        user: &str,
        show_popup: bool,
        proposals_today: usize,
        links_sent: usize,
    ) -> String {
        let login_time = chrono::Local::now().format("%d/%m/%Y %H:%M").to_string();
        let body = fill(
            DASHBOARD,
            &[
                ("user", &escape(user)),
                ("proposals_today", &proposals_today.to_string()),
                ("links_sent", &links_sent.to_string()),
                ("login_time", &login_time),
                ("popup", if show_popup { POPUP } else { "" }),
            ],
        );
        self.page("Dashboard", "dashboard", &self.header(user), &body, "")
    }

    /// The two-wheeler proposal page.
    pub fn proposal(&self, user: &str, this_year: i32) -> String {
        let products: String = catalogue::PRODUCTS
            .iter()
            .map(|p| {
                format!(
                    "<li class=\"k-item\" role=\"option\" data-value=\"{}\">{}</li>",
                    p.code,
                    escape(p.name)
                )
            })
            .collect();
        let mut months = String::from("<option value=\"\">Month</option>");
        for m in 1..=12 {
            months.push_str(&format!("<option>{m:02}</option>"));
        }
        let mut years = String::from("<option value=\"\">Year</option>");
        for y in (this_year - 15..=this_year).rev() {
            years.push_str(&format!("<option>{y}</option>"));
        }
        let financier_types: String = catalogue::FINANCIER_TYPES
            .iter()
            .map(|t| format!("<option>{}</option>", escape(t)))
            .collect();
        let body = fill(
            PROPOSAL,
            &[
                ("products", &products),
                ("months", &months),
                ("years", &years),
                ("financier_types", &financier_types),
            ],
        );
        self.page(
            "Two Wheeler Proposal",
            "proposal",
            &self.header(user),
            &body,
            "proposal.js",
        )
    }

    /// The client-details form shown in the proposal page's iframe.
    pub fn client(&self) -> String {
        self.page("Client details", "frame", "", CLIENT, "client.js")
    }
}

/// ASP.NET's yellow error page, for the "500 after save" fault.
pub fn server_error() -> String {
    "<!DOCTYPE html><html><head><title>Runtime Error</title></head><body \
     style=\"font-family:Verdana;background:#fff\"><h1 style=\"color:#c00\">Server Error in \
     '/' Application.</h1><h2><i>Runtime Error</i></h2><p>An application error occurred on \
     the server.</p></body></html>"
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn rename_changes_only_the_named_id() {
        let mut faults = FaultState::default();
        faults
            .renamed_ids
            .insert("txtEngineNo".into(), "txtEngineNumber".into());
        let html = PageContext::from(&faults).proposal("agent01", 2026);
        assert!(html.contains("id=\"txtEngineNumber\""));
        assert!(!html.contains("id=\"txtEngineNo\""));
        assert!(html.contains("id=\"txtChassisNo\""));
    }

    #[test]
    fn no_slot_is_left_unfilled() {
        let ctx = PageContext::from(&FaultState::default());
        for page in [
            ctx.login("", &["x"], Some("y")),
            ctx.dashboard("agent01", true, 0, 0),
            ctx.proposal("agent01", 2026),
            ctx.client(),
        ] {
            assert!(!page.contains("{{"), "unfilled slot in {page}");
        }
    }
}
