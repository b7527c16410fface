//! Bad input (issue 14): nothing silently skipped, nothing refused that kubectl accepts. Every
//! case goes through `hookops plan`, the pre-receive gate and a real push, with discovered
//! targets (no hookops.toml).

use crate::util::{configmap, sandboxed, terraform_root, World};

fn world() -> Option<World> {
    sandboxed("")
}

/// Every string in a record (reasons of the deploy and of its targets).
fn strings(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// `files` are refused three ways, each naming `expect`: the push's record fails and the
/// pointer stays, `plan` exits non-zero, and the gate rejects the next push.
fn refused(w: &World, files: &[(&str, &str)], expect: &str) {
    let before = w.pointer("prod");
    let c = w.commit(files, "bad input");
    let out = w.push();
    assert!(
        out.all().contains(expect),
        "push: want {expect:?} in:\n{}",
        out.all()
    );
    let rec = w.last_record(&c);
    assert_eq!(rec["result"], "failed", "{rec}");
    let mut text = String::new();
    strings(&rec, &mut text);
    assert!(text.contains(expect), "record: want {expect:?} in {rec}");
    assert_eq!(w.pointer("prod"), before, "the pointer moved");

    let plan = w.hookops(&["plan", "main"]);
    plan.assert_fail();
    assert!(
        plan.all().contains(expect),
        "plan: want {expect:?} in:\n{}",
        plan.all()
    );

    w.hookops(&["install", "--pre-receive"]).assert_ok();
    w.commit(&[], "push again");
    let out = w.push();
    out.assert_fail();
    assert!(out.all().contains("push rejected"), "{}", out.all());
    assert!(
        out.all().contains(expect),
        "gate: want {expect:?} in:\n{}",
        out.all()
    );
    let tip = w.git(Some(&w.server), &["rev-parse", "main"]);
    assert_eq!(tip.stdout.trim(), c, "the gate keeps the ref where it was");
}

/// `files` deploy (the gate lets them through first); `plan` from `base` shows them.
fn accepted(w: &World, base: &str, files: &[(&str, &[u8])]) -> (String, serde_json::Value) {
    for (path, bytes) in files {
        let p = w.clone.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    w.hookops(&["install", "--pre-receive"]).assert_ok();
    let c = w.commit(&[], "input kubectl accepts");
    let out = w.push();
    out.assert_ok();
    let rec = w.last_record(&c);
    assert_eq!(rec["result"], "succeeded", "{rec}\n{}", out.all());
    assert_eq!(w.pointer("prod").as_deref(), Some(c.as_str()));
    let plan = w.hookops(&["plan", "main", "--from", base, "--json"]);
    plan.assert_ok();
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).expect("plan JSON");
    (out.all(), plan)
}

/// A base commit deployed before the case, so later pushes discover targets from a diff.
fn base(w: &World) -> String {
    let c = w.commit(
        &[("apps/ok/cm.yaml", &configmap("ok", Some("default"), "1"))],
        "base",
    );
    w.push().assert_ok();
    c
}

fn applied_sources(plan: &serde_json::Value, target: &str) -> Vec<String> {
    let t = plan["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == target)
        .unwrap_or_else(|| panic!("target {target:?} in {plan}"));
    t["apply"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["source"].as_str().unwrap(),
                o["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn new_directory_whose_only_manifest_does_not_parse_is_refused() {
    let Some(w) = world() else { return };
    base(&w);
    refused(
        &w,
        &[(
            "broken/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\ndata:\n\ta: \"1\"\n",
        )],
        "broken/cm.yaml:6:1: invalid YAML: found character that cannot start any token",
    );
}

#[test]
fn new_directory_whose_only_json_manifest_does_not_parse_is_refused() {
    let Some(w) = world() else { return };
    base(&w);
    refused(
        &w,
        &[(
            "broken/cm.json",
            "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"ConfigMap\",\n  \"metadata\": {\"name\": \"x\",}\n}\n",
        )],
        "broken/cm.json:4:28: invalid JSON: trailing comma",
    );
}

/// Nine nested anchors ("billion laughs"): refused naming the expansion limit, on a first
/// deploy (discovery walks the whole tree), with the memory of hookops staying small.
#[test]
fn yaml_alias_bomb_is_refused() {
    let Some(w) = world() else { return };
    let mut bomb = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lol\ndata:\n");
    bomb.push_str(
        "  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        let refs = vec![format!("*{prev}"); 9].join(",");
        bomb.push_str(&format!("  {name}: &{name} [{refs}]\n"));
    }
    refused(
        &w,
        &[("bomb/cm.yaml", &bomb)],
        "bomb/cm.yaml:1:1: invalid YAML: aliases expand beyond the expansion limit (an alias bomb?)",
    );
}

#[test]
fn duplicate_keys_are_refused_at_parse_time() {
    let Some(w) = world() else { return };
    base(&w);
    refused(
        &w,
        &[(
            "dup/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup\ndata: {a: \"1\", a: \"2\"}\n",
        )],
        "dup/cm.yaml:5:16: duplicate key \"a\"",
    );
}

/// A UTF-8 byte-order mark, and UTF-16 (LE and BE) with one: kubectl reads them, so do we.
#[test]
fn byte_order_marks_and_utf16_are_read() {
    let Some(w) = world() else { return };
    let b = base(&w);
    let utf16 = |name: &str, big: bool| {
        let text = configmap(name, Some("default"), "ü");
        let mut bytes: Vec<u8> = if big {
            vec![0xFE, 0xFF]
        } else {
            vec![0xFF, 0xFE]
        };
        for u in text.encode_utf16() {
            bytes.extend(if big {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            });
        }
        bytes
    };
    let bom8 = format!("\u{feff}{}", configmap("bom8", Some("default"), "ü"));
    let (_, plan) = accepted(
        &w,
        &b,
        &[
            ("bom/utf8.yaml", bom8.as_bytes()),
            ("bom/le.yaml", &utf16("le", false)),
            ("bom/be.yaml", &utf16("be", true)),
        ],
    );
    let mut sources = applied_sources(&plan, "bom");
    sources.sort();
    assert_eq!(
        sources,
        [
            "bom/be.yaml:1/be",
            "bom/le.yaml:1/le",
            "bom/utf8.yaml:1/bom8"
        ],
        "{plan}"
    );
    for name in ["bom8", "le", "be"] {
        let cm = w.configmap("default", name).expect("applied");
        assert_eq!(cm["data"]["value"], "ü");
    }
}

/// Directory names with a space, non-ASCII letters or a quote name discovered targets as they
/// are: in the record, the metrics, the output and Terraform's work directory.
#[test]
fn directory_names_git_accepts_are_target_names() {
    let Some(w) = world() else { return };
    let metrics = w.tmp.path().join("textfile/hookops.prom");
    w.configure(
        "",
        &format!("[metrics]\ntextfile = \"{}\"\n", metrics.display()),
    );
    let b = base(&w);
    let (out, plan) = accepted(
        &w,
        &b,
        &[
            (
                "my app/cm.yaml",
                configmap("space", Some("default"), "1").as_bytes(),
            ),
            (
                "ünï/cm.yaml",
                configmap("unicode", Some("default"), "1").as_bytes(),
            ),
            (
                "say \"hi\"/cm.yaml",
                configmap("quote", Some("default"), "1").as_bytes(),
            ),
            ("tf ü/main.tf", terraform_root("v1").as_bytes()),
        ],
    );
    let mut names: Vec<&str> = plan["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["my app", "say \"hi\"", "tf ü", "ünï"], "{plan}");
    for name in ["space", "unicode", "quote"] {
        assert!(w.configmap("default", name).is_some(), "{name}");
    }
    let rec = w.last_record(&w.head());
    let mut recorded: Vec<&str> = rec["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    recorded.sort();
    assert_eq!(recorded, names, "{rec}");
    // Terraform's work directory: bytes outside [A-Za-z0-9._-] percent-encoded.
    let work = w.server.join("hookops/work/prod/terraform/tf%20%C3%BC");
    assert!(
        work.join("tf ü/terraform.tfstate").is_file(),
        "{}",
        work.display()
    );
    let prom = std::fs::read_to_string(&metrics).unwrap();
    for label in [
        r#"target="my app""#,
        r#"target="ünï""#,
        r#"target="say \"hi\"""#,
    ] {
        assert!(prom.contains(label), "{label} in:\n{prom}");
    }
    // The summary lines align by characters, not bytes.
    let column = |name: &str| {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("prod: {name} ")))
            .unwrap_or_else(|| panic!("{name} in:\n{out}"));
        line.chars()
            .collect::<String>()
            .find("kubectl")
            .map(|i| line[..i].chars().count())
    };
    assert_eq!(column("my app"), column("ünï"), "{out}");
}

/// `*.json` manifests deploy like YAML (a List expands); package.json and friends (no
/// apiVersion and kind) never make a directory a target.
#[test]
fn json_manifests_are_applied_and_other_json_is_not_a_target() {
    let Some(w) = world() else { return };
    let b = base(&w);
    let cm = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "json-one", "namespace": "default"}, "data": {"value": "1"}}"#;
    let list = r#"{
  "apiVersion": "v1",
  "kind": "List",
  "items": [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "json-two", "namespace": "default"}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "json-three", "namespace": "default"}}
  ]
}
"#;
    let (_, plan) = accepted(
        &w,
        &b,
        &[
            ("jsonapp/cm.json", cm.as_bytes()),
            ("jsonapp/list.json", list.as_bytes()),
            (
                "web/package.json",
                br#"{"name": "web", "version": "1.0.0"}"#,
            ),
            (
                "web/tsconfig.json",
                br#"{"compilerOptions": {"strict": true}}"#,
            ),
        ],
    );
    let names: Vec<&str> = plan["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["jsonapp"], "{plan}");
    let mut sources = applied_sources(&plan, "jsonapp");
    sources.sort();
    assert_eq!(
        sources,
        [
            "jsonapp/cm.json:1/json-one",
            "jsonapp/list.json:1/json-three",
            "jsonapp/list.json:1/json-two"
        ],
        "{plan}"
    );
    for name in ["json-one", "json-two", "json-three"] {
        assert!(w.configmap("default", name).is_some(), "{name}");
    }
}
