//! A small portal served by axum on 127.0.0.1 port 0, just enough of the
//! real one's behaviour to drive the browser layer: a login with a captcha
//! (its text also in a hidden element), a session cookie plus a persistent
//! one, a dashboard with a hover menu and a popup, and a form page with a
//! Kendo-style list, a type-ahead, a loading mask that swallows clicks, an
//! iframe, a confirm, a date input and a save that records proposals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

pub const USER: &str = "agent7";
pub const PASSWORD: &str = "pa55word";
pub const SESSION_COOKIE: &str = "ASP.NET_SessionId";
pub const PERSISTENT_COOKIE: &str = "PortalRemember";
pub const CAPTCHA_COOKIE: &str = "CaptchaKey";

/// What the portal remembers.
#[derive(Default)]
pub struct Portal {
    /// Live sessions: session cookie -> persistent cookie.
    pub sessions: HashMap<String, String>,
    /// Captcha text by captcha cookie.
    pub captchas: HashMap<String, String>,
    /// The last captcha issued (what the HTTP solver answers).
    pub last_captcha: String,
    /// Refuse the next N captcha answers even when right.
    pub refuse_captchas: u32,
    /// Login posts seen.
    pub login_posts: u32,
    /// Saved proposals (the ledger).
    pub proposals: Vec<String>,
    /// PNG sizes the HTTP solver received.
    pub solved_images: Vec<(u32, u32)>,
    counter: u64,
}

impl Portal {
    fn next(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{:06}{}", self.counter, rand::random::<u32>())
    }

    fn new_captcha(&mut self, key: &str) -> String {
        const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let text: String = (0..5)
            .map(|_| CHARS[rand::random::<usize>() % CHARS.len()] as char)
            .collect();
        self.captchas.insert(key.to_string(), text.clone());
        self.last_captcha = text.clone();
        text
    }

    /// Forgets every session (the portal's idle timeout, all at once).
    pub fn expire_all(&mut self) {
        self.sessions.clear();
    }
}

pub type Shared = Arc<Mutex<Portal>>;

pub fn lock(p: &Shared) -> MutexGuard<'_, Portal> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running fixture; the server stops when it is dropped.
pub struct Fixture {
    pub base_url: String,
    pub portal: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub async fn start() -> Fixture {
    let portal: Shared = Arc::default();
    let app = Router::new()
        .route("/Login/IMDLogin", get(login_page).post(login_post))
        .route("/captcha.png", get(captcha_png))
        .route("/solve", post(solve))
        .route("/Home/Dashboard", get(dashboard))
        .route("/form", get(form_page))
        .route("/client", get(client_page))
        .route("/save", post(save))
        .with_state(portal.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fixture portal");
    let addr = listener.local_addr().expect("fixture address");
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("fixture portal");
    });
    Fixture {
        base_url: format!("http://{addr}"),
        portal,
        server,
    }
}

fn cookies(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Logged in only with both cookies of a live session.
fn logged_in(portal: &Portal, headers: &HeaderMap) -> bool {
    let c = cookies(headers);
    match (c.get(SESSION_COOKIE), c.get(PERSISTENT_COOKIE)) {
        (Some(s), Some(p)) => portal.sessions.get(s) == Some(p),
        _ => false,
    }
}

/// Keys typed within 100 ms of a field gaining focus are dropped, like the
/// real portal does.
const DROP_EARLY_KEYS: &str = r#"
<script>
for (const el of document.querySelectorAll('input.drops-early')) {
  let until = 0;
  el.addEventListener('focus', () => { until = Date.now() + 100; });
  el.addEventListener('keydown', (e) => { if (Date.now() < until) { e.preventDefault(); } });
}
</script>"#;

fn login_html(portal: &mut Portal, key: &str, error: &str) -> String {
    let text = portal.new_captcha(key);
    let error_html = if error.is_empty() {
        String::new()
    } else {
        format!(r#"<div class="validation-summary-errors"><ul><li>{error}</li></ul></div>"#)
    };
    format!(
        r#"<!doctype html><html><head><title>Login</title></head><body>
<form method="post" action="/Login/IMDLogin">
{error_html}
<input id="txtUserName" name="txtUserName" class="drops-early">
<input id="txtPassword" name="txtPassword" type="password" class="drops-early">
<img id="CaptchaImage" src="/captcha.png?k={key}&n={n}" width="240" height="80">
<span id="CaptchaText" style="display:none">{text}</span>
<input id="CaptchaInputText" name="CaptchaInputText" class="drops-early">
<button id="btnLogin" type="submit">Login</button>
</form>{DROP_EARLY_KEYS}</body></html>"#,
        n = portal.counter,
    )
}

async fn login_page(State(portal): State<Shared>, headers: HeaderMap) -> Response {
    let mut p = lock(&portal);
    let key = cookies(&headers)
        .get(CAPTCHA_COOKIE)
        .cloned()
        .unwrap_or_else(|| p.next("c"));
    let html = login_html(&mut p, &key, "");
    (
        [(
            header::SET_COOKIE,
            format!("{CAPTCHA_COOKIE}={key}; Path=/"),
        )],
        Html(html),
    )
        .into_response()
}

async fn login_post(
    State(portal): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut p = lock(&portal);
    p.login_posts += 1;
    let key = cookies(&headers)
        .get(CAPTCHA_COOKIE)
        .cloned()
        .unwrap_or_default();
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let expected = p.captchas.get(&key).cloned().unwrap_or_default();
    let captcha_ok = !expected.is_empty() && field("CaptchaInputText") == expected;
    if !captcha_ok || p.refuse_captchas > 0 {
        p.refuse_captchas = p.refuse_captchas.saturating_sub(1);
        return Html(login_html(&mut p, &key, "Captcha is not valid")).into_response();
    }
    if field("txtUserName") != USER || field("txtPassword") != PASSWORD {
        return Html(login_html(&mut p, &key, "Invalid user name or password")).into_response();
    }
    let session = p.next("s");
    let remember = p.next("r");
    p.sessions.insert(session.clone(), remember.clone());
    let mut response = Redirect::to(&format!("/Home/Dashboard?lgn={}", p.counter)).into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        format!("{SESSION_COOKIE}={session}; Path=/; HttpOnly")
            .parse()
            .expect("cookie header"),
    );
    h.append(
        header::SET_COOKIE,
        format!("{PERSISTENT_COOKIE}={remember}; Path=/; Max-Age=86400")
            .parse()
            .expect("cookie header"),
    );
    response
}

async fn captcha_png() -> Response {
    ([(header::CONTENT_TYPE, "image/png")], png(120, 40)).into_response()
}

/// The HTTP solver: checks it got a real PNG of the captcha's natural size
/// and answers the last captcha issued.
async fn solve(State(portal): State<Shared>, body: axum::body::Bytes) -> Response {
    let Some(size) = png_size(&body) else {
        return (StatusCode::BAD_REQUEST, "not a PNG").into_response();
    };
    let mut p = lock(&portal);
    p.solved_images.push(size);
    // Lower case plus noise: the solver's charset filter must clean it.
    format!(" {}\n", p.last_captcha.to_lowercase()).into_response()
}

async fn dashboard(State(portal): State<Shared>, headers: HeaderMap) -> Response {
    let mut p = lock(&portal);
    if !logged_in(&p, &headers) {
        // An expired session gets the login form, with HTTP 200.
        let key = p.next("c");
        let html = login_html(&mut p, &key, "");
        return (
            [(
                header::SET_COOKIE,
                format!("{CAPTCHA_COOKIE}={key}; Path=/"),
            )],
            Html(html),
        )
            .into_response();
    }
    Html(
        r##"<!doctype html><html><head><title>Dashboard</title><style>
#divMainMotors .sub { display: none; }
#divMainMotors:hover .sub { display: block; }
#divPopup { position: fixed; top: 100px; left: 100px; background: #fff; border: 1px solid; }
</style></head><body>
<div id="divMainMotors">Motors<div class="sub"><a id="lnkTwoWheeler" href="#" onclick="document.getElementById('picked').textContent='Two Wheeler'; return false;">Two Wheeler</a></div></div>
<div id="picked"></div>
<div id="divLogout">Logout</div>
<div id="divPopup" style="display:none"><span class="k-window-action" onclick="document.getElementById('divPopup').style.display='none'; document.getElementById('popupClosed').textContent='yes';">x</span></div>
<div id="popupClosed"></div>
<script>setTimeout(() => { document.getElementById('divPopup').style.display = 'block'; }, 300);</script>
</body></html>"##,
    )
    .into_response()
}

async fn form_page() -> Html<String> {
    Html(format!(
        r#"<!doctype html><html><head><title>Proposal</title><style>
.k-loading-mask {{ position: fixed; left: 0; top: 0; width: 100%; height: 100%; z-index: 1000; background: rgba(0,0,0,0.2); display: none; }}
ul {{ list-style: none; margin: 0; padding: 0; }}
li {{ padding: 2px; cursor: pointer; }}
</style></head><body>
<div class="k-loading-mask" id="mask"></div>

<span aria-owns="ddlProduct_listbox" class="k-dropdown"><span class="k-input" id="productText">Select</span></span>
<ul id="ddlProduct_listbox" style="display:none"></ul>

<button id="btnFetchIdv" type="button">Fetch IDV</button>
<button id="btnCalc" type="button">Calculate</button>
<div id="premium"></div>

<input id="txtRto" autocomplete="off">
<ul id="rtoList"></ul>
<input id="RtoCode" type="hidden">

<select id="ddlTitle"></select>
<div id="titleEcho"></div>

<input id="dtPurchase" type="date">
<div id="dateEcho"></div>

<input id="chkNew" type="checkbox">

<input id="txtEngine" class="drops-early">

<button id="btnConfirm" type="button">Confirm</button>
<div id="confirmed"></div>

<iframe id="frmClient" src="/client" width="400" height="150"></iframe>

<button id="btnSave" type="button">Save</button>
<div id="ProposalNo"></div>

<script>
const mask = document.getElementById('mask');
// The mask swallows clicks: nothing under it gets them.
mask.addEventListener('click', (e) => e.stopPropagation());
const showMask = (ms) => {{ mask.style.display = 'block'; setTimeout(() => {{ mask.style.display = 'none'; }}, ms); }};

const opener = document.querySelector('span[aria-owns="ddlProduct_listbox"]');
const list = document.getElementById('ddlProduct_listbox');
opener.addEventListener('click', () => {{
  list.style.display = list.style.display === 'none' ? 'block' : 'none';
  if (!list.children.length) {{
    setTimeout(() => {{
      for (const name of ['Private Car', 'Two Wheeler', 'Two Wheeler Long Term']) {{
        const li = document.createElement('li');
        li.textContent = name;
        li.addEventListener('click', () => {{
          document.getElementById('productText').textContent = name;
          list.style.display = 'none';
        }});
        list.appendChild(li);
      }}
    }}, 300);
  }}
}});

document.getElementById('btnFetchIdv').addEventListener('click', () => showMask(800));
document.getElementById('btnCalc').addEventListener('click', () => {{
  document.getElementById('premium').textContent = '1234';
}});

const rtos = ['KA-01 BANGALORE CENTRAL', 'KA-03 BANGALORE EAST', 'MH-01 MUMBAI'];
const rto = document.getElementById('txtRto');
const rtoList = document.getElementById('rtoList');
rto.addEventListener('input', () => {{
  const q = rto.value.toUpperCase();
  rtoList.innerHTML = '';
  if (q.length < 2) {{ return; }}
  setTimeout(() => {{
    rtoList.innerHTML = '';
    for (const r of rtos.filter((r) => r.includes(q))) {{
      const li = document.createElement('li');
      li.className = 'rto-item';
      li.textContent = r;
      li.addEventListener('click', () => {{
        rto.value = r;
        document.getElementById('RtoCode').value = r.slice(0, 5);
        rtoList.innerHTML = '';
      }});
      rtoList.appendChild(li);
    }}
  }}, 250);
}});

const title = document.getElementById('ddlTitle');
setTimeout(() => {{
  for (const t of ['', 'Mr.', 'Mrs.', 'Ms.']) {{ title.add(new Option(t, 'v' + t)); }}
}}, 200);
title.addEventListener('change', () => {{ document.getElementById('titleEcho').textContent = title.value; }});

const dt = document.getElementById('dtPurchase');
dt.addEventListener('change', () => {{ document.getElementById('dateEcho').textContent = dt.value; }});

document.getElementById('btnConfirm').addEventListener('click', () => {{
  setTimeout(() => {{
    if (confirm('Proceed?')) {{ document.getElementById('confirmed').textContent = 'yes'; }}
  }}, 100);
}});

document.getElementById('btnSave').addEventListener('click', async () => {{
  showMask(500);
  const r = await fetch('/save', {{ method: 'POST' }});
  const no = await r.text();
  setTimeout(() => {{ document.getElementById('ProposalNo').textContent = no; }}, 600);
}});
</script>{DROP_EARLY_KEYS}</body></html>"#
    ))
}

async fn client_page() -> Html<&'static str> {
    Html(
        r#"<!doctype html><html><body>
<input id="txtFirstName">
<button id="btnSaveClient" type="button" onclick="document.getElementById('saved').textContent = 'saved ' + document.getElementById('txtFirstName').value;">Save</button>
<div id="saved"></div>
</body></html>"#,
    )
}

async fn save(State(portal): State<Shared>) -> String {
    let mut p = lock(&portal);
    let no = format!("P-{:04}", p.proposals.len() + 1);
    p.proposals.push(no.clone());
    no
}

// A minimal PNG encoder (grey, stored deflate blocks): enough for a
// captcha image the browser can draw on a canvas.

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend(kind);
    out.extend(data);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0); // filter: none
        for x in 0..width {
            raw.push(if (x / 8 + y / 8) % 2 == 0 { 40 } else { 220 });
        }
    }
    let mut z = vec![0x78, 0x01];
    for (i, block) in raw.chunks(65_535).enumerate() {
        let last = (i + 1) * 65_535 >= raw.len();
        z.push(u8::from(last));
        let len = block.len() as u16;
        z.extend(len.to_le_bytes());
        z.extend((!len).to_le_bytes());
        z.extend(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend(((b << 16) | a).to_be_bytes());

    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit grey
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((w, h))
}
