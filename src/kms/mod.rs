//! Key services (KMS): where key-encryption keys (KEKs) live.
//!
//! Layout: this file holds the [`KeyProvider`] trait, its error and key-info types and
//! [`open`] (choose a provider by URI scheme); [`call`] runs provider calls under a deadline;
//! [`params`] parses URI parameters and secret sources; [`trust`] checks ownership of the
//! files and programs providers read; [`http`] is the HTTPS client of the remote providers.
//! Then one module per provider: [`local`] (the embedded key store), [`pem`], [`exec`],
//! `pkcs11`, `tpm`, `vault` and `awskms` (feature-gated). The RSA-OAEP primitives
//! themselves live in [`crate::crypto::rsa`].
//!
//! A provider holds an RSA KEK and offers two operations to cmkfs: *wrap* a 256-bit volume
//! key (RSA-OAEP-SHA256 with the public key; the private key is never needed for this) and
//! *unwrap* it again (inside the provider: a key store file, an HSM, a TPM, a KMS). Like
//! age's identities and recipients, a provider is chosen by the scheme of its URI and is
//! otherwise opaque to the rest of cmkfs.
//!
//! Errors carry a [`ErrorKind`] because revocation handling depends on it: a *denied* answer
//! (key disabled, deleted, permission removed) makes a mounted volume inaccessible at once,
//! while an *unreachable* one (timeout, connection refused) is tolerated for a grace period.

#[cfg(feature = "aws-kms")]
pub mod awskms;
pub mod call;
pub mod exec;
#[cfg(any(feature = "vault", feature = "aws-kms"))]
pub mod http;
pub mod local;
pub mod params;
pub mod pem;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
#[cfg(feature = "tpm")]
pub mod tpm;
pub mod trust;
#[cfg(feature = "vault")]
pub mod vault;

use crate::crypto::rsa::{self, OaepHash, RsaPublicKey};
use crate::crypto::SecretKey;

/// What kind of failure a provider reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The provider answered and refused: key or version disabled, deleted, not yet active,
    /// permission removed. Definitive until an administrator changes something.
    Denied,
    /// The provider could not be asked: timeout, connection refused, store not present.
    Unreachable,
    /// The URI or the provider's configuration is wrong (unknown scheme, bad parameters).
    Misconfigured,
    /// The provider answered but the ciphertext did not decrypt under this key: the keyslot
    /// was made by another key, or it is corrupted.
    UnwrapFailed,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::Denied => "access denied",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Misconfigured => "misconfigured",
            ErrorKind::UnwrapFailed => "unwrap failed",
        })
    }
}

/// A provider failure naming the provider, the key and the reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider} key {key}: {kind}: {message}")]
pub struct ProviderError {
    /// Classification used by revocation handling.
    pub kind: ErrorKind,
    /// Provider scheme (`local`, `pem`, ...).
    pub provider: String,
    /// Key id (and version where known).
    pub key: String,
    /// Human-readable reason, including what to do where that is known.
    pub message: String,
}

impl ProviderError {
    /// Shorthand constructor.
    pub fn new(kind: ErrorKind, provider: &str, key: impl Into<String>, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            provider: provider.into(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Which key and version a provider used or would use.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// Provider scheme.
    pub provider: String,
    /// The provider's name for the key.
    pub key_id: String,
    /// Key version (providers without versions report "1").
    pub version: String,
    /// RSA modulus size. `None` when the provider unwrapped without letting cmkfs read the
    /// public key (a Vault token or AWS role allowed to decrypt but not to read the key, an
    /// `exec:` program's unwrap); a wrap and [`KeyProvider::current`] always know it.
    pub bits: Option<usize>,
    /// SHA-256 of the public key's DER SubjectPublicKeyInfo, hex. `None` exactly when
    /// `bits` is.
    pub fingerprint: Option<String>,
    /// When this key version expires (RFC 3339), if the provider knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry: Option<String>,
}

impl KeyInfo {
    /// The key `provider` holds under `key_id`/`version`, whose public key is `key`.
    pub fn for_public(provider: &str, key_id: &str, version: &str, key: &RsaPublicKey) -> Self {
        KeyInfo {
            provider: provider.into(),
            key_id: key_id.into(),
            version: version.into(),
            bits: Some(key.bits()),
            fingerprint: Some(rsa::fingerprint(key)),
            expiry: None,
        }
    }

    /// A key version whose public key the provider did not let cmkfs read.
    pub fn without_public(provider: &str, key_id: &str, version: &str) -> Self {
        KeyInfo {
            provider: provider.into(),
            key_id: key_id.into(),
            version: version.into(),
            bits: None,
            fingerprint: None,
            expiry: None,
        }
    }

    /// The modulus size for display: `RSA-3072`, or `unknown`.
    pub fn bits_text(&self) -> String {
        self.bits.map_or_else(|| "unknown".into(), |b| format!("RSA-{b}"))
    }

    /// The fingerprint for display, or `unknown`.
    pub fn fingerprint_text(&self) -> &str {
        self.fingerprint.as_deref().unwrap_or("unknown")
    }

    /// True when the provider reported an expiry in the past. Expired keys keep unwrapping
    /// (no downtime by design), but callers warn and audit.
    pub fn is_expired(&self) -> bool {
        self.expiry
            .as_deref()
            .and_then(|e| humantime::parse_rfc3339_weak(e).ok())
            .is_some_and(|t| t <= std::time::SystemTime::now())
    }
}

/// The result of wrapping a volume key.
pub struct Wrapped {
    /// The key version that wrapped it.
    pub key: KeyInfo,
    /// RSA-OAEP-SHA256 ciphertext.
    pub ciphertext: Vec<u8>,
}

impl Wrapped {
    /// Wraps `secret` here, with the public key `key` describes and the given OAEP hash: how
    /// every provider wraps (the private key is never needed to wrap).
    pub fn locally(key: KeyInfo, public: &RsaPublicKey, hash: OaepHash, secret: &SecretKey) -> Self {
        Wrapped {
            ciphertext: rsa::wrap_with(public, hash, secret),
            key,
        }
    }
}

/// The result of unwrapping.
pub struct Unwrapped {
    /// The volume key. Zeroized on drop.
    pub secret: SecretKey,
    /// The key version that unwrapped it.
    pub key: KeyInfo,
}

/// A KEK held by some provider.
pub trait KeyProvider: Send + Sync {
    /// The URI this provider was opened with.
    fn uri(&self) -> &str;
    /// The key version a new wrap would use (the pinned one, or the newest usable one).
    fn current(&self) -> Result<KeyInfo, ProviderError>;
    /// Wraps `secret` to the current key version.
    fn wrap(&self, secret: &SecretKey) -> Result<Wrapped, ProviderError>;
    /// Unwraps a secret that `version` of this key wrapped. This is the operation a
    /// mount and every revalidation performs, so it must really ask the provider.
    fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<Unwrapped, ProviderError>;
    /// The OAEP hash [`KeyProvider::wrap`] uses, recorded in the keyslot's `algorithm`
    /// field. SHA-256 unless the provider was configured for a SHA-1-only token.
    fn oaep_hash(&self) -> OaepHash {
        OaepHash::Sha256
    }
}

/// Every scheme cmkfs knows, with the cargo feature that builds it (`None`: always built).
pub const SCHEMES: &[(&str, Option<&str>)] = &[
    ("local", None),
    ("pem", None),
    ("exec", None),
    ("pkcs11", Some("pkcs11")),
    ("tpm", Some("tpm")),
    ("vault", Some("vault")),
    ("awskms", Some("aws-kms")),
];

/// Opens the provider for a KEK URI, chosen by scheme.
///
/// Schemes: `local:/STORE/NAME[?version=N]` (the embedded key store),
/// `pem:/path/key.pem` (a bare PEM private key; a plain path to an existing file is taken
/// as `pem:`), `exec:/path/program` (an external command speaking the protocol in
/// [`exec`]), and, where this build has them, `pkcs11:` (RFC 7512), `tpm:`, `vault:` and
/// `awskms:`.
pub fn open(uri: &str) -> Result<Box<dyn KeyProvider>, ProviderError> {
    let (scheme, rest) = match uri.split_once(':') {
        Some((s, r)) if !s.contains('/') => (s, r),
        _ => {
            if std::path::Path::new(uri).is_file() {
                return Ok(Box::new(pem::PemProvider::open(uri)?));
            }
            return Err(ProviderError::new(
                ErrorKind::Misconfigured,
                "uri",
                uri,
                "not a KEK URI: expected SCHEME:... (local:, pem:, exec:, pkcs11:, tpm:, vault:, awskms:) \
                 or the path of a PEM key file",
            ));
        }
    };
    match scheme {
        local::SCHEME => Ok(Box::new(local::LocalProvider::open(uri, rest)?)),
        pem::SCHEME => Ok(Box::new(pem::PemProvider::open(rest)?)),
        exec::SCHEME => Ok(Box::new(exec::ExecProvider::open(uri, rest)?)),
        #[cfg(feature = "pkcs11")]
        pkcs11::SCHEME => Ok(Box::new(pkcs11::Pkcs11Provider::open(uri, rest)?)),
        #[cfg(feature = "tpm")]
        tpm::SCHEME => Ok(Box::new(tpm::TpmProvider::open(uri, rest)?)),
        #[cfg(feature = "vault")]
        vault::SCHEME => Ok(Box::new(vault::VaultProvider::open(uri, rest)?)),
        #[cfg(feature = "aws-kms")]
        awskms::SCHEME => Ok(Box::new(awskms::AwsKmsProvider::open(uri, rest)?)),
        other => {
            let msg = match SCHEMES.iter().find(|(s, _)| *s == other) {
                Some((_, Some(feature))) => format!(
                    "this cmkfs was built without the '{other}:' provider; rebuild with `cargo build --features {feature}`"
                ),
                _ => format!(
                    "unknown key provider scheme '{other}:' (known: {})",
                    SCHEMES.iter().map(|(s, _)| format!("{s}:")).collect::<Vec<_>>().join(", ")
                ),
            };
            Err(ProviderError::new(ErrorKind::Misconfigured, other, uri, msg))
        }
    }
}
