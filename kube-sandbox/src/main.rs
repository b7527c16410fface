//! The `kube-sandbox` binary: serves the emulated Kubernetes API until SIGTERM
//! or SIGINT, announcing its port through a file so scripts can use port 0.

use kube_sandbox::Sandbox;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "\
kube-sandbox: a Kubernetes API emulator that the real kubectl accepts

Usage: kube-sandbox [--listen ADDR] [--port-file FILE] [--log FILE]

Options:
  --listen ADDR      address to bind (default 127.0.0.1:0; port 0 lets the OS choose)
  --port-file FILE   write the bound port to FILE once ready (atomically)
  --log FILE         append one JSON line per request (method, path, content_type, status)
  -h, --help         show this help

Stops cleanly (exit 0) on SIGTERM or SIGINT. See docs/kube-sandbox.md.";

struct Args {
    listen: String,
    port_file: Option<PathBuf>,
    log: Option<PathBuf>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        listen: "127.0.0.1:0".into(),
        port_file: None,
        log: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => args.listen = value()?,
            "--port-file" => args.port_file = Some(value()?.into()),
            "--log" => args.log = Some(value()?.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(args))
}

/// Readers polling for the file never see it half-written.
fn write_port_file(path: &Path, port: u16) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{port}\n"))?;
    std::fs::rename(&tmp, path)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kube-sandbox: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("kube-sandbox: cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    let sandbox = match Sandbox::bind(&args.listen, args.log.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kube-sandbox: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.port_file {
        if let Err(e) = write_port_file(path, sandbox.port()) {
            eprintln!("kube-sandbox: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    eprintln!("kube-sandbox: serving {}", sandbox.url());
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    sandbox.stop();
    eprintln!("kube-sandbox: stopped");
    ExitCode::SUCCESS
}
