//! Benchmark: one `kubectl apply --server-side -f -` of 2,000 ConfigMaps
//! streamed on stdin, against a fresh in-process sandbox per run; prints
//! every run and the median.
//!
//! Run with `cargo run --release -p kube-sandbox --example bench_apply [RUNS] [OBJECTS]`.

use kube_sandbox::Sandbox;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn manifests(count: usize) -> String {
    (0..count)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bench-{i:05}\n  labels: {{app: bench}}\ndata:\n  index: \"{i}\"\n  payload: \"{}\"\n---\n",
                "x".repeat(64)
            )
        })
        .collect()
}

fn one_run(yaml: &str, count: usize) -> Result<Duration, String> {
    let sandbox = Sandbox::start().map_err(|e| format!("start sandbox: {e}"))?;
    let dir = std::env::temp_dir().join(format!(
        "kube-sandbox-bench-{}-{}",
        std::process::id(),
        sandbox.port()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let kubeconfig = dir.join("kubeconfig");
    sandbox
        .write_kubeconfig(&kubeconfig, "bench")
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(["apply", "--server-side", "--field-manager=bench", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn kubectl: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(yaml.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return Err(format!(
            "kubectl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stored = sandbox.objects("v1", "ConfigMap").len();
    if stored != count {
        return Err(format!("expected {count} ConfigMaps, found {stored}"));
    }
    Ok(elapsed)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let yaml = manifests(count);
    let mut times = Vec::new();
    for run in 1..=runs {
        match one_run(&yaml, count) {
            Ok(t) => {
                println!(
                    "run {run}: {count} ConfigMaps server-side applied in {:.3} s",
                    t.as_secs_f64()
                );
                times.push(t);
            }
            Err(e) => {
                eprintln!("run {run} failed: {e}");
                std::process::exit(1);
            }
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "median of {runs}: {:.3} s ({:.0} objects/s)",
        median.as_secs_f64(),
        count as f64 / median.as_secs_f64()
    );
}
