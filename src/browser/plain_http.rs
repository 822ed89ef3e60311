//! A minimal HTTP client for the few requests made outside WebDriver:
//! polling chromedriver's `/status` while it starts, posting a captcha image
//! to an HTTP solver, and posting alert webhooks. It reuses the hyper and
//! rustls stack that fantoccini already brings in rather than adding a
//! second HTTP client.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// An answer: status code and the whole body.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends one request and reads the whole answer, bounded by `timeout`.
/// Errors are plain text: each caller wraps them in its own error type,
/// naming what it was talking to.
pub(crate) async fn send(
    method: http::Method,
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Reply, String> {
    // https for webhooks and hosted solvers; plain http for chromedriver and
    // anything on loopback. Trust comes from the system's CA store.
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("loading the system's CA certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    let mut request = http::Request::builder().method(method).uri(url);
    if let Some(ct) = content_type {
        request = request.header(http::header::CONTENT_TYPE, ct);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad request: {e}"))?;

    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(Reply { status, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}
