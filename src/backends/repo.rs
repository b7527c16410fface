//! One opened repository with its server config: where hookops state lives, which branch is
//! the default, and where each environment's deployed pointer points.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};

use anyhow::{Context, Result};
use git2::{Oid, Repository};

use crate::backends::kube::{Gate, Kubectl};
use crate::config::{pointer_ref, Environment, ServerConfig, STATE_DIR};
use crate::record::Signer;

pub struct Session {
    pub repo: Repository,
    pub git_dir: PathBuf,
    pub config: ServerConfig,
    /// lock = "lease": the fence of each environment whose Lease this session holds; every
    /// kubectl made for that environment asks it before writing.
    gates: Mutex<BTreeMap<String, Arc<dyn Gate>>>,
}

impl Session {
    /// `--repo DIR`, else `$GIT_DIR` (with a pre-receive hook's quarantine), else the
    /// repository around the current directory.
    pub fn open(dir: Option<&Path>) -> Result<Session> {
        let repo = open_repository(dir)?;
        let git_dir = repo.path().to_path_buf();
        let config = ServerConfig::load(&git_dir)?;
        crate::backends::process::pass_env(&config.tools.pass_env);
        Ok(Session {
            repo,
            git_dir,
            config,
            gates: Mutex::default(),
        })
    }

    /// Plans with another server config than the repository's (`plan --server-config` in a
    /// clone, which has none).
    pub fn use_config_file(&mut self, path: &Path) -> Result<()> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        self.config = ServerConfig::parse(&text, &path.display().to_string())?;
        Ok(())
    }

    /// The server config's path (it may not exist: then the defaults apply).
    pub fn config_path(&self) -> PathBuf {
        self.state_dir().join("config.toml")
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

    /// kubectl for an environment: its kubeconfig and context, the `[tools]` binary, and a
    /// discovery cache of its own in the environment's work directory.
    pub fn kubectl(
        &self,
        env: &Environment,
        masker: crate::backends::mask::Masker,
    ) -> Result<Kubectl> {
        let cache = self.env_dir(&env.name)?.join("kube-cache");
        let mut kubectl = Kubectl::new(&self.config.tools.kubectl, env, &cache, masker);
        kubectl.sandbox = crate::backends::sandbox::Sandbox::from_config(&self.config.sandbox);
        kubectl.allow_remote = self.config.kustomize.allow_remote;
        kubectl.gate = self.gate(&env.name);
        Ok(kubectl)
    }

    /// The fence of `env`'s Lease while this session holds it (None: no Lease).
    pub fn gate(&self, env: &str) -> Option<Arc<dyn Gate>> {
        self.gates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(env)
            .cloned()
    }

    /// From now on (`Some`) or no longer (`None`), `env`'s cluster writes ask `gate` first.
    pub fn set_gate(&self, env: &str, gate: Option<Arc<dyn Gate>>) {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        match gate {
            Some(g) => gates.insert(env.to_string(), g),
            None => gates.remove(env),
        };
    }

    /// This host's name: `[deploy] host`, else the machine's (Leases and records).
    pub fn host(&self) -> String {
        self.config
            .deploy
            .host
            .clone()
            .unwrap_or_else(crate::record::payload::hostname)
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

    /// Resolves a revision (`main`, a tag, an id, `HEAD~2`) to a commit, naming it in errors
    /// (and nothing of libgit2's).
    pub fn resolve(&self, rev: &str) -> Result<Oid> {
        let obj = self.repo.revparse_single(rev).map_err(|e| {
            log::debug!("{rev}: {e}");
            anyhow::anyhow!("unknown revision {rev:?} in {}", self.git_dir.display())
        })?;
        let commit = obj.peel_to_commit().map_err(|e| {
            log::debug!("{rev}: {e}");
            anyhow::anyhow!("{rev:?} does not name a commit")
        })?;
        Ok(commit.id())
    }

    /// A session's repository opened again with its config, on another thread (a
    /// `git2::Repository` is not shared between threads): environments of one push deploy in
    /// parallel.
    pub fn reopen(git_dir: &Path, config: &ServerConfig) -> Result<Session> {
        let repo = Repository::open(git_dir)
            .with_context(|| format!("{}: not a git repository", git_dir.display()))?;
        Ok(Session {
            repo,
            git_dir: git_dir.to_path_buf(),
            config: config.clone(),
            gates: Mutex::default(),
        })
    }

    /// The deploy locks of environments `names`: `<state>/locks/<env>.lock` each (flock: the
    /// kernel releases them if hookops dies), taken in name order so that two runs wanting
    /// overlapping sets never wait for each other in a circle. Held until the guard drops.
    pub fn lock_envs(&self, names: &[&str]) -> Result<EnvLocks> {
        let mut sorted: Vec<&str> = names.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let dir = self.state_dir().join("locks");
        let mut files = Vec::with_capacity(sorted.len());
        for name in sorted {
            let (mut file, path) = lock_file(&dir, &format!("{name}.lock"))?;
            if file.try_lock().is_err() {
                // The pusher waits: say for whom, and since when.
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                crate::out::say(&format!(
                    "{name}: waiting for another hookops run to finish ({})",
                    holder_text(holder.trim())
                ));
                file.lock()
                    .with_context(|| format!("locking {}", path.display()))?;
            }
            record_holder(&mut file, &path);
            files.push(file);
        }
        Ok(EnvLocks { _files: files })
    }
}

/// `--repo DIR`, else `$GIT_DIR` (with a pre-receive hook's quarantine), else the repository
/// around the current directory; a failure names the path, never libgit2's codes.
pub fn open_repository(dir: Option<&Path>) -> Result<Repository> {
    init_libgit2();
    match dir {
        Some(d) => Repository::open(d).map_err(|e| {
            log::debug!("opening {}: {e}", d.display());
            if !d.exists() {
                anyhow::anyhow!(
                    "{}: no such directory (create a server repository with `git init --bare {}`)",
                    d.display(),
                    d.display()
                )
            } else if e.code() == git2::ErrorCode::NotFound {
                anyhow::anyhow!("{}: not a git repository", d.display())
            } else {
                anyhow::anyhow!(
                    "{}: cannot open the repository: {}",
                    d.display(),
                    e.message()
                )
            }
        }),
        None => Repository::open_from_env().map_err(|e| {
            log::debug!("opening the repository from the environment: {e}");
            match std::env::var_os("GIT_DIR") {
                Some(d) => {
                    anyhow::anyhow!("GIT_DIR={}: not a git repository", Path::new(&d).display())
                }
                None => anyhow::anyhow!(
                    "not inside a git repository (use --repo DIR, or run it in a repository)"
                ),
            }
        }),
    }
}

/// Deploy locks held; dropping it releases them.
pub struct EnvLocks {
    _files: Vec<File>,
}

/// Writes who holds a lock into its file (`pid host start-time command`), for whoever waits.
/// Only a message depends on it: a failure to write is logged, not fatal.
fn record_holder(file: &mut File, path: &Path) {
    use std::io::{Seek, Write};
    // The subcommand and its first argument, without global options (`--repo DIR`, `-v`).
    let mut command = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--repo" {
            args.next();
        } else if !a.starts_with('-') && command.len() < 2 {
            command.push(a);
        }
    }
    let line = format!(
        "{} {} {} {}\n",
        std::process::id(),
        crate::record::payload::hostname(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        command.join(" ")
    );
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(line.as_bytes()));
    if let Err(e) = written {
        log::info!("{}: recording the holder: {e}", path.display());
    }
}

/// `pid 123 on host since 2026-01-02T03:04:05Z (post-receive)` from a lock file's line.
fn holder_text(line: &str) -> String {
    let mut parts = line.splitn(4, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(pid), Some(host), Some(since)) if !pid.is_empty() => {
            let command = parts.next().unwrap_or("").trim();
            format!(
                "pid {pid} on {host} since {since}{}",
                if command.is_empty() {
                    String::new()
                } else {
                    format!(", hookops {command}")
                }
            )
        }
        _ => "its holder is not recorded".to_string(),
    }
}

/// Opens (creating it and its directory) the file `dir/name` that a lock is taken on; the file
/// and its path, for messages.
pub fn lock_file(dir: &Path, name: &str) -> Result<(File, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok((file, path))
}

/// Largest tree libgit2 keeps in its object cache (a directory of about 25,000 entries).
const TREE_CACHE_LIMIT: usize = 1 << 20;

/// Sets libgit2's global options once per process, before its first use. (libgit2 is built
/// without network transports, so initialising it loads no TLS library; see remote.rs.)
fn init_libgit2() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // The first git2 call initialises libgit2. libgit2 caches trees only up to 4 KiB, so a
        // directory of a few hundred files was read, inflated and hashed again on every path
        // lookup through it (discovery walks up through the same directories many times). Big
        // trees are few; cache them.
        // SAFETY: single-threaded start-up, before any other libgit2 use in this process.
        if let Err(e) =
            unsafe { git2::opts::set_cache_object_limit(git2::ObjectType::Tree, TREE_CACHE_LIMIT) }
        {
            log::debug!("cannot raise libgit2's tree cache limit: {e}");
        }
        // libgit2 also re-hashes (SHA-1 with collision detection) every object it reads, which
        // git itself never does on reads: objects were hashed when they were received, and
        // zlib's own checksum still catches damage to what is stored. It was a third of the
        // cost of reading a large directory.
        git2::opts::strict_hash_verification(false);
    });
}
