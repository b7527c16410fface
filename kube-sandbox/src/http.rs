//! A small threaded HTTP/1.1 server on std::net: one thread per connection,
//! keep-alive, chunked watch streams, TCP_NODELAY on every socket (kubectl
//! reuses connections, and Nagle plus delayed ACKs would cost ~40 ms per
//! request), fault injection, and the request log.

use crate::api::{self, ApiError, Reply, Request};
use crate::{FaultKind, RequestLog, Shared};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const MAX_HEADER_BYTES: usize = 1 << 20;
const MAX_BODY_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Connections {
    next_id: u64,
    open: HashMap<u64, TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

pub struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Connections>>,
}

impl Server {
    pub fn start(listener: TcpListener, shared: Arc<Shared>) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let conns: Arc<Mutex<Connections>> = Arc::default();
        let accept = {
            let (shared, conns) = (Arc::clone(&shared), Arc::clone(&conns));
            std::thread::Builder::new()
                .name("kube-sandbox-accept".into())
                .spawn(move || accept_loop(listener, shared, conns))?
        };
        Ok(Server {
            shared,
            addr,
            accept: Some(accept),
            conns,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes every connection (ending watches), and joins
    /// all server threads.
    pub fn stop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        // Wake the blocking accept() so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let threads = {
            let mut c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            for s in c.open.values() {
                let _ = s.shutdown(Shutdown::Both);
            }
            std::mem::take(&mut c.threads)
        };
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, conns: Arc<Mutex<Connections>>) {
    for stream in listener.incoming() {
        if shared.is_shutdown() {
            return;
        }
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let mut c = conns.lock().unwrap_or_else(|e| e.into_inner());
        c.threads.retain(|t| !t.is_finished());
        let id = c.next_id;
        c.next_id += 1;
        c.open.insert(id, clone);
        let (shared, registry) = (Arc::clone(&shared), Arc::clone(&conns));
        let spawned = std::thread::Builder::new()
            .name("kube-sandbox-conn".into())
            .spawn(move || {
                serve_connection(stream, &shared);
                registry
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .open
                    .remove(&id);
            });
        match spawned {
            Ok(t) => c.threads.push(t),
            Err(_) => {
                c.open.remove(&id);
            }
        }
    }
}

enum ReadError {
    Io,
    Bad(String),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> ReadError {
        ReadError::Io
    }
}

/// Reads more bytes into `buf`; Ok(false) on end of stream.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one request; Ok(None) when the client closed the connection
/// between requests.
fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<(Request, String, bool)>, ReadError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 96];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = parsed.method.unwrap_or_default().to_string();
                let target = parsed.path.unwrap_or_default().to_string();
                let http10 = parsed.version == Some(0);
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                buf.drain(..head_len);
                let mut req = Request {
                    method,
                    path: String::new(),
                    query: Vec::new(),
                    headers,
                    body: Vec::new(),
                };
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                req.path = percent_decode(path);
                req.query = query
                    .split('&')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        (percent_decode(k), percent_decode(v))
                    })
                    .collect();
                req.body = read_body(stream, buf, &req)?;
                let connection = req
                    .header("connection")
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let keep_alive = if http10 {
                    connection == "keep-alive"
                } else {
                    connection != "close"
                };
                return Ok(Some((req, target, keep_alive)));
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEADER_BYTES {
                    return Err(ReadError::Bad("request headers too large".into()));
                }
                if !fill(stream, buf)? {
                    return if buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(ReadError::Io)
                    };
                }
            }
            Err(e) => return Err(ReadError::Bad(format!("malformed HTTP request: {e}"))),
        }
    }
}

fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    req: &Request,
) -> Result<Vec<u8>, ReadError> {
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                if buf.len() > MAX_HEADER_BYTES || !fill(stream, buf)? {
                    return Err(ReadError::Bad("truncated chunked body".into()));
                }
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16)
                    .map_err(|_| ReadError::Bad(format!("bad chunk size {size_text:?}")))?;
            buf.drain(..line_end + 2);
            if body.len() + size > MAX_BODY_BYTES {
                return Err(ReadError::Bad("request body too large".into()));
            }
            while buf.len() < size + 2 {
                if !fill(stream, buf)? {
                    return Err(ReadError::Bad("truncated chunked body".into()));
                }
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                return Ok(body);
            }
        }
    }
    let len = match req.header("content-length") {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| ReadError::Bad(format!("bad Content-Length {v:?}")))?,
    };
    if len > MAX_BODY_BYTES {
        return Err(ReadError::Bad("request body too large".into()));
    }
    while buf.len() < len {
        if !fill(stream, buf)? {
            return Err(ReadError::Bad("truncated request body".into()));
        }
    }
    Ok(buf.drain(..len).collect())
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_full(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-cache, private\r\n{}\r\n",
        reason_phrase(status),
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" }
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    stream.write_all(&out)
}

fn serve_connection(mut stream: TcpStream, shared: &Arc<Shared>) {
    let mut buf = Vec::new();
    while !shared.is_shutdown() {
        let (req, target, keep_alive) = match read_request(&mut stream, &mut buf) {
            Ok(Some(r)) => r,
            Ok(None) | Err(ReadError::Io) => return,
            Err(ReadError::Bad(msg)) => {
                let body =
                    serde_json::to_vec(&ApiError::new(400, msg).status()).unwrap_or_default();
                let _ = write_full(&mut stream, 400, "application/json", &body, false);
                return;
            }
        };
        let reply = match injected_fault(shared, &req.method, &target) {
            Injected::Fail(code) => ApiError::new(
                code,
                format!("kube-sandbox: injected failure for {}", req.path),
            )
            .reply(),
            Injected::AfterWrite(code) => {
                // The write happens (a watch it starts is answered as usual: not a write).
                match handle(shared, &req) {
                    Reply::Body { .. } => ApiError::new(
                        code,
                        format!(
                            "kube-sandbox: injected failure after the write of {}",
                            req.path
                        ),
                    )
                    .reply(),
                    watch => watch,
                }
            }
            Injected::None => handle(shared, &req),
        };
        let (status, result) = match reply {
            Reply::Body {
                status,
                content_type,
                body,
            } => (
                status,
                write_full(&mut stream, status, content_type, &body, keep_alive),
            ),
            Reply::Watch(w) => {
                shared.log_request(RequestLog {
                    method: req.method.clone(),
                    path: target.clone(),
                    content_type: req.content_type().map(String::from),
                    status: 200,
                });
                if stream_watch(&mut stream, shared, &w).is_err() {
                    return;
                }
                continue;
            }
        };
        let content_type = req.content_type().map(String::from);
        shared.log_request(RequestLog {
            method: req.method,
            path: target,
            content_type,
            status,
        });
        if result.is_err() || !keep_alive {
            return;
        }
    }
}

/// The request served by the API, a panic answered as a 500.
fn handle(shared: &Arc<Shared>, req: &Request) -> Reply {
    let handled =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| api::handle(shared, req)));
    handled.unwrap_or_else(|_| ApiError::new(500, "kube-sandbox: internal error").reply())
}

/// What the fault list does to one request.
enum Injected {
    None,
    /// Answer this status without serving the request.
    Fail(u16),
    /// Serve the request, then answer this status instead.
    AfterWrite(u16),
}

fn is_write(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH" | "DELETE")
}

/// Applies stall faults (sleeping outside any lock) and returns what the
/// fail faults matching the request path do to it (a plain failure wins).
fn injected_fault(shared: &Shared, method: &str, target: &str) -> Injected {
    let faults = shared
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (mut fail, mut after) = (None, None);
    for f in faults.iter().filter(|f| target.starts_with(&f.prefix)) {
        match &f.kind {
            FaultKind::Stall(d) => std::thread::sleep(*d),
            FaultKind::Fail(code) => fail = Some(*code),
            FaultKind::FailRatio { status, .. } => {
                if f.kind.hits() {
                    fail = Some(*status);
                }
            }
            FaultKind::FailAfterWrite(code) => {
                if is_write(method) {
                    after = Some(*code);
                }
            }
        }
    }
    match (fail, after) {
        (Some(code), _) => Injected::Fail(code),
        (None, Some(code)) => Injected::AfterWrite(code),
        (None, None) => Injected::None,
    }
}

fn stream_watch(stream: &mut TcpStream, shared: &Shared, w: &api::Watch) -> io::Result<()> {
    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache, private\r\n\r\n")?;
    let mut writer = stream.try_clone()?;
    let mut send = |data: &[u8]| -> io::Result<()> {
        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(data);
        chunk.extend_from_slice(b"\r\n");
        writer.write_all(&chunk)
    };
    // A client that hung up shows as a readable socket with zero bytes.
    let mut alive = || {
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut probe = [0u8; 1];
        let open = match stream.peek(&mut probe) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        };
        stream.set_nonblocking(false).is_ok() && open
    };
    api::stream_watch(shared, w, &mut send, &mut alive)?;
    if shared.is_shutdown() {
        return Err(io::Error::other("shutting down"));
    }
    stream.write_all(b"0\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("app%3Dweb%2Ctier+in+%28a%29"),
            "app=web,tier in (a)"
        );
        assert_eq!(percent_decode("100%"), "100%");
    }
}
