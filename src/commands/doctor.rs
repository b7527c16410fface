//! `hookops doctor`: one line per check, a fix hint for each failure, non-zero on any failure.
//! Checks the tools (git, kubectl, terraform), each environment's cluster and identity (what it
//! deploys as, and whether it may write in its namespaces), Vault, the signing key, the hooks,
//! whether pushes can write hookops' refs (`receive.hideRefs`), and the notes ref.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

use crate::backends::mask::Masker;
use crate::backends::process::Command;
use crate::backends::repo::Session;
use crate::commands::emit;
use crate::config::{Environment, ServerConfig, STATE_DIR};
use crate::pipeline::environments;

/// The checks printed so far, one line each (or kept for `--json`), and how many failed.
struct Checks {
    failures: usize,
    /// `--json`: the checks, printed as one array at the end instead of line by line.
    json: Option<Vec<serde_json::Value>>,
}

impl Checks {
    fn line(&mut self, state: &str, check: &str, detail: &str, hint: Option<&str>) {
        match &mut self.json {
            Some(list) => list.push(serde_json::json!({
                "state": state.trim().to_lowercase(),
                "check": check,
                "detail": detail,
                "fix": hint,
            })),
            None => match hint {
                // A closed stdout (`doctor | head`) ends the output, not the checks.
                Some(h) => {
                    let _ = emit(&format!("{state:<5} {check}: {detail} (fix: {h})"));
                }
                None => {
                    let _ = emit(&format!("{state:<5} {check}: {detail}"));
                }
            },
        }
    }

    fn ok(&mut self, check: &str, detail: &str) {
        self.line("ok", check, detail, None);
    }

    /// Worth knowing, not a problem: does not make doctor fail.
    fn warn(&mut self, check: &str, detail: &str) {
        self.line("warn", check, detail, None);
    }

    fn fail(&mut self, check: &str, detail: &str, hint: &str) {
        self.failures += 1;
        self.line("FAIL", check, detail, Some(hint));
    }

    /// The closing line (or the JSON array) and the exit status, which a closed stdout does
    /// not change.
    fn finish(self) -> Result<ExitCode> {
        let code = if self.failures > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
        if let Some(list) = self.json {
            let _ = emit(&serde_json::Value::Array(list).to_string());
        } else if self.failures > 0 {
            let _ = emit(&format!(
                "{} problem{} found",
                self.failures,
                if self.failures == 1 { "" } else { "s" }
            ));
        } else {
            let _ = emit("all checks passed");
        }
        Ok(code)
    }
}

pub fn run(repo: Option<&Path>, json: bool) -> Result<ExitCode> {
    let mut r = Checks {
        failures: 0,
        json: json.then(Vec::new),
    };
    let session = match Session::open(repo) {
        Ok(s) => s,
        Err(e) => {
            r.fail(
                "config",
                &crate::out::error_line(&e),
                "fix the repository path or the server config",
            );
            return r.finish();
        }
    };
    r.ok("repository", &session.git_dir.display().to_string());
    let config = &session.config;
    let masker = Masker::new();
    tools(&mut r, config, &masker);
    hooks(&mut r, &session);
    hidden_refs(&mut r, &session);
    sandbox(&mut r, config);
    state(&mut r, &session);
    match crate::record::notes::list(&session.repo) {
        Ok(n) => r.ok(
            "notes",
            &format!(
                "{} readable, {} annotated commits",
                crate::record::notes::NOTES_REF,
                n.len()
            ),
        ),
        Err(e) => r.fail(
            "notes",
            &format!("{e:#}"),
            "inspect refs/notes/hookops with `git notes --ref=hookops list`",
        ),
    }
    match session.signer() {
        Ok(Some(s)) => r.ok(
            "signing key",
            &format!(
                "{} ({})",
                config
                    .signing
                    .key
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                s.id()
            ),
        ),
        Ok(None) => r.ok("signing key", "none configured: records are unsigned"),
        Err(e) => r.fail(
            "signing key",
            &crate::out::error_line(&e),
            "make [signing] key a readable, unencrypted OpenSSH private key",
        ),
    }
    if let Some(v) = &config.vault {
        match crate::backends::vault::Client::login(v).and_then(|mut c| c.whoami()) {
            Ok(who) => r.ok("vault", &format!("{}: logged in as {who}", v.address)),
            Err(e) => r.fail(
                "vault",
                &crate::out::error_line(&e),
                "check [vault] address and the token or AppRole files",
            ),
        }
    }
    let envs = session.environments();
    if envs.is_empty() {
        r.fail(
            "environments",
            "none: no [[environment]] and HEAD names no branch",
            "add an [[environment]] to the server config",
        );
    }
    for env in &envs {
        cluster(&mut r, &session, env, &masker);
    }
    layout(&mut r, &session, &envs);
    r.finish()
}

fn tools(r: &mut Checks, config: &ServerConfig, masker: &Masker) {
    // Hooks run under git anyway; `[sync]` and `watch` run it for every fetch and push.
    match crate::backends::remote::git_version() {
        Ok(v) => r.ok("git", &v),
        Err(e) => r.fail(
            "git",
            &crate::out::error_line(&e),
            "install git (Debian: apt install git)",
        ),
    }
    let checks = [
        (
            "kubectl",
            &config.tools.kubectl,
            vec!["version", "--client"],
        ),
        ("terraform", &config.tools.terraform, vec!["version"]),
    ];
    helm(r, config, masker);
    for (key, program, args) in checks {
        match Command::new(
            program,
            if key == "kubectl" {
                "kubectl"
            } else {
                "terraform"
            },
        )
        .args(args)
        .env("CHECKPOINT_DISABLE", "1")
        .run(masker)
        {
            Ok(out) if out.success() => {
                let v = crate::backends::process::first_line(&out.stdout).unwrap_or_default();
                r.ok(key, &format!("{program}: {v}"));
            }
            Ok(out) => r.fail(
                key,
                &format!("{program}: {}", out.reason()),
                &format!("repair the {key} installation"),
            ),
            Err(e) => r.fail(
                key,
                &format!("{e:#}"),
                &format!("install {key} or set [tools] {key} in the server config"),
            ),
        }
    }
}

/// Helm renders chart targets (docs/helm.md): tested with 4.3.2; 3.x from 3.10 works (the
/// first with `--set-json`). Without it only chart targets fail, so a missing default `helm`
/// is a warning, and one that `[tools] helm` names a failure.
fn helm(r: &mut Checks, config: &ServerConfig, masker: &Masker) {
    let helm = crate::backends::helm::Helm {
        program: config.tools.helm.clone(),
        sandbox: crate::backends::sandbox::Sandbox::from_config(&config.sandbox),
        masker: masker.clone(),
    };
    match helm.version() {
        Ok(v) if helm_supported(&v) => r.ok("helm", &format!("{}: {v}", helm.program)),
        Ok(v) => r.fail(
            "helm",
            &format!(
                "{}: {v}: chart targets need helm 3.10 or later",
                helm.program
            ),
            "install helm 4 (go install helm.sh/helm/v4/cmd/helm@v4.3.2)",
        ),
        Err(e) if config.tools.helm == "helm" => r.warn(
            "helm",
            &format!(
                "{}: chart targets (directories with Chart.yaml, type = \"helm\") will fail",
                crate::out::error_line(&e)
            ),
        ),
        Err(e) => r.fail(
            "helm",
            &crate::out::error_line(&e),
            "install helm or correct [tools] helm in the server config",
        ),
    }
}

/// `v4.3.2+g…`, `v3.10.0`: 3.10 and later.
fn helm_supported(version: &str) -> bool {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    major > 3 || (major == 3 && minor >= 10)
}

/// Gitaly's config, read from `HOOKOPS_GITALY_CONFIG` or Omnibus'
/// `/var/opt/gitlab/gitaly/config.toml`, when there is one.
fn gitaly_config() -> Option<toml::Value> {
    let path = std::env::var_os("HOOKOPS_GITALY_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/opt/gitlab/gitaly/config.toml"));
    let text = std::fs::read_to_string(&path).ok()?;
    match text.parse() {
        Ok(v) => Some(v),
        Err(e) => {
            log::warn!("ignoring Gitaly config {}: {e}", path.display());
            None
        }
    }
}

/// GitLab's server-wide hooks directory: `[hooks] custom_hooks_dir` of Gitaly's config.
fn gitlab_custom_hooks_dir() -> Option<PathBuf> {
    let value = gitaly_config()?;
    let dir = value.get("hooks")?.get("custom_hooks_dir")?.as_str()?;
    Some(PathBuf::from(dir))
}

/// Whether pushes can write hookops' refs: the effective `transfer.hideRefs` and
/// `receive.hideRefs` of the repository as git reads them (every config file, in order), then
/// what Gitaly passes to its git processes (`[[git.config]]`, applied last).
fn hidden_refs(r: &mut Checks, session: &Session) {
    use crate::commands::install::{hidden_by, hide_refs_fix, HIDDEN_REFS, SAMPLE_REFS};
    let out = Command::from_path("git", "hookops reads the repository's git config with git")
        .arg("--git-dir")
        .arg(session.git_dir.as_os_str())
        .args(["config", "--get-regexp", r"^(transfer|receive)\.hiderefs$"])
        .env("LC_ALL", "C")
        .run(&Masker::new());
    let mut values: Vec<String> = match out {
        // Exit 1: no such key.
        Ok(o) if o.success() || o.code == Some(1) => o
            .stdout
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(_, v)| v.to_string()))
            .collect(),
        Ok(o) => {
            return r.fail(
                "pushes",
                &format!("git config: {}", o.reason()),
                "check the repository's git config",
            )
        }
        Err(e) => return r.fail("pushes", &format!("{e:#}"), "install git"),
    };
    let gitaly = gitaly_config();
    let entries = gitaly
        .as_ref()
        .and_then(|v| v.get("git")?.get("config")?.as_array().cloned())
        .unwrap_or_default();
    for e in entries {
        let key = e.get("key").and_then(|k| k.as_str()).unwrap_or("");
        if key.eq_ignore_ascii_case("receive.hideRefs")
            || key.eq_ignore_ascii_case("transfer.hideRefs")
        {
            if let Some(v) = e.get("value").and_then(|v| v.as_str()) {
                values.push(v.to_string());
            }
        }
    }
    let open: Vec<&str> = SAMPLE_REFS
        .into_iter()
        .filter(|name| !hidden_by(&values, name))
        .collect();
    if open.is_empty() {
        r.ok(
            "pushes",
            &format!(
                "receive.hideRefs hides {}: pushes cannot write them",
                HIDDEN_REFS.join(" and ")
            ),
        );
    } else {
        r.fail(
            "pushes",
            &format!(
                "a push can write {} (receive.hideRefs does not hide them): it could rewrite \
                 records, move pointers or forge the inventory",
                open.join(", ")
            ),
            &hide_refs_fix(&session.git_dir),
        );
    }
}

/// The paths in `dir` whose file names pass `keep`, sorted; none if it cannot be read.
fn sorted_entries(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| keep(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
}

fn hooks(r: &mut Checks, session: &Session) {
    let dir = match crate::commands::install::hooks_dir(&session.repo) {
        Ok(d) => d,
        Err(e) => return r.fail("hooks", &format!("{e:#}"), "check core.hooksPath"),
    };
    let hook = if session.repo.is_bare() {
        "post-receive"
    } else {
        "post-merge"
    };
    // Where a hookops shim can sit: the hooks directory (the hook itself, or a file of its
    // `<hook>.d/`, as Gitea and `install` with a `.d` directory do; Gitolite's repo-specific
    // hooks as `<hook>.h00-<name>`), GitLab's per-repository `custom_hooks/`, and GitLab's
    // server-wide `custom_hooks_dir` (where only `<hook>.d/` counts).
    let mut candidates = Vec::new();
    let mut add_dir = |base: &Path, hook_itself: bool| {
        if hook_itself {
            candidates.push(base.join(hook));
        }
        candidates.extend(sorted_entries(&base.join(format!("{hook}.d")), |_| true));
    };
    add_dir(&dir, true);
    add_dir(&session.git_dir.join("custom_hooks"), true);
    if let Some(global) = gitlab_custom_hooks_dir() {
        add_dir(&global, false);
    }
    let prefix = format!("{hook}.h");
    candidates.extend(sorted_entries(&dir, |name| name.starts_with(&prefix)));
    let found = candidates
        .iter()
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("hookops")));
    match found {
        Some(p) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let exec = std::fs::metadata(p)
                    .map(|m| m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false);
                if !exec {
                    return r.fail(
                        "hooks",
                        &format!("{} is not executable", p.display()),
                        &format!("chmod +x {}", p.display()),
                    );
                }
            }
            r.ok("hooks", &format!("{} installed", p.display()));
        }
        None => r.fail(
            "hooks",
            &format!("no hookops {hook} hook in {}", dir.display()),
            "run `hookops install`",
        ),
    }
}

/// Whether renderers of pushed input (`kubectl kustomize`) can run in the sandbox.
fn sandbox(r: &mut Checks, config: &ServerConfig) {
    let sb = crate::backends::sandbox::Sandbox::from_config(&config.sandbox);
    if !sb.enabled {
        return r.warn(
            "sandbox",
            "off ([sandbox] enabled = false): kustomize renders pushed kustomizations unconfined, \
             seeing everything the hookops user can read",
        );
    }
    let network = if config.kustomize.allow_remote {
        "network allowed ([kustomize] allow_remote)"
    } else {
        "no network"
    };
    match sb.probe(&config.tools.kubectl, "kubectl", &["version", "--client"]) {
        Ok(_) => r.ok(
            "sandbox",
            &format!(
                "{}: kustomize renders with only the target's files visible, {network}",
                sb.bwrap
            ),
        ),
        Err(e) => r.fail(
            "sandbox",
            &format!(
                "{}: kustomize targets are refused",
                crate::out::error_line(&e)
            ),
            "install bubblewrap (Debian: apt install bubblewrap) and allow unprivileged user \
             namespaces, or set [sandbox] enabled = false",
        ),
    }
}

fn state(r: &mut Checks, session: &Session) {
    let dir = session.git_dir.join(STATE_DIR);
    let probe = dir.join(".doctor-probe");
    let writable = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&probe, b""))
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    if writable {
        r.ok("state", &format!("{} writable", dir.display()));
    } else {
        r.fail(
            "state",
            &format!("{} is not writable", dir.display()),
            "run hookops as the user that owns the repository",
        );
    }
}

fn cluster(r: &mut Checks, session: &Session, env: &Environment, masker: &Masker) {
    let check = format!("env {}", env.name);
    let kubectl = match session.kubectl(env, masker.clone()) {
        Ok(k) => k,
        Err(e) => {
            return r.fail(
                &check,
                &format!("{e:#}"),
                "make the state directory writable",
            )
        }
    };
    let version = kubectl.raw(["version", "-o", "json", "--request-timeout=5s"]);
    let server = match version {
        Ok(out) if out.success() => {
            let v = serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap_or_default();
            if let Some(slow) = slow_kubectl(&v) {
                r.warn("kubectl", &slow);
            }
            v.pointer("/serverVersion/gitVersion")
                .and_then(|g| g.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| "unknown version".into())
        }
        Ok(out) => {
            return r.fail(
                &check,
                &format!("cluster unreachable: {}", out.reason()),
                "check the environment's kubeconfig and context, and that the API server is up",
            )
        }
        Err(e) => return r.fail(&check, &format!("{e:#}"), "install kubectl"),
    };
    let who = kubectl
        .raw([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
            "--request-timeout=5s",
        ])
        .ok()
        .filter(|o| o.success())
        .map(|o| o.stdout.trim().to_string())
        .unwrap_or_else(|| "(unknown identity)".into());
    r.ok(&check, &format!("cluster {server}, deploying as {who}"));
    let namespaces = env
        .allowed_namespaces
        .clone()
        .unwrap_or_else(|| vec!["default".into()]);
    for ns in namespaces {
        namespace_exists(r, &check, &kubectl, env, &ns);
        let mut denied = Vec::new();
        for verb in ["create", "patch", "delete"] {
            for resource in ["configmaps", "deployments.apps"] {
                if !can_i(&kubectl, verb, resource, &ns) {
                    denied.push(format!("{verb} {resource}"));
                }
            }
        }
        if denied.is_empty() {
            r.ok(
                &check,
                &format!(
                    "may create, patch and delete configmaps and deployments in namespace {ns}"
                ),
            );
        } else {
            r.fail(
                &check,
                &format!("may not {} in namespace {ns}", denied.join(", ")),
                "grant the service account a Role there (docs/security.md)",
            );
        }
    }
    lock(r, env, &kubectl);
}

/// `kubectl auth can-i VERB RESOURCE -n NAMESPACE` (a SelfSubjectAccessReview): yes or not.
fn can_i(kubectl: &crate::backends::kube::Kubectl, verb: &str, resource: &str, ns: &str) -> bool {
    kubectl
        .raw([
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            ns,
            "--request-timeout=5s",
        ])
        .is_ok_and(|o| o.success() && o.stdout.trim().starts_with("yes"))
}

/// The lock mode, and with lock = "lease" whether the deployer may take the Lease and write
/// the inventory's copy beside it (a SelfSubjectAccessReview each: `kubectl auth can-i`).
fn lock(r: &mut Checks, env: &Environment, kubectl: &crate::backends::kube::Kubectl) {
    let check = format!("env {}", env.name);
    if env.lock == crate::config::LockMode::File {
        return r.ok(
            &check,
            "lock = \"file\": one host deploys this environment (docs/ha.md for several)",
        );
    }
    let l = env.lease();
    let mut denied = Vec::new();
    for (verb, resource) in [
        ("get", "leases.coordination.k8s.io"),
        ("create", "leases.coordination.k8s.io"),
        ("update", "leases.coordination.k8s.io"),
        ("get", "configmaps"),
        ("list", "configmaps"),
        ("create", "configmaps"),
        ("patch", "configmaps"),
        ("delete", "configmaps"),
    ] {
        if !can_i(kubectl, verb, resource, &l.namespace) {
            denied.push(format!("{verb} {resource}"));
        }
    }
    if denied.is_empty() {
        r.ok(
            &check,
            &format!(
                "lock = \"lease\": Lease {}/{} ({:?} long, renewed every {:?}, given up after {:?} unrenewed); the deployer may take it and write the inventory copy",
                l.namespace, l.name, l.duration, l.retry, l.renew
            ),
        );
    } else {
        r.fail(
            &check,
            &format!(
                "lock = \"lease\": may not {} in namespace {}",
                denied.join(", "),
                l.namespace
            ),
            "grant the Lease rules of docs/security.md in that namespace",
        );
    }
}

/// kubectl 1.32 and 1.33 decode the server's whole OpenAPI v3 document for every object they
/// send as a document of its own, to learn whether strict field validation is supported
/// (kubernetes/kubernetes#127095; cached from 1.34 on). What that costs hookops, from
/// `kubectl version -o json`'s client version.
fn slow_kubectl(version: &serde_json::Value) -> Option<String> {
    let client = version.get("clientVersion")?;
    let minor = client.get("minor")?.as_str()?.trim_end_matches('+');
    if client.get("major")?.as_str()? != "1" || !matches!(minor, "32" | "33") {
        return None;
    }
    let git = client
        .get("gitVersion")
        .and_then(|g| g.as_str())
        .unwrap_or("1.x");
    Some(format!(
        "{git} decodes the server's OpenAPI v3 document once per object it applies (about 20 ms \
         of CPU each, 20 s for 1,000 objects; kubernetes/kubernetes#127095, fixed in 1.34): \
         hookops sends two or more objects as one List, which kubectl validates with the v2 \
         schema read once per call, so only one-object applies pay it; kubectl 1.34 or newer \
         avoids it altogether"
    ))
}

/// A namespace the policy names must exist before the first push unless the environment may
/// create it (a Namespace is cluster-scoped): otherwise that push fails with `namespaces "web"
/// not found` (docs/environments.md, "The namespace policy").
fn namespace_exists(
    r: &mut Checks,
    check: &str,
    kubectl: &crate::backends::kube::Kubectl,
    env: &Environment,
    ns: &str,
) {
    let out = kubectl.raw(["get", "namespace", ns, "-o", "name", "--request-timeout=5s"]);
    match out {
        Ok(o) if o.success() => r.ok(check, &format!("namespace {ns} exists")),
        Ok(o) if o.stderr.contains("NotFound") || o.stderr.contains("not found") => {
            if env.cluster_scoped_allowed() {
                r.warn(
                    check,
                    &format!(
                        "namespace {ns} does not exist: the first push must declare it (a \
                         Namespace manifest), or create it with `kubectl create namespace {ns}`"
                    ),
                )
            } else {
                r.fail(
                    check,
                    &format!(
                        "namespace {ns} does not exist, and the policy may not create it \
                         (allowed_namespaces without allow_cluster_scoped = true): the first \
                         push would fail"
                    ),
                    &format!(
                        "create it once as a cluster admin (`kubectl create namespace {ns}`), or \
                         declare it in git and set allow_cluster_scoped = true (docs/environments.md)"
                    ),
                )
            }
        }
        Ok(o) => r.warn(
            check,
            &format!("cannot tell whether namespace {ns} exists: {}", o.reason()),
        ),
        Err(e) => r.warn(
            check,
            &format!("cannot tell whether namespace {ns} exists: {e:#}"),
        ),
    }
}

/// Environments as directories: targets of a branch's tip that no environment deploys (when
/// every environment of the branch has `paths`), and environments sharing an API server.
/// Warnings, not failures: a directory may be left out on purpose.
fn layout(r: &mut Checks, session: &Session, envs: &[Environment]) {
    let mut by_branch: BTreeMap<String, Vec<Environment>> = BTreeMap::new();
    for e in envs {
        by_branch.entry(e.ref_name()).or_default().push(e.clone());
    }
    for (branch, group) in by_branch {
        if group.iter().any(|e| e.paths.is_none()) {
            continue;
        }
        let Ok(tip) = session.repo.refname_to_id(&branch) else {
            continue;
        };
        match environments::unplaced(&session.repo, &group, &[(None, tip)]) {
            Ok(list) if list.is_empty() => r.ok(
                "paths",
                &format!("{branch}: every target is under some environment's paths"),
            ),
            Ok(list) => {
                for t in list {
                    r.warn("paths", &environments::unplaced_line(&t, &group));
                }
            }
            Err(e) => r.warn(
                "paths",
                &format!("{branch}: {}", crate::out::error_line(&e)),
            ),
        }
    }
    for (server, names) in environments::shared_servers(envs) {
        r.warn(
            "api servers",
            &environments::shared_server_line(&server, &names),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubectl_1_32_and_1_33_are_named_slow() {
        let v = |major: &str, minor: &str| {
            json!({"clientVersion": {"major": major, "minor": minor,
                                     "gitVersion": format!("v{major}.{minor}.4")}})
        };
        let slow = slow_kubectl(&v("1", "32+")).unwrap();
        assert!(slow.starts_with("v1.32+.4 decodes"), "{slow}");
        assert!(slow.contains("#127095"), "{slow}");
        assert!(slow_kubectl(&v("1", "33")).is_some());
        assert!(slow_kubectl(&v("1", "34")).is_none());
        assert!(slow_kubectl(&v("1", "31")).is_none());
        assert!(slow_kubectl(&json!({"serverVersion": {}})).is_none());
    }

    #[test]
    fn helm_3_10_and_later_render_charts() {
        for ok in ["v4.3.2+g1234", "v3.10.0", "v3.21.4+gabc", "v5.0.0"] {
            assert!(helm_supported(ok), "{ok}");
        }
        for old in ["v3.9.4", "v2.17.0", "", "unknown"] {
            assert!(!helm_supported(old), "{old}");
        }
    }
}
