//! Issue 29, Helm charts: chart targets through real `git push` into the real test cluster
//! (tests/it/cluster.rs), rendered by the real `helm` (4.3.2, `scripts/helm.sh build`) in the
//! renderer sandbox. A chart repository is served on 127.0.0.1 by a small HTTP server in the test
//! from what `helm package` and `helm repo index` wrote.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::cluster::{world_with, Cluster};
use crate::util::{namespace, reasons, require_that, run, target, terraform_root, which, World};

/// The helm the tests use: on PATH (CI puts target/tools there), else the one
/// `scripts/helm.sh build` left in target/tools/. CI fails without it.
fn helm() -> Option<String> {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/helm");
    let found = which("helm").or_else(|| built.is_file().then(|| built.display().to_string()));
    require_that("helm (scripts/helm.sh build)", found.is_some()).then(|| found.unwrap())
}

/// A world on the test cluster whose server config names that helm, plus `tables`.
fn helm_world(tables: &str) -> Option<(World, &'static Cluster, String)> {
    let helm = helm()?;
    let (w, c) = world_with("", &format!("[tools]\nhelm = \"{helm}\"\n\n{tables}"))?;
    Some((w, c, helm))
}

fn chart_yaml(name: &str, version: &str) -> String {
    format!("apiVersion: v2\nname: {name}\nversion: {version}\n")
}

/// A ConfigMap named by the values, in the values' namespace, showing the values that
/// precedence decides and what `.Capabilities` said.
const CM_TEMPLATE: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Values.name }}
  namespace: {{ .Values.namespace | default .Release.Namespace }}
data:
  greeting: {{ .Values.greeting | quote }}
  color: {{ .Values.color | quote }}
  size: {{ .Values.size | quote }}
  shape: {{ .Values.shape | quote }}
  release: {{ .Release.Name | quote }}
  kube: {{ .Capabilities.KubeVersion.Version | quote }}
  pdb: {{ .Capabilities.APIVersions.Has \"policy/v1/PodDisruptionBudget\" | quote }}
";

fn data(c: &Cluster, ns: &str, name: &str, key: &str) -> Option<String> {
    c.get_json("configmap", Some(ns), name)
        .and_then(|o| o["data"][key].as_str().map(str::to_string))
}

/// The version the test cluster's API server reports.
fn server_version(c: &Cluster) -> String {
    let out = c.kubectl(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("kubectl version");
    v["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Values per environment (values.yaml, then values-prod.yaml, never values-staging.yaml),
/// `.Capabilities` from the cluster's discovery, the chart in the record and in `plan`; then
/// declared in hookops.toml with a release name, a values file and `set`, in that precedence.
#[test]
fn a_chart_deploys_with_values_per_environment_and_the_clusters_capabilities() {
    let Some((w, c, _)) = helm_world("") else {
        return;
    };
    let ns = c.unique("helm-values");
    let values = format!(
        "name: web-settings\nnamespace: {ns}\ngreeting: base\ncolor: red\nsize: s\nshape: circle\n"
    );
    let head = w.commit(
        &[
            ("ns.yaml", &namespace(&ns)),
            ("charts/web/Chart.yaml", &chart_yaml("web", "0.1.0")),
            ("charts/web/values.yaml", &values),
            (
                "charts/web/values-prod.yaml",
                "greeting: prod\ncolor: blue\n",
            ),
            ("charts/web/values-staging.yaml", "greeting: staging\n"),
            ("charts/web/templates/cm.yaml", CM_TEMPLATE),
        ],
        "a chart with values per environment",
    );
    let out = w.push();
    out.assert_ok();
    let rec = w.last_record(&head);
    assert_eq!(rec["result"], "succeeded", "{}", out.all());
    let t = target(&rec, "charts/web");
    assert_eq!(t["type"], "helm");
    assert_eq!(t["applied"], 1);
    assert_eq!(
        t["chart"],
        serde_json::json!({"name": "web", "version": "0.1.0", "release": "web"})
    );
    let get = |k: &str| data(c, &ns, "web-settings", k);
    assert_eq!(get("greeting").as_deref(), Some("prod"));
    assert_eq!(get("color").as_deref(), Some("blue"));
    assert_eq!(get("size").as_deref(), Some("s"));
    assert_eq!(get("release").as_deref(), Some("web"));
    // Not Helm's built-in default: what the cluster said (learnt by this first deploy).
    assert_eq!(get("kube"), Some(server_version(c)));
    assert_eq!(get("pdb").as_deref(), Some("true"));

    let zero = "0000000000000000000000000000000000000000";
    let plan = w.hookops(&["plan", "main", "--from", zero]);
    plan.assert_ok();
    assert!(
        plan.stdout.contains(
            "chart web 0.1.0, release web, values charts/web/values.yaml, charts/web/values-prod.yaml; .Capabilities: Kubernetes "
        ),
        "{}",
        plan.stdout
    );
    // Without cached discovery (a new server, a clone), Helm's defaults, and plan says so.
    std::fs::remove_file(w.server.join("hookops/work/prod/helm-capabilities.json")).unwrap();
    let plan = w.hookops(&["plan", "main", "--from", zero]);
    assert!(
        plan.stdout.contains(
            ".Capabilities: Helm's defaults (no cluster discovery is cached for environment prod)"
        ),
        "{}",
        plan.stdout
    );

    // Declared: release, a values file of the repository, then `set`, in that order.
    let config = format!(
        "[[target]]\nname = \"ns\"\npath = \"ns\"\ntype = \"kubectl\"\n\n\
         [[target]]\nname = \"web\"\npath = \"charts/web\"\ntype = \"helm\"\nnamespace = \"{ns}\"\n\
         release = \"site\"\nvalues = [\"config/web.yaml\"]\nset = {{ greeting = \"from-set\" }}\n\
         depends_on = [\"ns\"]\n"
    );
    w.remove(&["ns.yaml"], "namespace moves");
    let head = w.commit(
        &[
            ("ns/ns.yaml", &namespace(&ns)),
            ("hookops.toml", &config),
            ("config/web.yaml", "greeting: file\nsize: m\n"),
        ],
        "declared with release, values and set",
    );
    let out = w.push();
    out.assert_ok();
    assert_eq!(w.last_record(&head)["result"], "succeeded", "{}", out.all());
    assert_eq!(get("greeting").as_deref(), Some("from-set"));
    assert_eq!(get("color").as_deref(), Some("blue"));
    assert_eq!(get("size").as_deref(), Some("m"));
    assert_eq!(get("shape").as_deref(), Some("circle"));
    assert_eq!(get("release").as_deref(), Some("site"));

    // A values file the target names is its own: changing it re-deploys the chart.
    let head = w.commit(&[("config/web.yaml", "size: l\n")], "values file");
    w.push().assert_ok();
    assert_eq!(target(&w.last_record(&head), "web")["result"], "succeeded");
    assert_eq!(get("size").as_deref(), Some("l"));

    // A release name Helm refuses fails the target, naming the key; nothing else changes.
    let head = w.commit(
        &[("hookops.toml", &config.replace("\"site\"", "\"Site_1\""))],
        "bad release",
    );
    w.push();
    let rec = w.last_record(&head);
    assert_eq!(rec["result"], "failed");
    assert!(
        reasons(&rec).contains("release \"Site_1\" is not a release name Helm accepts"),
        "{rec}"
    );
    assert_eq!(get("release").as_deref(), Some("site"));
}

/// Two charts: a values change re-deploys that chart only; CRDs in `crds/` and resources of
/// them in `templates/` deploy in one push; a chart removed is pruned; drift sees them in sync.
#[test]
fn a_values_change_redeploys_one_chart_and_a_removed_chart_is_pruned() {
    let Some((w, c, _)) = helm_world("") else {
        return;
    };
    let ns = c.unique("helm-two");
    let group = format!("{}.example.com", c.unique("w"));
    let crd = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n"
    );
    let widget = format!(
        "apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: gadget\n  namespace: {{{{ .Values.namespace }}}}\nspec:\n  size: {{{{ .Values.size }}}}\n"
    );
    let values = |name: &str| {
        format!("name: {name}\nnamespace: {ns}\ngreeting: hi\ncolor: c\nsize: 1\nshape: s\n")
    };
    w.commit(
        &[
            ("ns.yaml", &namespace(&ns)),
            ("charts/a/Chart.yaml", &chart_yaml("a", "1.0.0")),
            ("charts/a/values.yaml", &values("from-a")),
            ("charts/a/templates/cm.yaml", CM_TEMPLATE),
            ("charts/b/Chart.yaml", &chart_yaml("b", "2.0.0")),
            ("charts/b/values.yaml", &values("from-b")),
            ("charts/b/templates/cm.yaml", CM_TEMPLATE),
            ("charts/b/crds/widgets.yaml", &crd),
            ("charts/b/templates/widget.yaml", &widget),
        ],
        "two charts, one with a CRD",
    );
    let out = w.push();
    out.assert_ok();
    assert!(
        data(c, &ns, "from-a", "greeting").is_some(),
        "{}",
        out.all()
    );
    assert!(c
        .get_json("crd", None, &format!("widgets.{group}"))
        .is_some());
    let gadget = c
        .get_json(&format!("widgets.{group}"), Some(&ns), "gadget")
        .expect("the chart's custom resource");
    assert_eq!(gadget["spec"]["size"], 1);

    let head = w.commit(
        &[(
            "charts/b/values.yaml",
            &values("from-b").replace("size: 1", "size: 2"),
        )],
        "b's values",
    );
    let out = w.push();
    out.assert_ok();
    let rec = w.last_record(&head);
    let names: Vec<&str> = rec["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["charts/b"], "{}", out.all());
    let gadget = c
        .get_json(&format!("widgets.{group}"), Some(&ns), "gadget")
        .unwrap();
    assert_eq!(gadget["spec"]["size"], 2);

    let drift = w.hookops(&["drift"]);
    assert!(drift.ok(), "{}", drift.all());
    assert!(drift.all().contains("charts/a"), "{}", drift.all());

    let head = w.remove(&["charts/a"], "chart a goes");
    let out = w.push();
    out.assert_ok();
    let rec = w.last_record(&head);
    assert_eq!(rec["result"], "succeeded", "{}", out.all());
    assert_eq!(target(&rec, "charts/a")["pruned"], 1, "{rec}");
    assert!(data(c, &ns, "from-a", "greeting").is_none());
    assert!(data(c, &ns, "from-b", "greeting").is_some());
}

/// A pre-install/pre-upgrade migration Job: it runs before the chart's objects (and is
/// deleted on success, `hook-succeeded`); when it fails, the target fails before anything of
/// the chart changes. A test hook is never run.
#[test]
fn a_failing_pre_upgrade_migration_stops_the_deploy() {
    let Some((w, c, _)) = helm_world("") else {
        return;
    };
    let ns = c.unique("helm-hook");
    let migrate = "apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  namespace: {{ .Values.namespace }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: \"-1\"
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations:
        kube-sandbox.io/fail-job: {{ .Values.failMigration | quote }}
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: migrate:{{ .Values.version }}
";
    let test_hook = "apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-smoke
  namespace: {{ .Values.namespace }}
  annotations:
    helm.sh/hook: test
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: t, image: t}]
";
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: {{ .Values.namespace }}\ndata:\n  version: {{ .Values.version | quote }}\n";
    let values = |version: u32, fail: bool| {
        format!("namespace: {ns}\nversion: {version}\nfailMigration: {fail}\n")
    };
    let head = w.commit(
        &[
            ("ns.yaml", &namespace(&ns)),
            ("app/Chart.yaml", &chart_yaml("app", "1.0.0")),
            ("app/values.yaml", &values(1, false)),
            ("app/templates/migrate.yaml", migrate),
            ("app/templates/tests/smoke.yaml", test_hook),
            ("app/templates/cm.yaml", cm),
        ],
        "an app with a migration",
    );
    let out = w.push();
    out.assert_ok();
    let rec = w.last_record(&head);
    assert_eq!(rec["result"], "succeeded", "{}", out.all());
    let hooks = target(&rec, "app")["hooks"].to_string();
    assert!(
        hooks.contains(&format!("pre-deploy Job {ns}/app-migrate: succeeded")),
        "{hooks}"
    );
    assert_eq!(data(c, &ns, "app", "version").as_deref(), Some("1"));
    // hook-succeeded: deleted once it succeeded; the test hook never ran.
    assert!(c.get_json("job", Some(&ns), "app-migrate").is_none());
    assert!(c.get_json("job", Some(&ns), "app-smoke").is_none());
    let plan = w.hookops(&[
        "plan",
        "main",
        "--from",
        "0000000000000000000000000000000000000000",
    ]);
    assert!(
        plan.stdout
            .contains("app-smoke: not deployed: helm.sh/hook: test"),
        "{}",
        plan.stdout
    );

    let head = w.commit(
        &[("app/values.yaml", &values(2, true))],
        "a failing migration",
    );
    let out = w.push();
    let rec = w
        .records(&head)
        .into_iter()
        .find(|r| r["action"] == "deploy")
        .expect("the deploy's record");
    assert_eq!(rec["result"], "failed", "{}", out.all());
    let why = target(&rec, "app")["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        why.starts_with(&format!("pre-deploy Job {ns}/app-migrate")),
        "{why}"
    );
    assert_eq!(target(&rec, "app")["applied"], 0, "{rec}");
    // Nothing of the chart changed: the ConfigMap is version 1's.
    assert_eq!(data(c, &ns, "app", "version").as_deref(), Some("1"));
    assert_ne!(w.pointer("prod").as_deref(), Some(head.as_str()));
}

/// A local chart dependency (`file://../common`, not vendored) is materialised into the chart's
/// `charts/` for Helm, and a change to it re-deploys its users; the common chart is no target.
/// A chart reading outside itself is refused before Helm runs: a symlink, a dependency that
/// climbs out of the repository.
#[test]
fn a_local_dependency_is_a_reference_and_reading_outside_the_chart_is_refused() {
    let Some((w, c, _)) = helm_world("") else {
        return;
    };
    let ns = c.unique("helm-dep");
    let web = "apiVersion: v2\nname: web\nversion: 0.1.0\ndependencies:\n- name: common\n  version: 0.1.0\n  repository: file://../common\n";
    let common_cm = |v: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}-common\n  namespace: {{{{ .Values.global.namespace }}}}\ndata:\n  from: {v}\n")
    };
    w.commit(
        &[
            ("ns.yaml", &namespace(&ns)),
            ("charts/web/Chart.yaml", web),
            (
                "charts/web/values.yaml",
                &format!("global:\n  namespace: {ns}\n"),
            ),
            ("charts/common/Chart.yaml", &chart_yaml("common", "0.1.0")),
            ("charts/common/templates/cm.yaml", &common_cm("common-v1")),
        ],
        "a chart using a local dependency",
    );
    let out = w.push();
    out.assert_ok();
    assert_eq!(
        data(c, &ns, "web-common", "from").as_deref(),
        Some("common-v1"),
        "{}",
        out.all()
    );

    let head = w.commit(
        &[("charts/common/templates/cm.yaml", &common_cm("common-v2"))],
        "the dependency changes",
    );
    let out = w.push();
    out.assert_ok();
    let rec = w.last_record(&head);
    assert_eq!(
        target(&rec, "charts/web")["result"],
        "succeeded",
        "{}",
        out.all()
    );
    assert_eq!(rec["targets"].as_array().unwrap().len(), 1, "{rec}");
    assert_eq!(
        data(c, &ns, "web-common", "from").as_deref(),
        Some("common-v2")
    );

    // A template that is a symlink to a file outside the chart: refused, never followed.
    std::fs::write(
        w.clone.join("outside.txt"),
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stolen\n  namespace: {ns}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(w.clone.join("charts/web/templates")).unwrap();
    std::os::unix::fs::symlink(
        "../../../outside.txt",
        w.clone.join("charts/web/templates/link.yaml"),
    )
    .unwrap();
    let head = w.commit(&[], "a symlink out of the chart");
    w.push();
    let rec = w.last_record(&head);
    assert_eq!(rec["result"], "failed");
    assert!(
        reasons(&rec).contains("charts/web/templates/link.yaml: is a symbolic link"),
        "{rec}"
    );
    assert!(c.get_json("configmap", Some(&ns), "stolen").is_none());
    w.remove(&["charts/web/templates/link.yaml"], "no symlink");

    // A dependency that climbs out of the repository: refused naming Chart.yaml and line.
    let head = w.commit(
        &[(
            "charts/web/Chart.yaml",
            &format!("{web}- name: up\n  version: 0.1.0\n  repository: file://../../../../etc\n"),
        )],
        "a dependency out of the repository",
    );
    w.push();
    let rec = w.last_record(&head);
    assert_eq!(rec["result"], "failed");
    assert!(
        reasons(&rec).contains(
            "charts/web/Chart.yaml:10: dependency \"up\": repository \"file://../../../../etc\" climbs out of the repository"
        ),
        "{rec}"
    );
}

/// A chart repository on 127.0.0.1: the files `helm package` and `helm repo index` wrote,
/// served by a small HTTP server that counts the requests for packages. Stopped on drop.
struct ChartRepo {
    url: String,
    packages: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    package: PathBuf,
}

impl ChartRepo {
    fn start(helm: &str, dir: &Path, chart: &str, version: &str) -> ChartRepo {
        let src = dir.join("src").join(chart);
        std::fs::create_dir_all(src.join("templates")).unwrap();
        std::fs::write(src.join("Chart.yaml"), chart_yaml(chart, version)).unwrap();
        std::fs::write(
            src.join("values.yaml"),
            "name: remote\ngreeting: packaged\ncolor: c\nsize: s\nshape: s\n",
        )
        .unwrap();
        std::fs::write(src.join("templates/cm.yaml"), CM_TEMPLATE).unwrap();
        let repo = dir.join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        let h = |args: &[&str]| {
            let mut cmd = Command::new(helm);
            cmd.env("HOME", dir).args(args);
            run(&mut cmd).assert_ok();
        };
        h(&[
            "package",
            src.to_str().unwrap(),
            "-d",
            repo.to_str().unwrap(),
        ]);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        h(&["repo", "index", repo.to_str().unwrap(), "--url", &url]);
        let packages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping, root) = (packages.clone(), stop.clone(), repo.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // The rest of the request head.
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let file = root.join(path.trim_start_matches('/'));
                if path.ends_with(".tgz") {
                    seen.lock().unwrap().push(path.clone());
                }
                let reply = match std::fs::read(&file) {
                    Ok(body) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body);
                        r
                    }
                    Err(_) => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = conn.write_all(&reply);
            }
        });
        let package = repo.join(format!("{chart}-{version}.tgz"));
        ChartRepo {
            url,
            packages,
            stop,
            thread: Some(thread),
            package,
        }
    }
}

impl Drop for ChartRepo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A remote chart pinned by version, pulled once from a chart repository on 127.0.0.1 and
/// cached by digest (the record names the digest); unpinned versions, and remote charts on a
/// server that does not allow them, are refused.
#[test]
fn a_remote_chart_is_pulled_once_pinned_and_recorded_by_digest() {
    let Some((w, c, helm)) = helm_world("[helm]\nallow_remote = true\n") else {
        return;
    };
    let ns = c.unique("helm-remote");
    let repo = ChartRepo::start(&helm, &w.tmp.path().join("charts"), "hello", "1.2.3");
    let config = |version: &str| {
        format!(
            "[[target]]\nname = \"ns\"\npath = \"ns\"\ntype = \"kubectl\"\n\n\
             [[target]]\nname = \"hello\"\npath = \"platform/hello\"\ntype = \"helm\"\n\
             namespace = \"{ns}\"\nrepo = \"{}\"\nchart = \"hello\"\nversion = \"{version}\"\n\
             depends_on = [\"ns\"]\n",
            repo.url
        )
    };
    let head = w.commit(
        &[
            ("ns/ns.yaml", &namespace(&ns)),
            (
                "platform/hello/values-prod.yaml",
                "greeting: from-the-tree\n",
            ),
            ("hookops.toml", &config("1.2.3")),
        ],
        "a remote chart",
    );
    let out = w.push();
    out.assert_ok();
    let rec = w.last_record(&head);
    assert_eq!(rec["result"], "succeeded", "{}", out.all());
    use sha2::Digest;
    let digest = format!(
        "sha256:{:x}",
        sha2::Sha256::digest(std::fs::read(&repo.package).unwrap())
    );
    assert_eq!(
        target(&rec, "hello")["chart"],
        serde_json::json!({"name": "hello", "version": "1.2.3", "release": "hello", "repo": repo.url, "digest": digest})
    );
    assert_eq!(
        data(c, &ns, "remote", "greeting").as_deref(),
        Some("from-the-tree")
    );
    assert_eq!(repo.packages.lock().unwrap().len(), 1);

    // Re-deployed (its values changed): rendered from the cache, not pulled again.
    w.commit(
        &[("platform/hello/values-prod.yaml", "greeting: again\n")],
        "values",
    );
    w.push().assert_ok();
    assert_eq!(data(c, &ns, "remote", "greeting").as_deref(), Some("again"));
    assert_eq!(repo.packages.lock().unwrap().len(), 1);

    // A range is not a pin.
    let head = w.commit(&[("hookops.toml", &config("^1.2.0"))], "unpinned");
    w.push();
    let rec = w.last_record(&head);
    assert_eq!(rec["result"], "failed");
    let why = reasons(&rec);
    assert!(why.contains("version \"^1.2.0\""), "{why}");
    assert!(why.contains("is not one exact version"), "{why}");

    // A server that does not allow remote charts refuses it, naming the setting.
    w.write_server_config(
        &std::fs::read_to_string(w.server.join("hookops/config.toml"))
            .unwrap()
            .replace("allow_remote = true", "allow_remote = false"),
    );
    let head = w.commit(
        &[
            ("hookops.toml", &config("1.2.3")),
            ("platform/hello/values-prod.yaml", "greeting: refused\n"),
        ],
        "pinned again",
    );
    w.push();
    let rec = w.last_record(&head);
    assert_eq!(rec["result"], "failed");
    assert!(
        reasons(&rec).contains("[helm] allow_remote = true allows it"),
        "{rec}"
    );
    assert_eq!(data(c, &ns, "remote", "greeting").as_deref(), Some("again"));
}

/// Issue 29, "Done when": plain manifests, a kustomize overlay over a base, a Terraform root
/// and two charts deploy in one push, with one record.
#[test]
fn a_mixed_repository_deploys_in_one_push_with_one_record() {
    let Some((w, c, _)) = helm_world("") else {
        return;
    };
    if !crate::util::require("terraform") {
        return;
    }
    let ns = c.unique("helm-mixed");
    let values = |name: &str| {
        format!("name: {name}\nnamespace: {ns}\ngreeting: hi\ncolor: c\nsize: s\nshape: s\n")
    };
    let head = w.commit(
        &[
            ("cluster/ns.yaml", &namespace(&ns)),
            (
                "apps/plain.yaml",
                &crate::util::configmap("plain", Some(&ns), "1"),
            ),
            ("base/kustomization.yaml", "resources:\n- cm.yaml\n"),
            (
                "base/cm.yaml",
                &crate::util::configmap("from-base", None, "1"),
            ),
            (
                "overlays/prod/kustomization.yaml",
                &format!("namespace: {ns}\nresources:\n- ../../base\n"),
            ),
            ("infra/main.tf", &terraform_root("mixed")),
            ("charts/one/Chart.yaml", &chart_yaml("one", "1.0.0")),
            ("charts/one/values.yaml", &values("chart-one")),
            ("charts/one/templates/cm.yaml", CM_TEMPLATE),
            ("charts/two/Chart.yaml", &chart_yaml("two", "2.0.0")),
            ("charts/two/values.yaml", &values("chart-two")),
            ("charts/two/templates/cm.yaml", CM_TEMPLATE),
        ],
        "everything at once",
    );
    let out = w.push();
    out.assert_ok();
    let records = w.records(&head);
    assert_eq!(records.len(), 1, "{records:?}");
    let rec = &records[0];
    assert_eq!(rec["result"], "succeeded", "{}", out.all());
    let mut kinds: Vec<(String, String)> = rec["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().into(),
                t["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    kinds.sort();
    let expected: Vec<(String, String)> = [
        ("apps", "kubectl"),
        ("charts/one", "helm"),
        ("charts/two", "helm"),
        ("cluster", "kubectl"),
        ("infra", "terraform"),
        ("overlays/prod", "kustomize"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(kinds, expected);
    for name in ["plain", "from-base", "chart-one", "chart-two"] {
        assert!(c.get_json("configmap", Some(&ns), name).is_some(), "{name}");
    }
    assert_eq!(w.pointer("prod").as_deref(), Some(head.as_str()));
}
