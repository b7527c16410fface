//! Git push options (`git push -o hookops.…`): the pusher's only per-push controls. git hands
//! them to the pre-receive and post-receive hooks as `GIT_PUSH_OPTION_COUNT` and
//! `GIT_PUSH_OPTION_<n>` (git-receive-pack(1)), and only when the server advertises them
//! (`receive.advertisePushOptions`, set by `hookops install --pre-receive`). Children never
//! see `GIT_*` (backends/process.rs), so hookops reads them here, in its own process.
//!
//! A signed push (`git push --signed`) also hands the hooks its certificate (`GIT_PUSH_CERT`,
//! a blob, and `GIT_PUSH_CERT_NONCE_STATUS`, git's replay check); `signer` checks its
//! signature against an environment's allowed signers, which is what makes
//! `hookops.allow-prune` count.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::backends::repo::Session;
use crate::config::Environment;
use crate::record::allowed_signers::{self, AllowedSigners};

/// The longest `hookops.message` kept, in characters; a longer one is cut and says so.
pub const MESSAGE_MAX: usize = 200;

/// The options hookops understands, parsed and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushOptions {
    /// `hookops.dry-run`: show what the push would change, then refuse it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
    /// `hookops.target=NAME[,NAME…]` (repeatable): deploy only these targets now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// `hookops.no-wait`: deploy without waiting for health.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_wait: bool,
    /// `hookops.message=…`: carried into the record, cleaned and capped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `hookops.allow-prune`: overrides the environment's diff policies, on a signed push by
    /// an allowed signer only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_prune: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a deploy keeps of its push beyond the ref updates, through an async queue entry too:
/// the options, and per environment the signer whose `hookops.allow-prune` counted (checked in
/// the hook, where git's `GIT_PUSH_CERT*` are; a queued worker no longer has them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushContext {
    #[serde(default, skip_serializing_if = "PushOptions::is_empty")]
    pub options: PushOptions,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allowed_by: BTreeMap<String, String>,
}

/// Every option `hookops.` names, for the error about an unknown one.
const KNOWN: &str = "hookops.dry-run, hookops.target=NAME, hookops.no-wait, hookops.message=TEXT, \
                     hookops.allow-prune";

impl PushOptions {
    /// Parses the push's options. Options outside `hookops.` belong to others (GitLab's
    /// `ci.skip`, a chained hook's own) and are left alone; a `hookops.` option that is unknown
    /// or malformed is an error, one line each.
    pub fn parse(raw: &[String]) -> (PushOptions, Vec<String>) {
        let mut o = PushOptions::default();
        let mut errors = Vec::new();
        for opt in raw {
            let Some(rest) = opt.strip_prefix("hookops.") else {
                continue;
            };
            let (key, value) = match rest.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (rest, None),
            };
            let shown = crate::out::clean_line(opt);
            let flag = |set: &mut bool, errors: &mut Vec<String>| match value {
                None => *set = true,
                Some(_) => {
                    errors.push(format!("push option {shown}: hookops.{key} takes no value"))
                }
            };
            match key {
                "dry-run" => flag(&mut o.dry_run, &mut errors),
                "no-wait" => flag(&mut o.no_wait, &mut errors),
                "allow-prune" => flag(&mut o.allow_prune, &mut errors),
                "target" => {
                    let names: Vec<&str> = value
                        .unwrap_or("")
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .collect();
                    if names.is_empty() {
                        errors.push(format!(
                            "push option {shown}: name a target (hookops.target=NAME)"
                        ));
                    }
                    for n in names {
                        if !o.targets.iter().any(|t| t == n) {
                            o.targets.push(n.to_string());
                        }
                    }
                }
                "message" => match value.map(str::trim).filter(|v| !v.is_empty()) {
                    Some(text) => o.message = Some(message(text)),
                    None => errors.push(format!(
                        "push option {shown}: give a text (hookops.message=TEXT)"
                    )),
                },
                _ => errors.push(format!(
                    "unknown push option {shown} (hookops knows {KNOWN})"
                )),
            }
        }
        (o, errors)
    }

    /// The options of the push being received, as git passes them to its hooks.
    pub fn from_env() -> (PushOptions, Vec<String>) {
        PushOptions::parse(&raw_from_env())
    }

    pub fn is_empty(&self) -> bool {
        *self == PushOptions::default()
    }

    /// The options as the pusher typed them, for lines that echo them.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.dry_run {
            parts.push("hookops.dry-run".to_string());
        }
        for t in &self.targets {
            parts.push(format!("hookops.target={}", crate::out::clean_line(t)));
        }
        if self.no_wait {
            parts.push("hookops.no-wait".to_string());
        }
        if self.message.is_some() {
            parts.push("hookops.message".to_string());
        }
        if self.allow_prune {
            parts.push("hookops.allow-prune".to_string());
        }
        parts.join(" ")
    }
}

/// `GIT_PUSH_OPTION_0 … GIT_PUSH_OPTION_<COUNT-1>`; none when git passed no count.
fn raw_from_env() -> Vec<String> {
    let count: usize = std::env::var("GIT_PUSH_OPTION_COUNT")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0);
    (0..count)
        .filter_map(|i| std::env::var(format!("GIT_PUSH_OPTION_{i}")).ok())
        .collect()
}

/// The pusher's message as the record keeps it: one line, control characters escaped, at
/// most `MESSAGE_MAX` characters.
fn message(text: &str) -> String {
    let clean = crate::out::clean_line(text);
    if clean.chars().count() <= MESSAGE_MAX {
        return clean.into_owned();
    }
    let mut cut: String = clean.chars().take(MESSAGE_MAX).collect();
    cut.push_str("… (cut)");
    cut
}

/// Who signed the push, as far as `env` is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    /// A good signature by this principal of the environment's push signers, with a nonce git
    /// accepted.
    By(String),
    /// Not signed, or signed in a way that does not count; the reason, for the refusal.
    No(String),
}

/// The allowed signers file for signed pushes to `env`: its `push_signers`, else the gate's
/// `allowed_signers`, else git's `gpg.ssh.allowedSignersFile`.
pub fn push_signers_file(session: &Session, env: &Environment) -> Option<PathBuf> {
    env.push_signers
        .clone()
        .or_else(|| session.config.gate.allowed_signers.clone())
        .or_else(|| {
            session
                .repo
                .config()
                .ok()?
                .get_path("gpg.ssh.allowedSignersFile")
                .ok()
        })
}

/// Checks the certificate of the push being received (`GIT_PUSH_CERT*`) against `env`'s push
/// signers: an SSH signature (namespace `git`, as `git push --signed` makes with
/// `gpg.format=ssh`) over the certificate, by a key allowed for that namespace, and a nonce
/// git found good (`OK`, or `SLOP` where `receive.certNonceSlop` allows it), so an old
/// certificate cannot be replayed.
pub fn signer(session: &Session, env: &Environment) -> Result<Signed> {
    let Ok(cert) = std::env::var("GIT_PUSH_CERT") else {
        return Ok(Signed::No(
            "the push is not signed (push with git push --signed)".into(),
        ));
    };
    let nonce = std::env::var("GIT_PUSH_CERT_NONCE_STATUS").unwrap_or_default();
    if nonce != "OK" && nonce != "SLOP" {
        return Ok(Signed::No(format!(
            "the push certificate's nonce is not good (GIT_PUSH_CERT_NONCE_STATUS={}); \
             `hookops install --pre-receive` sets receive.certNonceSeed",
            crate::out::clean_line(&nonce)
        )));
    }
    let Some(file) = push_signers_file(session, env) else {
        return Ok(Signed::No(format!(
            "no push signers are configured for environment {} (push_signers)",
            env.name
        )));
    };
    let signers = AllowedSigners::load(&file)?;
    let id = git2::Oid::from_str(cert.trim()).context("GIT_PUSH_CERT")?;
    let blob = session
        .repo
        .find_blob(id)
        .with_context(|| format!("reading the push certificate {id}"))?;
    let text = String::from_utf8_lossy(blob.content()).into_owned();
    Ok(match certificate_signer(&text, &signers) {
        Ok(principal) => Signed::By(principal),
        Err(why) => Signed::No(format!("{why} ({})", file.display())),
    })
}

/// The principal whose key signed a push certificate's text (everything before its armored
/// signature), or why none counts.
fn certificate_signer(text: &str, signers: &AllowedSigners) -> std::result::Result<String, String> {
    let Some(at) = text.find("-----BEGIN SSH SIGNATURE-----") else {
        return Err(if text.contains("-----BEGIN PGP SIGNATURE-----") {
            "the push is signed with GPG; hookops checks SSH-signed pushes \
             (gpg.format=ssh on the pushing side)"
                .into()
        } else {
            "the push certificate carries no signature".into()
        });
    };
    let (payload, armored) = text.split_at(at);
    allowed_signers::signer_of(payload.as_bytes(), armored, "git", signers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(opts: &[&str]) -> (PushOptions, Vec<String>) {
        PushOptions::parse(&opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn every_option_is_read_and_others_are_left_alone() {
        let (o, errors) = parse(&[
            "ci.skip",
            "hookops.dry-run",
            "hookops.target=web",
            "hookops.target=api, web",
            "hookops.no-wait",
            "hookops.message=rotate the cache",
            "hookops.allow-prune",
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            o,
            PushOptions {
                dry_run: true,
                targets: vec!["web".into(), "api".into()],
                no_wait: true,
                message: Some("rotate the cache".into()),
                allow_prune: true,
            }
        );
        assert_eq!(parse(&["other.thing=1"]).0, PushOptions::default());
    }

    #[test]
    fn unknown_and_malformed_options_are_errors_naming_them() {
        let (_, errors) = parse(&[
            "hookops.dryrun",
            "hookops.dry-run=yes",
            "hookops.target=",
            "hookops.message=  ",
            "hookops.x\u{1b}[2J",
        ]);
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].starts_with("unknown push option hookops.dryrun (hookops knows"));
        assert!(errors[1].contains("hookops.dry-run takes no value"));
        assert!(errors[2].contains("name a target"));
        assert!(errors[3].contains("give a text"));
        assert!(errors[4].contains("\\u{1b}[2J"), "{}", errors[4]);
    }

    #[test]
    fn the_message_is_one_clean_line_and_capped() {
        let (o, _) = parse(&["hookops.message=a\tb\u{1b}[31mc"]);
        assert_eq!(o.message.as_deref(), Some("a\\tb\\u{1b}[31mc"));
        let long = format!("hookops.message={}", "é".repeat(500));
        let (o, _) = parse(&[&long]);
        let m = o.message.unwrap();
        assert!(m.ends_with("… (cut)"), "{m}");
        assert_eq!(m.chars().count(), MESSAGE_MAX + "… (cut)".chars().count());
    }

    #[test]
    fn options_survive_a_queue_entry() {
        let (o, _) = parse(&["hookops.target=web", "hookops.no-wait", "hookops.message=m"]);
        let text = serde_json::to_string(&o).unwrap();
        assert_eq!(text, r#"{"targets":["web"],"no_wait":true,"message":"m"}"#);
        let back: PushOptions = serde_json::from_str(&text).unwrap();
        assert_eq!(back, o);
        let none: PushOptions = serde_json::from_str("{}").unwrap();
        assert!(none.is_empty());
    }
}
