//! Helm, for chart targets (docs/helm.md): `helm template` of a materialised chart in the
//! renderer sandbox (no network, nothing of the server visible: a chart's `lookup` finds
//! nothing, `.Files` reads only the chart), and `helm pull` of a pinned remote chart into the
//! chart cache, by digest. A pull is the one Helm call with the network; it runs with a clean
//! Helm environment of its own (no repositories, registry logins or plugins of the hookops user),
//! and what it fetched is only ever rendered in the sandbox.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backends::mask::Masker;
use crate::backends::process::{Command, Output};
use crate::backends::sandbox::{Render, Sandbox};

#[derive(Clone)]
pub struct Helm {
    /// `[tools] helm`.
    pub program: String,
    pub sandbox: Sandbox,
    pub masker: Masker,
}

/// One `helm template`.
pub struct Template<'a> {
    pub release: &'a str,
    /// The chart: a directory or a packaged `.tgz`, under `root`.
    pub chart: &'a Path,
    /// What the sandbox shows (read-only): the materialised closure of the target.
    pub root: &'a Path,
    pub namespace: &'a str,
    /// `.Capabilities` as the cluster answers; None: Helm's built-in defaults.
    pub capabilities: Option<&'a Capabilities>,
    /// `-f` files under `root`, in order (later ones win).
    pub values: Vec<PathBuf>,
    /// `--set-json NAME=JSON`, after every values file.
    pub set: Vec<(String, String)>,
}

/// What `.Capabilities` says about the cluster: its version and the API versions it serves
/// (`group/version`, and `group/version/Kind` for the kinds of its preferred versions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub kube_version: String,
    pub api_versions: Vec<String>,
    /// When the cluster was asked (RFC 3339).
    pub learnt_at: String,
}

/// A remote chart in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pulled {
    /// The packaged chart.
    pub path: PathBuf,
    /// `sha256:<hex>` of the package.
    pub digest: String,
}

/// What the cache remembers of a pull: which package a pinned version resolved to.
#[derive(Serialize, Deserialize)]
struct Pin {
    repo: String,
    chart: String,
    version: String,
    digest: String,
}

impl Helm {
    /// `helm template RELEASE CHART --namespace NS --include-crds …` in the sandbox, without
    /// network. The output is masked; Helm's messages name paths under `root`.
    pub fn template(&self, t: &Template) -> Result<Output> {
        let mut args: Vec<OsString> = vec![
            "template".into(),
            t.release.into(),
            t.chart.as_os_str().to_owned(),
            "--namespace".into(),
            t.namespace.into(),
            "--include-crds".into(),
        ];
        if let Some(c) = t.capabilities {
            args.push("--kube-version".into());
            args.push(c.kube_version.clone().into());
            if !c.api_versions.is_empty() {
                args.push("--api-versions".into());
                args.push(c.api_versions.join(",").into());
            }
        }
        for v in &t.values {
            args.push("--values".into());
            args.push(v.as_os_str().to_owned());
        }
        for (name, json) in &t.set {
            args.push("--set-json".into());
            args.push(format!("{name}={json}").into());
        }
        let dir = if t.chart.is_dir() { t.chart } else { t.root };
        let render = Render {
            program: &self.program,
            config_key: "helm",
            args,
            root: t.root,
            dir,
            network: false,
        };
        self.sandbox.run(&render, &self.masker)
    }

    /// `helm version`: its short version line (`v4.3.2+g…`).
    pub fn version(&self) -> Result<String> {
        let out = Command::new(&self.program, "helm")
            .args(["version", "--short"])
            .run(&self.masker)?;
        if !out.success() {
            bail!("{}: {}", self.program, out.reason());
        }
        Ok(crate::backends::process::first_line(&out.stdout).unwrap_or_default())
    }

    /// The package of chart `chart` at exactly `version` from `repo` (an https:// chart
    /// repository or an oci:// registry), pulled once into `cache` and found there by its
    /// pin afterwards. Callers check the names first (config.rs: `check_chart_repo`,
    /// `check_chart_name`, `check_pinned`).
    pub fn fetch(&self, cache: &Path, repo: &str, chart: &str, version: &str) -> Result<Pulled> {
        let pins = cache.join("pins");
        std::fs::create_dir_all(&pins).with_context(|| format!("creating {}", pins.display()))?;
        let key = hex(&Sha256::digest(
            format!("{repo}\0{chart}\0{version}").as_bytes(),
        ));
        let pin_file = pins.join(format!("{key}.json"));
        if let Some(pin) = std::fs::read(&pin_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Pin>(&b).ok())
        {
            let path = package_path(cache, &pin.digest);
            if path.is_file() {
                return Ok(Pulled {
                    path,
                    digest: pin.digest,
                });
            }
        }
        let scratch = tempfile::Builder::new()
            .prefix("pull-")
            .tempdir_in(cache)
            .context("creating a scratch directory for helm pull")?;
        let home = scratch.path().join("home");
        let dest = scratch.path().join("out");
        std::fs::create_dir_all(home.join("plugins"))?;
        std::fs::create_dir_all(&dest)?;
        let reference = if repo.to_ascii_lowercase().starts_with("oci://") {
            vec![format!("{}/{chart}", repo.trim_end_matches('/'))]
        } else {
            vec![chart.to_string(), "--repo".into(), repo.to_string()]
        };
        let mut c = Command::new(&self.program, "helm")
            .arg("pull")
            .args(reference)
            .args(["--version", version, "--destination"])
            .arg(dest.as_os_str());
        // Nothing of the hookops user's Helm: its repositories, registry logins, plugins.
        let h = |p: &str| home.join(p).display().to_string();
        for (var, path) in [
            ("HOME", h("")),
            ("HELM_CACHE_HOME", h("cache")),
            ("HELM_CONFIG_HOME", h("config")),
            ("HELM_DATA_HOME", h("data")),
            ("HELM_PLUGINS", h("plugins")),
            ("HELM_REGISTRY_CONFIG", h("config/registry.json")),
            ("HELM_REPOSITORY_CONFIG", h("config/repositories.yaml")),
            ("HELM_REPOSITORY_CACHE", h("cache/repository")),
        ] {
            c = c.env(var, &path);
        }
        let out = c.dir(scratch.path()).run(&self.masker)?;
        if !out.success() {
            bail!(
                "helm pull {chart} {version} from {repo}: {}",
                crate::out::clean(&out.reason())
            );
        }
        let package = std::fs::read_dir(&dest)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "tgz"))
            .with_context(|| format!("helm pull {chart} {version} from {repo}: no package"))?;
        let bytes =
            std::fs::read(&package).with_context(|| format!("reading {}", package.display()))?;
        let digest = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
        let path = package_path(cache, &digest);
        std::fs::rename(&package, &path).with_context(|| format!("keeping {}", path.display()))?;
        let pin = Pin {
            repo: repo.to_string(),
            chart: chart.to_string(),
            version: version.to_string(),
            digest: digest.clone(),
        };
        let tmp = pins.join(format!("{key}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&pin)?)?;
        std::fs::rename(&tmp, &pin_file)?;
        Ok(Pulled { path, digest })
    }
}

fn package_path(cache: &Path, digest: &str) -> PathBuf {
    cache.join(format!("{}.tgz", digest.replace(':', "-")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether Helm accepts `name` as a release name: a DNS-1123 subdomain of at most 53
/// characters (Helm's own rule, `^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`).
pub fn valid_release(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 53
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names_as_helm_accepts_them() {
        for good in ["web", "my-app", "a.b-c", "x1", &"a".repeat(53)] {
            assert!(valid_release(good), "{good}");
        }
        for bad in [
            "",
            "Web",
            "my_app",
            "-a",
            "a-",
            "a..b",
            ".a",
            &"a".repeat(54),
            "a b",
        ] {
            assert!(!valid_release(bad), "{bad}");
        }
    }

    /// A pin found in the cache is used without running Helm (the program does not exist).
    #[test]
    fn a_cached_pin_is_not_pulled_again() {
        let cache = tempfile::tempdir().unwrap();
        let helm = Helm {
            program: "/nonexistent/helm".into(),
            sandbox: Sandbox::default(),
            masker: Masker::new(),
        };
        let err = helm
            .fetch(cache.path(), "https://charts.example", "web", "1.0.0")
            .unwrap_err();
        assert!(format!("{err:#}").contains("command not found"), "{err:#}");
        let digest = "sha256:ab".to_string();
        std::fs::write(package_path(cache.path(), &digest), b"tgz").unwrap();
        let key = hex(&Sha256::digest(
            "https://charts.example\0web\u{0}1.0.0".as_bytes(),
        ));
        let pin = Pin {
            repo: "https://charts.example".into(),
            chart: "web".into(),
            version: "1.0.0".into(),
            digest: digest.clone(),
        };
        std::fs::write(
            cache.path().join("pins").join(format!("{key}.json")),
            serde_json::to_vec(&pin).unwrap(),
        )
        .unwrap();
        let got = helm
            .fetch(cache.path(), "https://charts.example", "web", "1.0.0")
            .unwrap();
        assert_eq!(got.digest, digest);
        assert!(got.path.is_file());
    }
}
