//! Signing records: an OpenSSH private key makes an SSHSIG signature over the payload, in
//! namespace `hookops`, that stock `ssh-keygen -Y verify` accepts.

use std::fmt;
use std::path::Path;

use anyhow::{bail, Context};
use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// SSHSIG namespace: a signature made for another purpose (git commits use "git", files "file")
/// can never be replayed as a hookops record, and vice versa.
pub const NAMESPACE: &str = "hookops";

/// An OpenSSH private key (ed25519, ecdsa p256/p384/p521, rsa) that signs records.
///
/// `Debug` shows only the fingerprint so the key can never end up in a log by accident.
pub struct Signer {
    pub(crate) key: PrivateKey,
    /// RSA keys are signed with the `rsa` crate directly: ssh-key 0.6.7's own RSA signing
    /// rebuilds the key from the wrong primes (p twice) and always fails.
    rsa: Option<rsa::RsaPrivateKey>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").field("id", &self.id()).finish()
    }
}

impl Signer {
    /// Reads an unencrypted OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    /// Errors name the path and never contain key material.
    pub fn load(path: &Path) -> anyhow::Result<Signer> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading signing key {shown}"))?;
        let trimmed = text.trim_start();
        // Common mistakes get a message that says what to do instead of a decoder error.
        if trimmed.starts_with("ssh-")
            || trimmed.starts_with("ecdsa-")
            || trimmed.starts_with("sk-")
        {
            bail!("{shown}: this is a public key; hookops needs the private key file");
        }
        if trimmed.contains("Proc-Type: 4,ENCRYPTED") || trimmed.contains("BEGIN ENCRYPTED PRIVATE")
        {
            bail!("{shown}: key is passphrase-protected; hookops signs unattended, give it an unencrypted key");
        }
        if !trimmed.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
            bail!(
                "{shown}: not an OpenSSH private key (expected -----BEGIN OPENSSH PRIVATE KEY-----; \
                 `ssh-keygen -p -f FILE` rewrites older PEM keys in that format)"
            );
        }
        // ssh_key's errors are enum messages, never the decoded bytes.
        let key = PrivateKey::from_openssh(trimmed)
            .map_err(|e| anyhow::anyhow!("{shown}: cannot decode OpenSSH private key: {e}"))?;
        drop(text);
        Signer::from_key(key).with_context(|| format!("signing key {shown}"))
    }

    /// Wraps an already decoded key (tests, or keys that come from somewhere other than a file).
    pub fn from_key(key: PrivateKey) -> anyhow::Result<Signer> {
        if key.is_encrypted() {
            bail!(
                "key is passphrase-protected; hookops signs unattended, give it an unencrypted key"
            );
        }
        let rsa = match key.key_data() {
            KeypairData::Ed25519(_) | KeypairData::Ecdsa(_) => None,
            KeypairData::Rsa(pair) => Some(rsa_key(pair)?),
            _ => bail!(
                "unsupported key type {} (use ed25519, ecdsa or rsa)",
                key.algorithm()
            ),
        };
        let signer = Signer { key, rsa };
        // Sign once now so a key that cannot sign fails at load time, not after a deploy.
        signer.sign("{}").context("test signature failed")?;
        Ok(signer)
    }

    /// The public key fingerprint as ssh-keygen prints it, e.g. `SHA256:…` (the record's
    /// `signer` field).
    pub fn id(&self) -> String {
        self.key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    /// The public half, e.g. to print an allowed_signers line.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// Signs `payload` (one line, signed without a newline) as SSHSIG, namespace `hookops`,
    /// sha512, and returns the armored block without a trailing newline.
    pub fn sign(&self, payload: &str) -> anyhow::Result<String> {
        if payload.contains(['\n', '\r']) {
            bail!("record payload must be a single line");
        }
        let sig = match &self.rsa {
            Some(rsa) => sign_rsa(rsa, self.key.public_key().key_data(), payload.as_bytes()),
            None => self
                .key
                .sign(NAMESPACE, HashAlg::Sha512, payload.as_bytes())
                .map_err(anyhow::Error::from),
        }
        .context("signing record")?;
        let pem = sig
            .to_pem(LineEnding::LF)
            .context("armoring record signature")?;
        Ok(pem.trim_end().to_string())
    }
}

/// The `rsa` crate's key from the OpenSSH key's components (n, e, d, p, q); `from_components`
/// validates them, so a corrupt key file fails here.
fn rsa_key(pair: &RsaKeypair) -> anyhow::Result<rsa::RsaPrivateKey> {
    let big = |m: &ssh_key::Mpint| {
        m.as_positive_bytes()
            .map(rsa::BigUint::from_bytes_be)
            .context("RSA key component is not a positive integer")
    };
    let key = rsa::RsaPrivateKey::from_components(
        big(&pair.public.n)?,
        big(&pair.public.e)?,
        big(&pair.private.d)?,
        vec![big(&pair.private.p)?, big(&pair.private.q)?],
    )
    .map_err(|e| anyhow::anyhow!("invalid RSA key: {e}"))?;
    // ssh-keygen refuses to verify with keys below 1024 bits; OpenSSH's own floor for new
    // keys is 2048 bits, so hold signers to that.
    if rsa::traits::PublicKeyParts::size(&key) * 8 < 2048 {
        bail!("RSA key is shorter than 2048 bits");
    }
    Ok(key)
}

/// SSHSIG with RSA, sha512 (`rsa-sha2-512`), as ssh-keygen makes it.
fn sign_rsa(key: &rsa::RsaPrivateKey, public: &KeyData, msg: &[u8]) -> anyhow::Result<SshSig> {
    use rsa::sha2::{Digest, Sha512};
    let signed_data = SshSig::signed_data(NAMESPACE, HashAlg::Sha512, msg)?;
    let digest = Sha512::digest(&signed_data);
    let raw = key
        .sign(rsa::Pkcs1v15Sign::new::<Sha512>(), &digest)
        .map_err(|e| anyhow::anyhow!("RSA signing failed: {e}"))?;
    let signature = ssh_key::Signature::new(
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        raw,
    )?;
    Ok(SshSig::new(
        public.clone(),
        NAMESPACE,
        HashAlg::Sha512,
        signature,
    )?)
}
