//! The environment every command of the tests and benchmarks runs in: the user's own git,
//! Terraform and kubectl configuration shut out. Shared by tests/it (through `World`) and
//! benches/pipeline.rs (which includes this file with `#[path]`).

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// `program` with a cleared environment: `PATH`, `HOME` (whose `.gitconfig` is git's only
/// config), no system git config, no Terraform CLI config or checkpoint calls, kubectl's cache
/// in `kubecache`, and UTC.
pub fn command(program: impl AsRef<OsStr>, home: &Path, kubecache: &Path) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", home.join(".gitconfig"))
        .env("TF_CLI_CONFIG_FILE", "/dev/null")
        .env("CHECKPOINT_DISABLE", "1")
        .env("KUBECACHEDIR", kubecache)
        .env("TZ", "UTC");
    c
}
