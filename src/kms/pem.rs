//! `pem:` — a bare RSA private key in a PEM file, for users who already have one.
//!
//! The file has no versions (reported as version "1"); removing or making it unreadable
//! counts as *denied*. It must be owned by root or by the user cmkfs runs as and not be
//! writable by group or others (else *misconfigured*: another user could substitute a key);
//! readable by group or others only earns a warning.

use std::path::PathBuf;

use super::{trust, ErrorKind, KeyInfo, KeyProvider, ProviderError, Unwrapped, Wrapped};
use crate::crypto::rsa::{self, OaepHash};
use crate::crypto::SecretKey;

/// URI scheme.
pub const SCHEME: &str = "pem";

/// A PEM key file.
pub struct PemProvider {
    uri: String,
    path: PathBuf,
}

impl PemProvider {
    /// `path` is the file (relative paths are made absolute).
    pub fn open(path: &str) -> Result<Self, ProviderError> {
        let p = std::path::absolute(path)
            .map_err(|e| ProviderError::new(ErrorKind::Misconfigured, SCHEME, path, e.to_string()))?;
        Ok(PemProvider {
            uri: format!("pem:{}", p.display()),
            path: p,
        })
    }

    fn err(&self, kind: ErrorKind, msg: impl Into<String>) -> ProviderError {
        ProviderError::new(kind, SCHEME, self.path.display().to_string(), msg)
    }

    fn load(&self) -> Result<(rsa::RsaPrivateKey, KeyInfo), ProviderError> {
        let pem = match trust::read_secret_file(&self.path, "key file") {
            Ok(s) => s,
            Err(trust::ReadError::Io(e)) => {
                let kind = match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => ErrorKind::Denied,
                    _ => ErrorKind::Unreachable,
                };
                return Err(self.err(kind, format!("cannot read key file: {e}")));
            }
            Err(trust::ReadError::Untrusted(m)) => {
                return Err(self.err(ErrorKind::Misconfigured, format!("{m}; refusing to use it")))
            }
        };
        let key = rsa::parse_private_pem(&pem).map_err(|m| self.err(ErrorKind::Misconfigured, m.to_string()))?;
        let public = key.to_public_key();
        let bits = rsa::bits(&public);
        rsa::check_bits(bits).map_err(|m| self.err(ErrorKind::Misconfigured, m.to_string()))?;
        let info = KeyInfo::for_public(SCHEME, &self.path.display().to_string(), "1", &public);
        Ok((key, info))
    }
}

impl KeyProvider for PemProvider {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn current(&self) -> Result<KeyInfo, ProviderError> {
        Ok(self.load()?.1)
    }

    fn wrap(&self, secret: &SecretKey) -> Result<Wrapped, ProviderError> {
        let (key, info) = self.load()?;
        Ok(Wrapped::locally(info, &key.to_public_key(), OaepHash::Sha256, secret))
    }

    fn unwrap(&self, _version: &str, wrapped: &[u8]) -> Result<Unwrapped, ProviderError> {
        let (key, info) = self.load()?;
        let secret = rsa::unwrap(&key, wrapped).ok_or_else(|| {
            self.err(
                ErrorKind::UnwrapFailed,
                "this key cannot decrypt the keyslot (made by another key, or corrupted)",
            )
        })?;
        Ok(Unwrapped { secret, key: info })
    }
}
