//! Build script: stamps the binary with the commit it was built from (`HOOKOPS_GIT_COMMIT`, shown
//! by `hookops --version`) and generates the man pages and shell completions from the clap
//! definitions in `src/cli.rs`, so they can never drift from the real command line.
//!
//! Outputs go to `$OUT_DIR/{man,completions}` and are copied to `<profile dir>/assets/` (e.g.
//! `target/release/assets/`, beside the binary they describe), which is where the Debian package
//! (`[package.metadata.deb]` in Cargo.toml) picks them up. That directory is derived from
//! `OUT_DIR` (`<profile dir>/build/<pkg>-<hash>/out`), the one layout cargo guarantees for the
//! build script; cargo-deb rewrites `target/release/` asset paths to the profile and target
//! triple actually built, so the package always ships the pages of the binary it ships.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use clap_complete::Shell;

/// The real command line, compiled a second time for the build script. A `#[path]` module
/// rather than `include!`: the file opens with inner doc comments, which `include!` rejects.
#[allow(dead_code)]
#[path = "src/cli.rs"]
mod cli;

/// The man pages' EXIT STATUS, FILES, ENVIRONMENT and EXAMPLES sections.
#[path = "man/sections.rs"]
mod manual;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-changed=man/sections.rs");
    println!("cargo:rerun-if-env-changed=HOOKOPS_GIT_COMMIT");

    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let commit = commit_stamp(&manifest_dir);
    println!("cargo:rustc-env=HOOKOPS_GIT_COMMIT={commit}");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if let Err(e) = generate(&out_dir) {
        panic!("generating man pages and completions: {e}");
    }
}

/// The short commit hash of the checkout being built, or "unknown" outside a git checkout (a
/// source tarball, the crates.io package). A packager building from a tarball can set
/// `HOOKOPS_GIT_COMMIT` themselves; it wins.
fn commit_stamp(manifest_dir: &Path) -> String {
    if let Some(given) = env::var("HOOKOPS_GIT_COMMIT")
        .ok()
        .filter(|s| !s.trim().is_empty())
    {
        return given.trim().to_string();
    }
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(manifest_dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    // Only this crate's own checkout counts: a crate unpacked inside some other repository
    // (a vendor directory, a distribution's packaging tree) must not claim that repository's
    // commit.
    let toplevel = git(&["rev-parse", "--show-toplevel"]).map(PathBuf::from);
    let ours = match (
        toplevel.and_then(|t| t.canonicalize().ok()),
        manifest_dir.canonicalize().ok(),
    ) {
        (Some(top), Some(dir)) => top == dir,
        _ => false,
    };
    if !ours {
        return "unknown".to_string();
    }
    watch_git_state(&git);
    git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
}

/// Reruns the build script when HEAD moves: a checkout changes `HEAD`, a commit changes the
/// branch's ref file (or `packed-refs` after `git pack-refs`). A ref that is only packed has no
/// file yet; its directory is watched instead, because the first commit creates the file there
/// and cargo would otherwise rerun the script on every build for a path that does not exist.
fn watch_git_state(git: &dyn Fn(&[&str]) -> Option<String>) {
    let path_of = |name: &str| {
        git(&["rev-parse", "--path-format=absolute", "--git-path", name]).map(PathBuf::from)
    };
    let mut watch = Vec::new();
    watch.extend(path_of("HEAD"));
    watch.extend(path_of("packed-refs"));
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(file) = path_of(&reference) {
            if file.exists() {
                watch.push(file);
            } else if let Some(parent) = file.parent() {
                watch.push(parent.to_path_buf());
            }
        }
    }
    for path in watch.into_iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn generate(out_dir: &Path) -> std::io::Result<()> {
    let man_dir = out_dir.join("man");
    let completions_dir = out_dir.join("completions");
    fs::create_dir_all(&man_dir)?;
    fs::create_dir_all(&completions_dir)?;

    // One page for `hookops` and one per visible subcommand (`hookops-install.1`, …), the
    // layout `man hookops-install` and git-style `hookops help install` readers expect.
    let mut top = cli::Cli::command().disable_help_subcommand(true);
    top.build();
    man_pages(&top, &man_dir)?;

    let mut cmd = cli::Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "hookops", &completions_dir)?;
    }

    if let Some(assets) = assets_dir(out_dir) {
        copy_tree(&man_dir, &assets.join("man"))?;
        copy_tree(&completions_dir, &assets.join("completions"))?;
        gzip_man_pages(&assets.join("man"));
    } else {
        println!(
            "cargo:warning=OUT_DIR {} is not <profile>/build/<pkg>/out; man pages and completions stay there only",
            out_dir.display()
        );
    }
    Ok(())
}

/// Writes the page of `cmd` and of each visible subcommand: clap_mangen's sections from the
/// command line, then what `--help` cannot say (`manual::sections`), before VERSION.
fn man_pages(cmd: &clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir)?;
    }
    let page = clap_mangen::Man::new(cmd.clone());
    let mut roff = Vec::new();
    page.render(&mut roff)?;
    let mut text = String::from_utf8_lossy(&roff).into_owned();
    let extra = manual::sections(cmd.get_name());
    match text.find("\n.SH VERSION") {
        Some(at) => text.insert_str(at + 1, &extra),
        None => text.push_str(&extra),
    }
    fs::write(dir.join(page.get_filename()), text)
}

/// `<profile dir>/assets` for `OUT_DIR` = `<profile dir>/build/<pkg>-<hash>/out`.
fn assets_dir(out_dir: &Path) -> Option<PathBuf> {
    let build = out_dir.parent()?.parent()?;
    (build.file_name()? == "build").then(|| build.parent().map(|p| p.join("assets")))?
}

/// Debian installs man pages gzipped, and cargo-deb compresses only files from outside the
/// target directory, so the `.gz` twins are made here, with the system's `gzip -n` (no name or
/// timestamp inside: the same pages give the same bytes). gzip is on every system that builds
/// Debian packages; elsewhere this warns and the plain pages remain for other packagers.
fn gzip_man_pages(dir: &Path) {
    let pages = match fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()),
        Err(e) => {
            println!("cargo:warning=reading {}: {e}", dir.display());
            return;
        }
    };
    for page in pages.filter(|p| p.extension().is_some_and(|x| x == "1")) {
        let gz = page.with_extension("1.gz");
        let done = fs::File::create(&gz).and_then(|out| {
            Command::new("gzip")
                .args(["-n", "-9", "-c"])
                .arg(&page)
                .stdout(out)
                .status()
        });
        let failure = match done {
            Ok(status) if status.success() => continue,
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        };
        // No half-written page: packaging then fails loudly on the missing file instead.
        let _ = fs::remove_file(&gz);
        println!("cargo:warning=gzip {}: {failure}", page.display());
    }
}

/// Replaces `to` with the files of `from`, so a subcommand that was removed loses its page.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if to.exists() {
        fs::remove_dir_all(to)?;
    }
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}
