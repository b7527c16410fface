//! A real git smart-HTTP server on loopback for tests of HTTPS token authentication:
//! `git http-backend` behind TLS (a fresh self-signed certificate made with the openssl CLI) and
//! HTTP basic auth whose password must be the token (tests/it/https_git_server.py). Every
//! request is logged with whether it carried the right token, never the token itself.
//! Dropping the server stops it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct HttpsGitServer {
    pub port: u16,
    /// The server's self-signed certificate, which clients trust as their CA.
    pub cert: PathBuf,
    pub log: PathBuf,
    plain: bool,
    child: Child,
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/https_git_server.py");

impl HttpsGitServer {
    /// Serves the repositories under `root` (`root/server.git` is `/server.git`), requiring
    /// the token in `token_file`; over plain HTTP when `plain`. Its files go in `dir`. Without
    /// python3 or openssl: panics when CI is set, else skips (None).
    pub fn start(root: &Path, dir: &Path, token_file: &Path, plain: bool) -> Option<Self> {
        if !crate::util::require("python3") || !crate::util::require("openssl") {
            return None;
        }
        let name = if plain { "http" } else { "https" };
        let dir = dir.join(format!("{name}-git"));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(
            made.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let log = dir.join("requests.log");
        let stderr = dir.join("server.stderr");
        let mut cmd = Command::new("python3");
        cmd.arg(SCRIPT);
        if plain {
            cmd.arg("--plain");
        }
        let mut child = cmd
            .args([
                root,
                cert.as_path(),
                key.as_path(),
                token_file,
                log.as_path(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let Ok(port) = line.trim().parse() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{SCRIPT} did not start: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        };
        Some(HttpsGitServer {
            port,
            cert,
            log,
            plain,
            child,
        })
    }

    /// `https://127.0.0.1:PORT/PATH` (`http://` for a plain server).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.plain { "http" } else { "https" };
        format!("{scheme}://127.0.0.1:{}/{path}", self.port)
    }

    /// One line per request: `METHOD PATH STATUS auth=<none|ok|bad> user=<name>`.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HttpsGitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
