//! Server-side sessions, the way ASP.NET keeps them.
//!
//! Every browser gets an `ASP.NET_SessionId` cookie on its first page, before
//! it logs in: that pre-login session holds the captcha answer. A successful
//! login replaces it with a fresh session (so a pre-login id can never become
//! a logged-in one) and adds the `.ASPXAUTH` ticket cookie. A request is
//! logged in only when both cookies point at the same live session.
//!
//! Sessions expire after an idle timeout, measured from their last request.
//! Expired sessions are dropped lazily, when they are next looked at.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rand::distributions::Alphanumeric;
use rand::Rng;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "ASP.NET_SessionId";
/// Name of the persistent authentication-ticket cookie.
pub const AUTH_COOKIE: &str = ".ASPXAUTH";

/// What a logged-in session carries.
#[derive(Debug, Clone)]
pub struct Login {
    /// Value of the `.ASPXAUTH` cookie issued with this login.
    pub ticket: String,
    /// The login marker the dashboard URL carries (`?lgn=...`).
    pub marker: String,
}

/// A client saved through the client-details window, waiting for its
/// proposal.
#[derive(Debug, Clone)]
pub struct ClientRecord {
    /// The form exactly as posted.
    pub fields: BTreeMap<String, String>,
}

/// A premium calculation, which a save must match.
#[derive(Debug, Clone)]
pub struct Quote {
    /// The proposal form as posted to the calculation.
    pub fields: BTreeMap<String, String>,
    /// Total premium in rupees, tax included.
    pub total_premium: u64,
}

/// One browser's session.
#[derive(Debug)]
pub struct Session {
    /// Short label for the ledger and logs; the cookie value itself is a
    /// secret and never logged.
    pub label: String,
    /// When the session last served a request.
    pub last_seen: Instant,
    /// The captcha the login page last showed this browser.
    pub captcha: Option<String>,
    /// Present once logged in.
    pub login: Option<Login>,
    /// The after-login notice has not been shown yet.
    pub popup_pending: bool,
    /// Clients saved in this session, by client id.
    pub clients: HashMap<String, ClientRecord>,
    /// Premium calculations of this session, by quote id.
    pub quotes: HashMap<String, Quote>,
}

/// All sessions of the simulated portal.
#[derive(Debug)]
pub struct SessionStore {
    sessions: HashMap<String, Session>,
    idle_timeout: Duration,
    next_label: u64,
}

/// A random token of `len` letters and digits.
pub fn token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

impl SessionStore {
    /// An empty store whose sessions expire after `idle_timeout`.
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            sessions: HashMap::new(),
            idle_timeout,
            next_label: 1,
        }
    }

    /// Opens a new, not yet logged-in session and returns its cookie value.
    pub fn create(&mut self) -> String {
        self.prune();
        let id = token(24).to_lowercase();
        let label = format!("S{:04}", self.next_label);
        self.next_label += 1;
        self.sessions.insert(
            id.clone(),
            Session {
                label,
                last_seen: Instant::now(),
                captcha: None,
                login: None,
                popup_pending: false,
                clients: HashMap::new(),
                quotes: HashMap::new(),
            },
        );
        id
    }

    /// The live session with this id, marked as used now.
    pub fn touch(&mut self, id: &str) -> Option<&mut Session> {
        let expired = self
            .sessions
            .get(id)
            .is_some_and(|s| s.last_seen.elapsed() > self.idle_timeout);
        if expired {
            self.sessions.remove(id);
            return None;
        }
        let session = self.sessions.get_mut(id)?;
        session.last_seen = Instant::now();
        Some(session)
    }

    /// The live, logged-in session for these cookies, marked as used now.
    pub fn logged_in(&mut self, id: Option<&str>, ticket: Option<&str>) -> Option<&mut Session> {
        let session = self.touch(id?)?;
        let login = session.login.as_ref()?;
        if Some(login.ticket.as_str()) != ticket {
            return None;
        }
        Some(session)
    }

    /// Ends the session with this id, if any.
    pub fn remove(&mut self, id: &str) {
        self.sessions.remove(id);
    }

    /// Ends every session; returns how many were logged in.
    pub fn expire_all(&mut self) -> usize {
        let logged_in = self.active();
        self.sessions.clear();
        logged_in
    }

    /// How many live sessions are logged in.
    pub fn active(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| s.login.is_some() && s.last_seen.elapsed() <= self.idle_timeout)
            .count()
    }

    /// The captcha answer last shown to this pre-login session.
    pub fn captcha_answer(&self, id: &str) -> Option<String> {
        self.sessions.get(id)?.captcha.clone()
    }

    fn prune(&mut self) {
        let idle = self.idle_timeout;
        self.sessions.retain(|_, s| s.last_seen.elapsed() <= idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_needs_matching_ticket() {
        let mut store = SessionStore::new(Duration::from_secs(60));
        let id = store.create();
        store.touch(&id).expect("session").login = Some(Login {
            ticket: "T1".into(),
            marker: "M1".into(),
        });
        assert!(store.logged_in(Some(&id), Some("T1")).is_some());
        assert!(store.logged_in(Some(&id), Some("T2")).is_none());
        assert!(store.logged_in(Some(&id), None).is_none());
        assert_eq!(store.active(), 1);
    }

    #[test]
    fn idle_sessions_expire() {
        let mut store = SessionStore::new(Duration::from_millis(20));
        let id = store.create();
        std::thread::sleep(Duration::from_millis(40));
        assert!(store.touch(&id).is_none());
    }
}
