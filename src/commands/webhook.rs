//! The listener of `hookops watch --listen`: push webhooks from GitHub, GitLab and
//! Gitea/Forgejo/Gogs wake the watcher, and with `[web] serve = true` a `GET` answers with the
//! status page. The port may face the internet, so HTTP/1.1 (parsing, header limits, the
//! header-read timeout) is hyper's, run on a one-thread tokio runtime of its own; this file holds
//! what hookops decides: the limits, what each request gets, and the authentication.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::out::say;

/// Webhook payloads (GitHub caps them at 25 MB, but a push event with its commit list is far
/// smaller; the body is only authenticated, never parsed).
pub const MAX_BODY: usize = 1024 * 1024;
/// Request line and headers together (larger: 431).
pub const MAX_HEADER: usize = 16 * 1024;
/// Connections served at once; as many more are answered 503, and beyond that closed unread.
pub const MAX_CONNECTIONS: usize = 16;
/// For the request's headers to arrive, and then for its body.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// For a whole connection: one request (keep-alive is off), its answer, a status page render.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// For a connection only told that the listener is busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// What every connection's requests share.
struct Shared {
    secret: Vec<u8>,
    /// Set by a verified webhook: the watcher fetches now.
    wake: Arc<AtomicBool>,
    /// The repository whose status page `GET` serves (`[web] serve = true`).
    page: Option<PathBuf>,
}

/// Binds `addr` and serves webhooks on a background thread; a verified one sets `wake`.
/// Answers come before any fetch: forges time out slow receivers and retry.
pub fn serve(
    addr: &str,
    secret: Vec<u8>,
    wake: Arc<AtomicBool>,
    page: Option<PathBuf>,
) -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("--listen {addr}"))?;
    let bound = listener
        .local_addr()
        .with_context(|| format!("--listen {addr}"))?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("--listen {addr}"))?;
    // Page renders run on blocking threads: one at a time renders (page::serve caches), so
    // two are plenty.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(2)
        .thread_name("webhook")
        .build()
        .context("starting the webhook listener")?;
    let shared = Arc::new(Shared { secret, wake, page });
    std::thread::Builder::new()
        .name("webhook".into())
        .spawn(move || runtime.block_on(accept(listener, shared)))
        .context("starting the webhook listener")?;
    Ok(bound)
}

async fn accept(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("webhook listener: {e}");
            return;
        }
    };
    let serving = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let refusing = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait for connections to end.
                log::warn!("webhook listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Ok(permit) = Arc::clone(&serving).try_acquire_owned() {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, Arc::clone(&shared), peer));
                let conn = builder().serve_connection(TokioIo::new(stream), service);
                finish(tokio::time::timeout(CONNECTION_TIMEOUT, conn).await, peer);
                drop(permit);
            });
        } else if let Ok(permit) = Arc::clone(&refusing).try_acquire_owned() {
            tokio::spawn(async move {
                let service = service_fn(|_| async { Ok::<_, Infallible>(plain(503, "busy")) });
                let conn = builder().serve_connection(TokioIo::new(stream), service);
                finish(tokio::time::timeout(BUSY_TIMEOUT, conn).await, peer);
                drop(permit);
            });
        } else {
            log::info!("webhook from {peer}: closed unread: {MAX_CONNECTIONS} connections busy");
        }
    }
}

/// HTTP/1.1 as served here: one request per connection, bounded headers, a deadline for them;
/// header names written `Title-Case`, as the listener always wrote them.
fn builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(IO_TIMEOUT)
        .max_buf_size(MAX_HEADER)
        .keep_alive(false)
        .title_case_headers(true);
    b
}

fn finish(
    result: std::result::Result<hyper::Result<()>, tokio::time::error::Elapsed>,
    peer: SocketAddr,
) {
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::info!("webhook from {peer}: {e}"),
        Err(_) => log::info!("webhook from {peer}: connection closed after its deadline"),
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    peer: SocketAddr,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let (status, why) = match head(req.method(), req.headers()) {
        Head::Get => match &shared.page {
            Some(git_dir) => {
                let (git_dir, path) = (git_dir.clone(), req.uri().path().to_string());
                let answer = tokio::task::spawn_blocking(move || {
                    crate::ops::page::serve::get(&git_dir, &path)
                })
                .await;
                return Ok(match answer {
                    Ok(answer) => page_response(answer),
                    Err(e) => {
                        log::warn!("status page: {e}");
                        plain(500, "status page unavailable")
                    }
                });
            }
            None => (405, "webhooks are POST requests"),
        },
        Head::Refuse(status, why) => (status, why),
        Head::Post(length) => {
            let headers = req.headers().clone();
            match read_body(req.into_body(), length).await {
                Some(body) => match verify(&headers, &body, &shared.secret) {
                    Ok(forge) => {
                        shared.wake.store(true, Ordering::SeqCst);
                        say(&format!("watch: {forge} webhook from {peer}: fetching now"));
                        (202, "accepted")
                    }
                    Err(why) => (401, why),
                },
                None => (400, "body shorter than Content-Length"),
            }
        }
    };
    if status != 202 {
        log::warn!("webhook from {peer}: {status} {why}");
    }
    Ok(plain(status, why))
}

/// What a request's method and headers alone decide.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The status page, if it is served.
    Get,
    /// Answered at once with this status and reason; the body is never read.
    Refuse(u16, &'static str),
    /// A webhook whose body of this length is read next.
    Post(usize),
}

fn head(method: &Method, headers: &HeaderMap) -> Head {
    if method == Method::GET {
        return Head::Get;
    }
    if method != Method::POST {
        return Head::Refuse(405, "webhooks are POST requests");
    }
    if headers.contains_key(hyper::header::TRANSFER_ENCODING) {
        return Head::Refuse(411, "chunked bodies are not accepted; send Content-Length");
    }
    let Some(length) = headers.get(hyper::header::CONTENT_LENGTH) else {
        return Head::Refuse(411, "Content-Length is required");
    };
    match length
        .to_str()
        .ok()
        .and_then(|l| l.trim().parse::<usize>().ok())
    {
        None => Head::Refuse(400, "invalid Content-Length"),
        Some(n) if n > MAX_BODY => Head::Refuse(413, "body larger than 1 MiB"),
        Some(n) => Head::Post(n),
    }
}

/// The body, if all `length` bytes of it arrive in time.
async fn read_body(body: Incoming, length: usize) -> Option<Bytes> {
    let limited = Limited::new(body, MAX_BODY);
    match tokio::time::timeout(IO_TIMEOUT, limited.collect()).await {
        Ok(Ok(collected)) => {
            let bytes = collected.to_bytes();
            (bytes.len() == length).then_some(bytes)
        }
        _ => None,
    }
}

fn plain(status: u16, why: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{why}\n"))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = r.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    if status == 405 {
        headers.insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
    }
    r
}

fn page_response(answer: crate::ops::page::serve::Answer) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(answer.body)));
    *r.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            r.headers_mut().insert(HeaderName::from_static(name), value);
        }
    }
    r
}

/// Authenticates a webhook: GitHub (and newer Gitea) sign the body with HMAC-SHA256 in
/// `X-Hub-Signature-256: sha256=<hex>`, Gitea/Forgejo/Gogs in `X-Gitea-Signature: <hex>` (and
/// their own names), GitLab sends the secret itself in `X-Gitlab-Token`. Returns the forge.
fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> std::result::Result<&'static str, &'static str> {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().map(str::trim).unwrap_or(""))
    };
    if let Some(v) = header("x-hub-signature-256") {
        let hex = v
            .strip_prefix("sha256=")
            .ok_or("malformed X-Hub-Signature-256")?;
        return check_hmac(hex, body, secret).map(|()| "github");
    }
    for name in [
        "x-gitea-signature",
        "x-forgejo-signature",
        "x-gogs-signature",
    ] {
        if let Some(v) = header(name) {
            return check_hmac(v, body, secret).map(|()| "gitea");
        }
    }
    if let Some(token) = header("x-gitlab-token") {
        return if same_secret(token.as_bytes(), secret) {
            Ok("gitlab")
        } else {
            Err("bad X-Gitlab-Token")
        };
    }
    Err("no X-Hub-Signature-256, X-Gitea-Signature or X-Gitlab-Token header")
}

fn check_hmac(hex: &str, body: &[u8], secret: &[u8]) -> std::result::Result<(), &'static str> {
    let expected = decode_hex(hex.trim()).ok_or("signature is not hex")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| "unusable secret")?;
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| "bad signature")
}

/// Whether a token sent as is equals the secret, with neither its length nor its content
/// leaking through timing: each keys an HMAC of the same message, and the two tags are compared
/// by the hmac crate in constant time.
fn same_secret(token: &[u8], secret: &[u8]) -> bool {
    const MESSAGE: &[u8] = b"hookops webhook token";
    let tag = |key: &[u8]| {
        Hmac::<Sha256>::new_from_slice(key).map(|mut mac| {
            mac.update(MESSAGE);
            mac
        })
    };
    match (tag(token), tag(secret)) {
        (Ok(token), Ok(secret)) => token.verify(&secret.finalize().into_bytes()).is_ok(),
        _ => false,
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn webhook_signatures() {
        let secret = b"It's a Secret to Everybody";
        // The example from GitHub's documentation on validating webhook deliveries.
        let body = b"Hello, World!";
        let sig = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let check = |pairs: &[(&str, &str)], body: &[u8]| verify(&headers(pairs), body, secret);
        let github = format!("sha256={sig}");
        assert_eq!(
            check(&[("X-Hub-Signature-256", &github)], body),
            Ok("github")
        );
        assert!(check(&[("X-Hub-Signature-256", sig)], body).is_err());
        assert_eq!(check(&[("X-Gitea-Signature", sig)], body), Ok("gitea"));
        assert_eq!(check(&[("X-Forgejo-Signature", sig)], body), Ok("gitea"));
        assert!(check(&[("X-Gitea-Signature", sig)], b"Hello").is_err());
        assert_eq!(
            check(&[("X-Gitlab-Token", "It's a Secret to Everybody")], body),
            Ok("gitlab")
        );
        assert_eq!(
            check(&[("X-Gitlab-Token", "It's a Secret")], body),
            Err("bad X-Gitlab-Token")
        );
        assert_eq!(
            check(&[("X-Gitlab-Token", "It's a Secret to Everybody!")], body),
            Err("bad X-Gitlab-Token")
        );
        assert!(check(&[], body).is_err());
        assert_eq!(
            check(&[("X-Hub-Signature-256", "sha256=zz")], body),
            Err("signature is not hex")
        );
    }

    #[test]
    fn the_head_alone_refuses_what_is_not_a_webhook() {
        let h = |pairs: &[(&str, &str)]| headers(pairs);
        assert_eq!(head(&Method::GET, &h(&[])), Head::Get);
        assert_eq!(
            head(&Method::PUT, &h(&[("content-length", "2")])),
            Head::Refuse(405, "webhooks are POST requests")
        );
        assert!(matches!(head(&Method::HEAD, &h(&[])), Head::Refuse(405, _)));
        assert_eq!(
            head(&Method::POST, &h(&[("transfer-encoding", "chunked")])),
            Head::Refuse(411, "chunked bodies are not accepted; send Content-Length")
        );
        assert_eq!(
            head(&Method::POST, &h(&[])),
            Head::Refuse(411, "Content-Length is required")
        );
        assert_eq!(
            head(&Method::POST, &h(&[("content-length", "twelve")])),
            Head::Refuse(400, "invalid Content-Length")
        );
        let over = (MAX_BODY + 1).to_string();
        assert_eq!(
            head(&Method::POST, &h(&[("content-length", &over)])),
            Head::Refuse(413, "body larger than 1 MiB")
        );
        let max = MAX_BODY.to_string();
        assert_eq!(
            head(&Method::POST, &h(&[("content-length", &max)])),
            Head::Post(MAX_BODY)
        );
    }

    #[test]
    fn answers_are_plain_text_and_405_says_what_is_allowed() {
        let r = plain(405, "webhooks are POST requests");
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "POST");
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert!(plain(202, "accepted").headers().get("allow").is_none());
    }

    /// A listener on loopback with `secret`, and the flag a verified webhook sets.
    fn listener(secret: &str) -> (SocketAddr, Arc<AtomicBool>) {
        let wake = Arc::new(AtomicBool::new(false));
        let addr = serve(
            "127.0.0.1:0",
            secret.as_bytes().to_vec(),
            Arc::clone(&wake),
            None,
        )
        .unwrap();
        (addr, wake)
    }

    /// Sends `request` as is; the whole answer, up to the server closing the connection.
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(request).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[test]
    fn one_request_per_connection_with_limits_on_headers_and_body() {
        let (addr, wake) = listener("s3cret");
        let post = |extra: &str, body: &str| {
            format!(
                "POST /hooks HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                body.len()
            )
        };
        let answer = exchange(addr, post("X-Gitlab-Token: guess\r\n", "{}").as_bytes());
        assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
        assert!(answer.ends_with("\r\n\r\nbad X-Gitlab-Token\n"), "{answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
        assert!(!wake.load(Ordering::SeqCst));

        // Expect: 100-continue gets its interim answer, then the verdict.
        let answer = exchange(
            addr,
            post("X-Gitlab-Token: s3cret\r\nExpect: 100-continue\r\n", "{}").as_bytes(),
        );
        assert!(answer.contains("HTTP/1.1 202 "), "{answer}");
        assert!(answer.ends_with("accepted\n"), "{answer}");
        assert!(wake.load(Ordering::SeqCst));

        // Refused from the headers alone: the announced body is never waited for.
        let started = std::time::Instant::now();
        let answer = exchange(
            addr,
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let answer = exchange(
            addr,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 411 "), "{answer}");
        let answer = exchange(addr, b"GET / HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
        assert!(answer.contains("Allow: POST"), "{answer}");

        let big = format!(
            "POST / HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEADER + 1)
        );
        let answer = exchange(addr, big.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        let answer = exchange(addr, b"NOT HTTP\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    }

    #[test]
    fn silent_connections_time_out_and_the_surplus_is_told_busy() {
        use std::io::Read;
        let (addr, _) = listener("s3cret");
        let silent: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let answer = exchange(addr, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(answer.ends_with("busy\n"), "{answer}");
        let started = std::time::Instant::now();
        for mut s in silent {
            s.set_read_timeout(Some(IO_TIMEOUT * 2)).unwrap();
            let mut rest = Vec::new();
            // Closed by the server once the header deadline passed, with or without an answer.
            assert!(s.read_to_end(&mut rest).is_ok(), "still open");
        }
        let waited = started.elapsed();
        assert!(waited < IO_TIMEOUT + Duration::from_secs(3), "{waited:?}");
        // Served again once they are gone.
        let answer = exchange(addr, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    }
}
