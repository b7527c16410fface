//! Secrets and trust end to end: values from a real OpenBao reach Terraform (environment only)
//! and Kubernetes Secrets, and nowhere else; Vault failures name the reference; namespace and
//! cluster-scope policy refuse targets and record it.

use std::path::Path;

use crate::util::{configmap, free_port, keygen, namespace, public_key, tools_present, World};
use crate::vault::BaoServer;

const SECRET: &str = "s3cr3t-Pa55w0rd-do-not-leak";

fn world_with_vault(read_paths: &[&str], extra_env: &str) -> Option<(World, BaoServer)> {
    if !tools_present() {
        return None;
    }
    let bao = BaoServer::start()?;
    bao.write_secret("app/db", &[("password", SECRET), ("user", "app")]);
    let creds = bao.approle("deployer", read_paths, "1h", "2h");
    let mut w = World::new();
    w.start_sandbox();
    let cfg = bao.approle_config(w.tmp.path(), &creds);
    w.configure(
        extra_env,
        &format!(
            "[vault]\naddress = \"{}\"\nrole_id_file = \"{}\"\nsecret_id_file = \"{}\"\n",
            cfg.address,
            cfg.role_id_file.unwrap().display(),
            cfg.secret_id_file.unwrap().display()
        ),
    );
    Some((w, bao))
}

const TREE: &str = r#"[[target]]
name = "db"
path = "infra"
type = "terraform"
[target.secrets]
TF_VAR_db_password = "secret/data/app/db#password"

[[target]]
name = "app"
path = "k8s"
type = "kubectl"
namespace = "app"
[[target.secret]]
name = "db-credentials"
data = { password = "secret/data/app/db#password", user = "secret/data/app/db#user" }
"#;

/// The root receives the password as a variable, keeps only its hash in state, and (being
/// careless) echoes it from a provisioner: hookops must mask that line.
const ROOT: &str = r#"variable "db_password" {
  type = string
}

resource "terraform_data" "db" {
  input = sha256(var.db_password)

  provisioner "local-exec" {
    command = "echo careless provisioner says $PW"
    environment = {
      PW = nonsensitive(var.db_password)
    }
  }
}
"#;

fn sha256_hex(s: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("printf %s '{s}' | sha256sum")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn grep_tree(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            // Terraform's provider cache holds no values; skip its binaries for speed.
            hits.extend(grep_tree(&p, needle));
        } else if let Ok(bytes) = std::fs::read(&p) {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn vault_values_reach_terraform_and_secrets_and_nothing_else() {
    let Some((w, _bao)) = world_with_vault(&["secret/data/app/*"], "") else {
        return;
    };
    let c = w.commit(
        &[
            ("hookops.toml", TREE),
            ("infra/main.tf", ROOT),
            ("k8s/ns.yaml", &namespace("app")),
            ("k8s/cm.yaml", &configmap("plain", None, "1")),
        ],
        "secrets",
    );
    let out = w.push();
    out.assert_ok();
    let all = out.all();
    assert!(
        !all.contains(SECRET),
        "push output leaks the secret:\n{all}"
    );
    // Terraform's whole output goes to the root's log (the pusher gets its summary), masked.
    let log = std::fs::read_to_string(w.server.join("hookops/work/prod/terraform/db.log"))
        .expect("the root's terraform log");
    assert!(
        log.contains("careless provisioner says ***"),
        "the echoed value is masked:\n{log}"
    );
    assert!(!log.contains(SECRET), "the terraform log leaks the secret");
    // Terraform got the value (its state holds the hash of it).
    let state = std::fs::read_to_string(
        w.server
            .join("hookops/work/prod/terraform/db/infra/terraform.tfstate"),
    )
    .unwrap();
    assert!(
        state.contains(&sha256_hex(SECRET)),
        "terraform did not receive the value"
    );
    // The Kubernetes Secret carries it.
    let secret = w
        .sandbox()
        .object("v1", "Secret", Some("app"), "db-credentials")
        .expect("secret applied");
    let text = secret.to_string();
    let b64 = {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("printf %s '{SECRET}' | base64 -w0")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(text.contains(SECRET) || text.contains(&b64), "{text}");
    // Nowhere else: notes, hookops' own files, the record.
    assert!(!w.note(&c).contains(SECRET));
    let hits: Vec<String> = grep_tree(&w.server.join("hookops"), SECRET);
    assert!(hits.is_empty(), "secret found in {hits:?}");
    let hits = grep_tree(&w.server.join("hookops"), &b64);
    assert!(hits.is_empty(), "base64 secret found in {hits:?}");
    assert_eq!(w.last_record(&c)["result"], "succeeded");
}

fn expect_vault_failure(w: &World, reference: &str, expect: &str) {
    let tree = format!("[[target]]\nname = \"db\"\npath = \"infra\"\ntype = \"terraform\"\n[target.secrets]\nTF_VAR_db_password = \"{reference}\"\n");
    let c = w.commit(
        &[
            ("hookops.toml", &tree),
            (
                "infra/main.tf",
                "variable \"db_password\" {\n  type = string\n}\n",
            ),
        ],
        &format!("ref {reference}"),
    );
    let out = w.push();
    let all = out.all();
    assert!(all.contains(expect), "expected {expect:?}:\n{all}");
    assert!(!all.contains(SECRET));
    let rec = w.last_record(&c);
    assert_eq!(rec["result"], "failed");
    let reason = rec["reason"].as_str().unwrap();
    assert!(reason.contains(expect), "{reason}");
    assert!(!reason.contains(SECRET));
}

#[test]
fn vault_errors_name_the_reference() {
    let Some((w, _bao)) = world_with_vault(&["secret/data/app/*"], "") else {
        return;
    };
    expect_vault_failure(
        &w,
        "secret/data/other/db#password",
        "permission denied reading secret/data/other/db#password",
    );
    expect_vault_failure(
        &w,
        "secret/data/app/nope#password",
        "secret/data/app/nope#password not found",
    );
    expect_vault_failure(
        &w,
        "secret/data/app/db#missing",
        "key \"missing\" not found in secret/data/app/db",
    );
    // Unreachable: the same config with an address nobody listens on.
    let port = free_port();
    let config = std::fs::read_to_string(w.server.join("hookops/config.toml")).unwrap();
    let address = config
        .lines()
        .find(|l| l.starts_with("address"))
        .unwrap()
        .to_string();
    w.write_server_config(
        &config.replace(&address, &format!("address = \"http://127.0.0.1:{port}\"")),
    );
    expect_vault_failure(
        &w,
        "secret/data/app/db#password",
        "cannot reach http://127.0.0.1:",
    );
}

#[test]
fn namespace_policy_refuses_whole_targets() {
    if !tools_present() {
        return;
    }
    let mut w = World::new();
    w.start_sandbox();
    w.configure("allowed_namespaces = [\"app\"]", "");
    w.sandbox();
    let setup = w.commit(&[("setup/ns.yaml", &namespace("app"))], "ns");
    // Cluster-scoped objects need allow_cluster_scoped = true.
    w.push();
    assert_eq!(w.last_record(&setup)["result"], "failed");
    assert!(w.last_record(&setup)["targets"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("cluster-scoped objects are not allowed"));
    w.configure(
        "allowed_namespaces = [\"app\"]\nallow_cluster_scoped = true",
        "",
    );
    let c = w.commit(
        &[
            ("good/cm.yaml", &configmap("fine", Some("app"), "1")),
            (
                "bad/cm.yaml",
                &format!(
                    "{}---\n{}",
                    configmap("ok-part", Some("app"), "1"),
                    configmap("sneaky", Some("kube-system"), "1")
                ),
            ),
        ],
        "mixed",
    );
    let out = w.push();
    assert!(out.all().contains("refused by policy"), "{}", out.all());
    let rec = w.last_record(&c);
    assert_eq!(rec["result"], "failed");
    let bad = rec["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "bad")
        .unwrap();
    assert_eq!(bad["result"], "failed");
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("namespace \"kube-system\" is not allowed"),
        "{bad}"
    );
    // Refused whole: not even the allowed object of that target was applied.
    assert!(w.configmap("app", "ok-part").is_none());
    assert!(w.configmap("kube-system", "sneaky").is_none());
    assert!(w.configmap("app", "fine").is_some());
}

#[test]
fn gate_requires_signed_commits() {
    if !tools_present() {
        return;
    }
    let w = World::new();
    let signers = w.tmp.path().join("commit_signers");
    w.write_server_config(&format!(
        "[[environment]]\nname = \"prod\"\nbranch = \"main\"\n\n[gate]\nrequire_signed_commits = true\nallowed_signers = \"{}\"\n",
        signers.display()
    ));
    w.hookops(&["install", "--pre-receive"]).assert_ok();
    // The pusher's SSH signing key, allowed for the "git" namespace.
    let key = w.tmp.path().join("pusher_ed25519");
    keygen(&key, "ed25519", "");
    std::fs::write(
        &signers,
        format!(
            "pusher@example.test namespaces=\"git\" {}\n",
            public_key(&key)
        ),
    )
    .unwrap();

    w.commit(&[("README.md", "unsigned\n")], "unsigned");
    let out = w.push();
    out.assert_fail();
    assert!(
        out.all()
            .contains("is not signed (require_signed_commits = true)"),
        "{}",
        out.all()
    );

    // A commit signed by a key that is not allowed.
    let other = w.tmp.path().join("other_ed25519");
    keygen(&other, "ed25519", "");
    w.in_clone(&["config", "gpg.format", "ssh"]).assert_ok();
    w.in_clone(&["config", "user.signingkey", other.to_str().unwrap()])
        .assert_ok();
    w.in_clone(&["commit", "-q", "--amend", "-S", "-m", "wrong key"])
        .assert_ok();
    let out = w.push();
    out.assert_fail();
    assert!(
        out.all().contains("is not signed by an allowed signer"),
        "{}",
        out.all()
    );

    w.in_clone(&["config", "user.signingkey", key.to_str().unwrap()])
        .assert_ok();
    w.in_clone(&["commit", "-q", "--amend", "-S", "-m", "signed"])
        .assert_ok();
    w.push().assert_ok();
    std::fs::write(w.clone.join("README.md"), "signed too\n").unwrap();
    w.in_clone(&["commit", "-q", "-S", "-am", "signed on top"])
        .assert_ok();
    w.push().assert_ok();
}
