//! The kube-sandbox binary: --port-file, --log, and a clean exit on SIGTERM.

mod common;

use common::{raw::request, TempDir};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn binary_writes_port_logs_requests_and_stops_on_sigterm() {
    let dir = TempDir::new();
    let (port_file, log) = (dir.path().join("port"), dir.path().join("requests.jsonl"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-sandbox"))
        .args(["--listen", "127.0.0.1:0", "--port-file"])
        .arg(&port_file)
        .arg("--log")
        .arg(&log)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    let port: u16 = loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            break text.trim().parse().expect("port number");
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no port file");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (status, body) = request(port, "GET", "/version", None);
    assert_eq!(status, 200);
    assert!(body.contains("\"minor\":\"32\""), "{body}");

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    let logged = std::fs::read_to_string(&log).expect("log");
    let line: serde_json::Value =
        serde_json::from_str(logged.lines().next().expect("a line")).expect("json line");
    assert_eq!(
        (
            line["method"].as_str(),
            line["path"].as_str(),
            line["status"].as_u64()
        ),
        (Some("GET"), Some("/version"), Some(200))
    );
}

#[test]
fn help_describes_the_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_kube-sandbox"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--port-file") && text.contains("--log") && text.contains("SIGTERM"));
}
