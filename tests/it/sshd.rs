//! A real OpenSSH server on loopback for tests that fetch and push over `ssh://`: its own host
//! key (also certified by a host CA, for `@cert-authority` known_hosts lines), one authorized
//! client key (or the lines a test sets, such as Gitolite's forced commands), a free port, and
//! a known_hosts line from `ssh-keyscan`. Dropping the server stops it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{free_port, keygen, require, require_that, run};

pub struct SshServer {
    pub port: u16,
    /// Private key sshd accepts for `root`.
    pub client_key: PathBuf,
    /// known_hosts holding this server's host keys (as `[127.0.0.1]:PORT`).
    pub known_hosts: PathBuf,
    /// Public key of the CA that signed the host key's certificate (principal `127.0.0.1`).
    pub host_ca: PathBuf,
    pub log: PathBuf,
    /// The AuthorizedKeysFile: `client_key` until `set_authorized_keys` replaces it.
    authorized_keys: PathBuf,
    child: Child,
}

const SSHD: &str = "/usr/sbin/sshd";

impl SshServer {
    /// Starts sshd under `dir`. Without sshd: panics when CI is set, else skips (None).
    pub fn start(dir: &Path) -> Option<SshServer> {
        if !(require_that(SSHD, Path::new(SSHD).exists()) && require("ssh-keyscan")) {
            return None;
        }
        // sshd's privilege-separation directory; Debian creates it only from its service unit.
        std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd");
        let dir = dir.join("sshd");
        std::fs::create_dir_all(&dir).unwrap();
        let host_key = dir.join("host_ed25519");
        let client_key = dir.join("client_ed25519");
        let host_ca = dir.join("host_ca");
        for key in [&host_key, &client_key, &host_ca] {
            keygen(key, "ed25519", "");
        }
        let signed = run(Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(&host_ca)
            .args(["-I", "hookops-test-host", "-h", "-n", "127.0.0.1"])
            .arg(host_key.with_extension("pub")));
        assert!(signed.ok(), "ssh-keygen -s: {}", signed.all());
        let authorized = dir.join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).unwrap();
        // Another process may take the port between release and sshd's bind; retry a few.
        for _ in 0..5 {
            let port = free_port();
            let config = dir.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nHostCertificate {}\nAuthorizedKeysFile {}\nPidFile {}\n\
                     UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     PubkeyAuthentication yes\nPermitRootLogin yes\nLogLevel VERBOSE\n",
                    host_key.display(),
                    dir.join("host_ed25519-cert.pub").display(),
                    authorized.display(),
                    dir.join("sshd.pid").display()
                ),
            )
            .unwrap();
            let log = dir.join("sshd.log");
            let child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("starting sshd");
            let mut server = SshServer {
                port,
                client_key: client_key.clone(),
                known_hosts: dir.join("known_hosts"),
                host_ca: host_ca.with_extension("pub"),
                log,
                authorized_keys: authorized.clone(),
                child,
            };
            if server.wait_ready() {
                server.keyscan();
                return Some(server);
            }
            // Dropping `server` stops this attempt's sshd.
        }
        panic!("sshd did not start; see {}", dir.join("sshd.log").display());
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn keyscan(&self) {
        let out = Command::new("ssh-keyscan")
            .args(["-p", &self.port.to_string(), "-t", "ed25519", "127.0.0.1"])
            .output()
            .expect("ssh-keyscan");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.contains("ssh-ed25519"),
            "ssh-keyscan found no key: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&self.known_hosts, text).unwrap();
    }

    /// `ssh://root@127.0.0.1:PORT/abs/path`.
    pub fn url(&self, repo: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, repo.display())
    }

    /// An `ssh` command line (for `GIT_SSH_COMMAND` or `core.sshCommand`) that logs in with
    /// `key` alone, no user config, and checks the host key against `known_hosts`.
    pub fn ssh_command(&self, key: &Path) -> String {
        format!(
            "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
            key.display(),
            self.known_hosts.display()
        )
    }

    /// The `[sync]` table for a deployer that reaches this server.
    pub fn sync_table(&self, push: bool) -> String {
        format!(
            "[sync]\npush = {push}\nssh_key = \"{}\"\nknown_hosts = \"{}\"\n",
            self.client_key.display(),
            self.known_hosts.display()
        )
    }

    /// Replaces the keys sshd accepts (it reads the file at every login), e.g. with
    /// `command="…"` lines that force every session through a gatekeeper like Gitolite.
    pub fn set_authorized_keys(&self, text: &str) {
        std::fs::write(&self.authorized_keys, text).unwrap();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
