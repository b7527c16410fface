//! The secrets stage: after the plan and before anything is applied, the Vault values the
//! deploying targets name are read once (`backends::vault`), masked everywhere from then on, and
//! turned into Terraform environment variables and generated Kubernetes Secrets.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::backends::mask::Masker;
use crate::backends::repo::Session;
use crate::backends::vault;
use crate::pipeline::manifest::Object;
use crate::pipeline::plan::{self, Plan, Step, TargetPlan};

/// Vault values fetched once per deploy: Terraform environment variables and generated
/// Kubernetes Secrets, by target name.
#[derive(Default)]
pub struct Secrets {
    pub env: BTreeMap<String, Vec<(String, String)>>,
    pub objects: BTreeMap<String, Vec<Object>>,
}

/// Reads every secret the plan's deploying targets name, once, and adds each value to
/// `masker` before anything can print it.
pub fn fetch(session: &Session, masker: &mut Masker, plan: &Plan) -> Result<Secrets> {
    let mut secrets = Secrets::default();
    let wanted: Vec<&TargetPlan> = plan
        .targets
        .iter()
        .filter(|t| t.step == Step::Deploy && t.refused.is_none())
        .filter(|t| !t.target.secrets.is_empty() || !t.target.secret.is_empty())
        .collect();
    if wanted.is_empty() {
        return Ok(secrets);
    }
    let config = session
        .config
        .vault
        .as_ref()
        .context("targets use Vault secrets but the server config has no [vault] section")?;
    let mut client = vault::Client::login(config)?;
    for tp in wanted {
        let t = &tp.target;
        for (var, reference) in &t.secrets {
            let r = vault::SecretRef::parse(reference)?;
            let value = client
                .read(&r)
                .with_context(|| format!("target {}", t.name))?;
            masker.add(value.expose());
            secrets
                .env
                .entry(t.name.clone())
                .or_default()
                .push((var.clone(), value.expose().to_string()));
        }
        for s in &t.secret {
            let mut data = serde_json::Map::new();
            for (key, reference) in &s.data {
                let r = vault::SecretRef::parse(reference)?;
                let value = client
                    .read(&r)
                    .with_context(|| format!("target {}", t.name))?;
                masker.add(value.expose());
                data.insert(
                    key.clone(),
                    serde_json::Value::String(value.expose().to_string()),
                );
            }
            let id = plan::secret_id(t, s);
            let mut metadata = serde_json::json!({
                "name": s.name,
                "labels": {"app.kubernetes.io/managed-by": "hookops"},
            });
            if let Some(ns) = &id.namespace {
                metadata["namespace"] = serde_json::Value::String(ns.clone());
            }
            let body = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": metadata,
                "type": s.secret_type.clone().unwrap_or_else(|| "Opaque".into()),
                "stringData": data,
            });
            secrets
                .objects
                .entry(t.name.clone())
                .or_default()
                .push(Object {
                    id,
                    api_version: "v1".into(),
                    body,
                    source: format!("vault secret {}", s.name),
                    cluster: false,
                });
        }
    }
    Ok(secrets)
}

/// The objects a Kubernetes target applies: its manifests' and, when deploying, the Secrets
/// generated from Vault for it.
pub fn kube_objects<'a>(tp: &'a TargetPlan, secrets: &'a Secrets) -> Vec<&'a Object> {
    let generated = match tp.step {
        Step::Deploy => secrets.objects.get(&tp.target.name),
        Step::Remove => None,
    };
    tp.apply
        .iter()
        .chain(generated.into_iter().flatten())
        .collect()
}
