//! The one HTTP client configuration: every request hookops makes (Vault, the alert webhook)
//! goes through an agent built here, with a whole-request timeout, no redirects (a redirect
//! would carry a custom credential header such as `X-Vault-Token` wherever the server points),
//! HTTP error statuses returned as answers rather than errors, and optionally a private CA.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// An agent with a whole-request `timeout`, trusting the PEM bundle `ca_cert` instead of the
/// public web PKI roots when given; `what` names the setting in errors (`vault config`).
pub fn agent(timeout: Duration, ca_cert: Option<&Path>, what: &str) -> Result<ureq::Agent> {
    let mut builder = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .user_agent(concat!("hookops/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = ca_cert {
        let pem = std::fs::read(ca)
            .with_context(|| format!("{what}: cannot read ca_cert {}", ca.display()))?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => bail!("{what}: ca_cert {}: {e}", ca.display()),
            }
        }
        if certs.is_empty() {
            bail!("{what}: ca_cert {} holds no PEM certificate", ca.display());
        }
        builder = builder.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        );
    }
    Ok(builder.build().new_agent())
}
