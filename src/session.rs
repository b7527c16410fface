//! One opened repository with its server config: where hookops state lives, which branch is
//! the default, and where each environment's deployed pointer points.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use git2::{Oid, Repository};

use crate::config::{pointer_ref, Environment, ServerConfig, STATE_DIR};
use crate::record::Signer;

pub struct Session {
    pub repo: Repository,
    pub git_dir: PathBuf,
    pub config: ServerConfig,
}

impl Session {
    /// `--repo DIR`, else `$GIT_DIR` (with a pre-receive hook's quarantine), else the
    /// repository around the current directory.
    pub fn open(dir: Option<&Path>) -> Result<Session> {
        let deferred = init_libgit2(dir);
        let repo = match dir {
            Some(d) => Repository::open(d)
                .with_context(|| format!("{}: not a git repository", d.display()))?,
            None => Repository::open_from_env()
                .context("not inside a git repository (use --repo DIR or set GIT_DIR)")?,
        };
        let git_dir = repo.path().to_path_buf();
        let config = ServerConfig::load(&git_dir)?;
        if config.sync.push {
            if let Some(bundle) = deferred {
                // SAFETY: single-threaded start-up (see `init_libgit2`).
                unsafe { git2::opts::set_ssl_cert_file(bundle.as_os_str()) }
                    .context("loading the CA certificates for syncing")?;
            }
        }
        Ok(Session {
            repo,
            git_dir,
            config,
        })
    }

    pub fn state_dir(&self) -> PathBuf {
        self.git_dir.join(STATE_DIR)
    }

    /// Private per-environment work directory (kubectl cache, Terraform roots, scratch).
    pub fn env_dir(&self, env: &str) -> Result<PathBuf> {
        let dir = self.state_dir().join("work").join(env);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// The branch HEAD names (a bare repository's default branch; a clone's current branch).
    pub fn default_branch(&self) -> Option<String> {
        let head = self.repo.find_reference("HEAD").ok()?;
        head.symbolic_target().map(str::to_string)
    }

    pub fn environments_for(&self, ref_name: &str) -> Vec<Environment> {
        self.config
            .environments_for(ref_name, self.default_branch().as_deref())
    }

    pub fn environments(&self) -> Vec<Environment> {
        self.config
            .all_environments(self.default_branch().as_deref())
    }

    pub fn environment(&self, name: &str) -> Result<Environment> {
        self.config
            .environment(name, self.default_branch().as_deref())
    }

    pub fn pointer(&self, env: &str) -> Option<Oid> {
        self.repo
            .find_reference(&pointer_ref(env))
            .ok()
            .and_then(|r| r.target())
    }

    pub fn signer(&self) -> Result<Option<Signer>> {
        match &self.config.signing.key {
            Some(path) => Signer::load(path).map(Some),
            None => Ok(None),
        }
    }

    /// Resolves a revision (`main`, a tag, an id, `HEAD~2`) to a commit, naming it in errors.
    pub fn resolve(&self, rev: &str) -> Result<Oid> {
        let obj = self
            .repo
            .revparse_single(rev)
            .with_context(|| format!("unknown revision {rev:?}"))?;
        let commit = obj
            .peel_to_commit()
            .with_context(|| format!("{rev:?} does not name a commit"))?;
        Ok(commit.id())
    }

    /// The repository-wide deploy lock (flock: the kernel releases it if hookops dies).
    pub fn lock(&self) -> Result<File> {
        let dir = self.state_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if file.try_lock().is_err() {
            log::info!("waiting for another hookops deploy to finish");
            file.lock()
                .with_context(|| format!("locking {}", path.display()))?;
        }
        Ok(file)
    }
}

/// Largest tree libgit2 keeps in its object cache (a directory of about 25,000 entries).
const TREE_CACHE_LIMIT: usize = 1 << 20;

/// The environment variable OpenSSL (and the Go tools hookops runs) read the CA bundle from.
const CERT_FILE_VAR: &str = "SSL_CERT_FILE";

/// Initialises libgit2 once per process, without the CA bundle when this process cannot need
/// libgit2's TLS; returns the bundle it left out, if any.
///
/// libgit2 sets up OpenSSL when it is initialised, and OpenSSL then parses every certificate of
/// the system bundle (about 150): two thirds of the CPU time of a one-file `hookops plan`, for a
/// TLS connection only `[sync] push` opens (the watcher initialises libgit2 itself, before it
/// opens a session, and keeps the bundle). So the bundle variable points at an empty file while
/// libgit2 initialises, and is then set back to exactly what git2's probe would have left for
/// child processes. `Session::open` hands the bundle to libgit2 if the config turns out to
/// sync. Called before any thread exists: the environment is changed only here, once.
fn init_libgit2(dir: Option<&Path>) -> Option<&'static Path> {
    static DEFERRED: OnceLock<Option<PathBuf>> = OnceLock::new();
    DEFERRED
        .get_or_init(|| {
            let defer = !may_sync(dir);
            let original = std::env::var_os(CERT_FILE_VAR);
            if defer {
                std::env::set_var(CERT_FILE_VAR, "/dev/null");
            }
            // The first git2 call initialises libgit2. libgit2 caches trees only up to 4 KiB, so
            // a directory of a few hundred files was read, inflated and hashed again on every
            // path lookup through it (discovery walks up through the same directories many
            // times). Big trees are few; cache them.
            // SAFETY: single-threaded start-up, before any other libgit2 use in this process.
            if let Err(e) = unsafe {
                git2::opts::set_cache_object_limit(git2::ObjectType::Tree, TREE_CACHE_LIMIT)
            } {
                log::debug!("cannot raise libgit2's tree cache limit: {e}");
            }
            // libgit2 also re-hashes (SHA-1 with collision detection) every object it reads,
            // which git itself never does on reads: objects were hashed when they were
            // received, and zlib's own checksum still catches damage to what is stored. It was
            // a third of the cost of reading a large directory.
            git2::opts::strict_hash_verification(false);
            if !defer {
                return None;
            }
            let bundle = probed_cert_file(original.as_ref());
            match (&bundle, &original) {
                (Some(b), _) => std::env::set_var(CERT_FILE_VAR, b),
                (None, Some(v)) => std::env::set_var(CERT_FILE_VAR, v),
                (None, None) => std::env::remove_var(CERT_FILE_VAR),
            }
            bundle
        })
        .as_deref()
}

/// Whether the server config of the repository about to be opened may enable `[sync] push`.
/// Only a readable config that says no (or no config at all) lets the bundle be deferred.
fn may_sync(dir: Option<&Path>) -> bool {
    let git_dir = match dir {
        Some(d) if d.join("HEAD").is_file() => d.to_path_buf(),
        Some(d) if d.join(".git").is_dir() => d.join(".git"),
        Some(_) => return true,
        None => match std::env::var_os("GIT_DIR") {
            Some(d) => PathBuf::from(d),
            None => return true,
        },
    };
    let text = match std::fs::read_to_string(git_dir.join(STATE_DIR).join("config.toml")) {
        Ok(text) => text,
        Err(e) => return e.kind() != std::io::ErrorKind::NotFound,
    };
    match text.parse::<toml::Table>() {
        Ok(t) => t
            .get("sync")
            .and_then(|s| s.get("push"))
            .is_some_and(|p| p.as_bool() != Some(false)),
        Err(_) => true,
    }
}

/// The CA bundle git2's OpenSSL probe (openssl-probe 0.1) settles on: the variable if it names
/// an existing file, else the first bundle in its list of system locations.
fn probed_cert_file(original: Option<&OsString>) -> Option<PathBuf> {
    if let Some(v) = original.map(PathBuf::from).filter(|p| p.exists()) {
        return Some(v);
    }
    const DIRS: &[&str] = &[
        "/var/ssl",
        "/usr/share/ssl",
        "/usr/local/ssl",
        "/usr/local/openssl",
        "/usr/local/etc/openssl",
        "/usr/local/share",
        "/usr/lib/ssl",
        "/usr/ssl",
        "/etc/openssl",
        "/etc/pki/ca-trust/extracted/pem",
        "/etc/pki/tls",
        "/etc/ssl",
        "/etc/certs",
        "/opt/etc/ssl",
    ];
    const FILES: &[&str] = &[
        "cert.pem",
        "certs.pem",
        "ca-bundle.pem",
        "cacert.pem",
        "ca-certificates.crt",
        "certs/ca-certificates.crt",
        "certs/ca-root-nss.crt",
        "certs/ca-bundle.crt",
        "CARootCertificates.pem",
        "tls-ca-bundle.pem",
    ];
    DIRS.iter()
        .map(Path::new)
        .filter(|d| d.exists())
        .flat_map(|d| FILES.iter().map(move |f| d.join(f)))
        .find(|p| p.exists())
}
