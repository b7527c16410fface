//! The one way hookops runs a child process (duct): arguments never carry secrets (those go
//! through stdin or the environment), children die with hookops (Linux parent-death signal),
//! output is masked before anyone sees it, a missing binary is named with the config key that
//! chooses it, and every child gets an explicit environment: what the command sets, plus only
//! the allow-listed variables of hookops' own (never git's hook variables: `GIT_DIR`,
//! `GIT_QUARANTINE_PATH`, `GIT_OBJECT_DIRECTORY`, push options…).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::backends::mask::Masker;

/// The variables a child inherits from hookops' own environment (set by the operator: the
/// service manager, the git server, the login), by exact name or as `PREFIX*`; every other
/// variable is dropped (the proxy settings, `PROXY_VARS`, pass too). docs/security.md lists
/// them with their reasons; `[tools] pass_env` adds more.
pub const PASS_ENV: &[&str] = &[
    // Finding programs, the user's own configuration, language and time.
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    // CA bundles (and `PROXY_VARS`), for every tool that talks to the network.
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    // kubectl: the default kubeconfig (environments without `kubeconfig`) and Go's collector
    // settings (backends/kube.rs).
    "KUBECONFIG",
    "GOGC",
    "GOMEMLIMIT",
    // Terraform's own settings (CLI config, plugin cache, registry tokens) and checkpoint.
    "TF_*",
    "CHECKPOINT_DISABLE",
    // Cloud credentials for exec auth plugins (aws eks get-token, gke-gcloud-auth-plugin,
    // kubelogin) and Terraform providers.
    "AWS_*",
    "AZURE_*",
    "ARM_*",
    "GOOGLE_*",
    "CLOUDSDK_*",
    // git for `[sync]` and `watch`: where its config is, and the SSH agent.
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_NOSYSTEM",
    "SSH_AUTH_SOCK",
];

/// The proxy settings, which children inherit too (and a sandboxed renderer with network).
pub const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
];

/// `[tools] pass_env` of the server config: more names or `PREFIX*` patterns children inherit.
static EXTRA_PASS_ENV: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Sets the operator's additions to [`PASS_ENV`] (`[tools] pass_env`), for every child started
/// from now on.
pub fn pass_env(extra: &[String]) {
    if let Ok(mut e) = EXTRA_PASS_ENV.write() {
        *e = extra.to_vec();
    }
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// Whether a variable of hookops' environment reaches children.
pub fn passes(name: &str) -> bool {
    let extra = EXTRA_PASS_ENV.read().map(|e| e.clone()).unwrap_or_default();
    PASS_ENV.iter().copied().any(|p| matches(p, name))
        || PROXY_VARS.contains(&name)
        || extra.iter().any(|p| matches(p, name))
}

/// A child's whole environment: the allow-listed part of `inherited` (hookops' own), then
/// `set` on top.
fn child_env(
    inherited: impl Iterator<Item = (OsString, OsString)>,
    set: &[(String, String)],
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = inherited
        .filter(|(k, _)| k.to_str().is_some_and(passes))
        .collect();
    for (k, v) in set {
        env.insert(k.into(), v.into());
    }
    env
}

/// A finished child: exit code and masked output.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The first meaningful line of the child's complaint, for one-line reports.
    /// The line that says why the command failed: an error line rather than the warnings,
    /// deprecation notes and log noise that tools print first.
    pub fn reason(&self) -> String {
        klog_error(&self.stderr)
            .or_else(|| error_line(&self.stderr))
            .or_else(|| first_line(&self.stderr))
            .or_else(|| first_line(&self.stdout))
            .unwrap_or_else(|| format!("exited with status {:?}", self.code))
    }
}

/// Log noise rather than a reason: `# Warning: …`, `Warning: …`, klog lines (`E1130 12:00…`
/// or `"command failed" err=<`).
fn noise(line: &str) -> bool {
    let l = line.trim_start_matches(['#', ' ']);
    let klog = l.len() > 5
        && matches!(l.as_bytes()[0], b'E' | b'W' | b'I')
        && l.as_bytes()[1..5].iter().all(u8::is_ascii_digit);
    l.starts_with("Warning:") || l.starts_with("warning:") || klog || l.contains("err=<")
}

/// The error kubectl logs through klog when a command fails, without klog's prefix
/// (`E1206 17:10:49.953 31345 run.go:72] "command failed" err="…"`), whole: a multi-line
/// `err=<` block (kustomize's, which names the cause on its later lines) becomes one line.
fn klog_error(text: &str) -> Option<String> {
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some((_, err)) = line.split_once(" err=") else {
            continue;
        };
        if !line.contains("] ") {
            continue;
        }
        if err.trim() == "<" {
            let block: Vec<&str> = lines
                .by_ref()
                .map(str::trim)
                .take_while(|l| *l != ">")
                .filter(|l| !l.is_empty())
                .collect();
            return (!block.is_empty()).then(|| block.join(" "));
        }
        let quoted = err.trim();
        let inner = quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .unwrap_or(quoted);
        let unescaped = inner.replace("\\n", " ").replace("\\\"", "\"");
        return Some(crate::out::one_line(&unescaped));
    }
    None
}

fn error_line(text: &str) -> Option<String> {
    let lines = || {
        text.lines()
            .map(|l| l.trim().trim_start_matches(['│', '╷', ' ']))
            .filter(|l| !l.is_empty() && !noise(l))
    };
    lines()
        .find(|l| {
            let lower = l.to_ascii_lowercase();
            lower.starts_with("error")
                || lower.contains("error:")
                || lower.contains("error from server")
        })
        .or_else(|| lines().next())
        .map(str::to_string)
}

pub fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.chars().all(|c| "│╷╵─".contains(c)))
        .map(|l| l.trim_start_matches(['│', '╷', ' ']).to_string())
}

/// What ends the stderr of a child `run` killed at its deadline.
pub const KILLED_AT_DEADLINE: &str = "\nkilled by hookops: its deadline passed\n";

/// Where a command's program comes from, for the error when it cannot be found.
#[derive(Clone, Copy)]
pub enum Origin {
    /// Named by this `[tools]` key of the server config.
    Config(&'static str),
    /// Always this program from `PATH`; the text says what hookops needs it for.
    Path(&'static str),
}

/// When a running child must be killed, asked again each time it passes (it may have moved
/// on meanwhile: a renewed Lease); `None`: at once.
pub type Deadline = std::sync::Arc<dyn Fn() -> Option<Instant> + Send + Sync>;

/// A command to run, and where its program comes from (for error messages).
pub struct Command {
    pub program: String,
    pub origin: Origin,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub dir: Option<PathBuf>,
    pub stdin: Option<Vec<u8>>,
    pub deadline: Option<Deadline>,
}

impl Command {
    pub fn new(program: &str, config_key: &'static str) -> Command {
        Command::with_origin(program, Origin::Config(config_key))
    }

    /// A program that is not configurable, run from `PATH`; `needed_for` completes the
    /// not-found error `PROGRAM not found on PATH: NEEDED_FOR`.
    pub fn from_path(program: &str, needed_for: &'static str) -> Command {
        Command::with_origin(program, Origin::Path(needed_for))
    }

    fn with_origin(program: &str, origin: Origin) -> Command {
        Command {
            program: program.to_string(),
            origin,
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            stdin: None,
            deadline: None,
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    pub fn dir(mut self, d: impl Into<PathBuf>) -> Self {
        self.dir = Some(d.into());
        self
    }

    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    /// `run` kills the child (SIGKILL) once `deadline` has passed; its output then ends with
    /// `KILLED_AT_DEADLINE`.
    pub fn deadline(mut self, deadline: Deadline) -> Self {
        self.deadline = Some(deadline);
        self
    }

    fn expression(&self) -> duct::Expression {
        let mut e = duct::cmd(&self.program, &self.args)
            .full_env(child_env(std::env::vars_os(), &self.env));
        if let Some(d) = &self.dir {
            e = e.dir(d);
        }
        e = match &self.stdin {
            Some(bytes) => e.stdin_bytes(bytes.clone()),
            None => e.stdin_null(),
        };
        e.unchecked().before_spawn(|cmd| {
            die_with_parent(cmd);
            Ok(())
        })
    }

    fn spawn_error(&self, e: std::io::Error) -> anyhow::Error {
        if e.kind() == std::io::ErrorKind::NotFound {
            match self.origin {
                Origin::Config(key) => anyhow::anyhow!(
                    "{}: command not found (set by [tools] {key} in the server config)",
                    self.program
                ),
                Origin::Path(needed_for) => {
                    anyhow::anyhow!("{} not found on PATH: {needed_for}", self.program)
                }
            }
        } else {
            anyhow::anyhow!("{}: cannot run: {e}", self.program)
        }
    }

    /// Runs to completion (or to its deadline), capturing masked output.
    pub fn run(&self, masker: &Masker) -> Result<Output> {
        let started = Instant::now();
        let expression = self.expression().stdout_capture().stderr_capture();
        let (out, killed) = match &self.deadline {
            None => (expression.run().map_err(|e| self.spawn_error(e))?, false),
            Some(deadline) => {
                let handle = expression.start().map_err(|e| self.spawn_error(e))?;
                let mut killed = false;
                loop {
                    match deadline() {
                        Some(at) if at > Instant::now() => {
                            if handle.wait_deadline(at)?.is_some() {
                                break;
                            }
                        }
                        _ => {
                            killed = handle.try_wait()?.is_none();
                            if killed {
                                handle.kill()?;
                            }
                            break;
                        }
                    }
                }
                (handle.into_output()?, killed)
            }
        };
        let mut stderr = masker.mask(&String::from_utf8_lossy(&out.stderr));
        if killed {
            stderr.push_str(KILLED_AT_DEADLINE);
        }
        Ok(Output {
            code: if killed { None } else { out.status.code() },
            stdout: masker.mask(&String::from_utf8_lossy(&out.stdout)),
            stderr,
            elapsed: started.elapsed(),
        })
    }

    /// Runs with the merged output streamed line by line to `line` (masked) as it comes, and
    /// also captured. Used for Terraform, whose runs are long enough that the pusher wants to
    /// see them progress.
    pub fn stream(&self, masker: &Masker, mut line: impl FnMut(&str)) -> Result<Output> {
        let started = Instant::now();
        let reader = self
            .expression()
            .stderr_to_stdout()
            .reader()
            .map_err(|e| self.spawn_error(e))?;
        let mut captured = String::new();
        let mut lines = BufReader::new(&reader);
        let mut buf = String::new();
        loop {
            buf.clear();
            match lines.read_line(&mut buf) {
                Ok(0) => break,
                Ok(_) => {
                    let masked = masker.mask(buf.trim_end_matches(['\n', '\r']));
                    line(&masked);
                    captured.push_str(&masked);
                    captured.push('\n');
                }
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => continue,
                Err(e) => bail!("{}: reading output: {e}", self.program),
            }
        }
        let status = reader
            .try_wait()
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.program))?
            .map(|o| o.status.code())
            .unwrap_or(None);
        Ok(Output {
            code: status,
            stdout: captured,
            stderr: String::new(),
            elapsed: started.elapsed(),
        })
    }
}

/// Children must not outlive a killed hookops (a SIGKILLed hook would otherwise leave kubectl or
/// terraform running against production with nobody recording the result).
fn die_with_parent(cmd: &mut std::process::Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches only the child being spawned.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Starts `hookops --repo GIT_DIR ARGS…` (this binary) in a session of its own, with `stdout`
/// and `stderr` as given and no stdin, and does not wait for it: it outlives the hook that
/// starts it, and git's wait for that hook does not include it (init reaps it). `what` names it
/// in the error when it cannot start.
pub fn spawn_detached(
    git_dir: &std::path::Path,
    args: &[&std::ffi::OsStr],
    stdout: std::process::Stdio,
    stderr: std::fs::File,
    what: &str,
) -> Result<()> {
    let exe = std::env::current_exe().context("locating the hookops binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--repo")
        .arg(git_dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .env_remove("GIT_DIR")
        .env_remove("GIT_QUARANTINE_PATH");
    // Its own session and no parent-death signal: it must outlive the hook.
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    cmd.spawn().with_context(|| format!("starting {what}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn klog_errors_lose_their_prefix_and_keep_their_cause() {
        let one = "E1206 17:10:49.953   31345 run.go:72] \"command failed\" err=\"namespaces \\\"nope\\\" not found\"\n";
        assert_eq!(
            Output {
                code: Some(1),
                stdout: String::new(),
                stderr: one.into(),
                elapsed: Duration::ZERO
            }
            .reason(),
            "namespaces \"nope\" not found"
        );
        let block = "E1206 17:10:49.953   31345 run.go:72] \"command failed\" err=<\n\ttrouble configuring builtin HelmChartInflationGenerator with config: `\n\tname: x\n\t`: must specify --enable-helm\n >\n";
        let why = Output {
            code: Some(1),
            stdout: String::new(),
            stderr: block.into(),
            elapsed: Duration::ZERO,
        }
        .reason();
        assert!(
            why.starts_with("trouble configuring builtin HelmChartInflationGenerator"),
            "{why}"
        );
        assert!(why.ends_with("must specify --enable-helm"), "{why}");
    }

    #[test]
    fn the_reason_is_the_error_not_the_warnings_before_it() {
        let out = |stderr: &str| Output {
            code: Some(1),
            stdout: String::new(),
            stderr: stderr.to_string(),
            elapsed: Duration::ZERO,
        };
        assert_eq!(
            out("# Warning: 'bases' is deprecated. Please use 'resources' instead.\nError: accumulating resources: missing\n").reason(),
            "Error: accumulating resources: missing"
        );
        assert_eq!(
            out("E1130 10:00:00.1 1 run.go:72] \"command failed\" err=<\n\terror: no objects passed to apply\n>\n").reason(),
            "error: no objects passed to apply"
        );
        assert_eq!(out("just this\n").reason(), "just this");
    }

    /// What a hook's environment holds (git's variables, a push option, an unknown variable)
    /// never reaches a child; the allow-listed variables and the command's own do.
    #[test]
    fn children_get_an_explicit_environment() {
        let hook: Vec<(OsString, OsString)> = [
            ("GIT_DIR", "/srv/git/x.git"),
            ("GIT_QUARANTINE_PATH", "/srv/git/x.git/objects/q"),
            ("GIT_OBJECT_DIRECTORY", "/srv/git/x.git/objects/q"),
            ("GIT_ALTERNATE_OBJECT_DIRECTORIES", "/srv/git/x.git/objects"),
            ("GIT_PUSH_OPTION_COUNT", "1"),
            ("GIT_PUSH_OPTION_0", "hookops.dry-run"),
            ("GIT_INDEX_FILE", "/tmp/index"),
            ("HOOKOPS_TEST_UNLISTED", "1"),
            ("PATH", "/usr/bin"),
            ("LC_ALL", "C"),
            ("TF_CLI_CONFIG_FILE", "/dev/null"),
            ("GIT_CONFIG_GLOBAL", "/home/git/.gitconfig"),
        ]
        .iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let env = child_env(hook.into_iter(), &[("TF_INPUT".into(), "0".into())]);
        let names: Vec<&str> = env.keys().filter_map(|k| k.to_str()).collect();
        assert_eq!(
            names,
            [
                "GIT_CONFIG_GLOBAL",
                "LC_ALL",
                "PATH",
                "TF_CLI_CONFIG_FILE",
                "TF_INPUT"
            ]
        );
        assert!(!passes("HOOKOPS_EXTRA_TEST"));
        pass_env(&["HOOKOPS_EXTRA_*".to_string()]);
        assert!(passes("HOOKOPS_EXTRA_TEST"));
        pass_env(&[]);
        // A real child sees exactly what it was given on top of the allow-listed variables.
        let out = Command::new("env", "env")
            .env("TF_INPUT", "0")
            .run(&Masker::new())
            .unwrap();
        assert!(out.stdout.lines().all(|l| l
            .split('=')
            .next()
            .is_some_and(|n| passes(n) || n == "TF_INPUT")));
    }

    #[test]
    fn missing_binary_names_the_key() {
        let err = Command::new("/nonexistent/kubectl", "kubectl")
            .arg("version")
            .run(&Masker::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("command not found"), "{err}");
        assert!(err.contains("[tools] kubectl"), "{err}");
    }

    #[test]
    fn output_is_masked() {
        let mut m = Masker::new();
        m.add("hunter22");
        let out = Command::new("sh", "shell")
            .args(["-c", "echo the secret is hunter22 >&2; exit 3"])
            .run(&m)
            .unwrap();
        assert_eq!(out.code, Some(3));
        assert!(!out.stderr.contains("hunter22"));
        assert_eq!(out.reason(), "the secret is ***");
    }

    #[test]
    fn a_child_is_killed_at_its_deadline_and_the_deadline_may_move() {
        use std::sync::Arc;
        let start = Instant::now();
        let gone: Deadline = Arc::new(move || Some(start + Duration::from_millis(200)));
        let out = Command::new("sleep", "shell")
            .arg("5")
            .deadline(gone)
            .run(&Masker::new())
            .unwrap();
        assert_eq!(out.code, None);
        assert!(out.stderr.ends_with(KILLED_AT_DEADLINE), "{}", out.stderr);
        assert!(out.elapsed < Duration::from_secs(2), "{:?}", out.elapsed);

        // Moved forward while the child runs (a renewed Lease): it finishes. The deadline is
        // always 100 ms ahead when asked, so no scheduling delay under load can pass it.
        let renewed: Deadline = Arc::new(|| Some(Instant::now() + Duration::from_millis(100)));
        let out = Command::new("sh", "shell")
            .args(["-c", "sleep 0.3; echo done"])
            .deadline(renewed)
            .run(&Masker::new())
            .unwrap();
        assert!(out.success(), "{out:?}");
        assert_eq!(out.stdout, "done\n");
    }

    #[test]
    fn streaming_sees_lines() {
        let mut seen = Vec::new();
        let out = Command::new("sh", "shell")
            .args(["-c", "echo one; echo two >&2; exit 0"])
            .stream(&Masker::new(), |l| seen.push(l.to_string()))
            .unwrap();
        assert!(out.success());
        assert_eq!(seen, vec!["one", "two"]);
    }
}
