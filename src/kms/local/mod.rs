//! `local:` — the embedded key store: this file is the provider, [`store`] the key store's
//! files (also what `cmkfs key` manages).
//!
//! URI: `local:/ABSOLUTE/STORE/NAME` follows the newest enabled version;
//! `local:/ABSOLUTE/STORE/NAME?version=N` pins version N.

use std::path::Path;
use std::time::SystemTime;

use super::{ErrorKind, KeyInfo, KeyProvider, ProviderError, Unwrapped, Wrapped};
use crate::crypto::rsa::{self, OaepHash};
use crate::crypto::SecretKey;
use store::{KeyStore, StoreError, VersionMeta};

pub mod store;

/// URI scheme.
pub const SCHEME: &str = "local";

/// A key in a local key store.
pub struct LocalProvider {
    uri: String,
    store: KeyStore,
    name: String,
    pinned: Option<u32>,
}

impl LocalProvider {
    /// Parses `rest` (the part after `local:`).
    pub fn open(uri: &str, rest: &str) -> Result<Self, ProviderError> {
        let bad = |m: &str| ProviderError::new(ErrorKind::Misconfigured, SCHEME, uri, m.to_string());
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let pinned = match query {
            None => None,
            Some(q) => match q.strip_prefix("version=").map(str::parse::<u32>) {
                Some(Ok(v)) if v > 0 => Some(v),
                _ => return Err(bad("the only query parameter is version=N (N >= 1)")),
            },
        };
        let path = Path::new(path);
        if !path.is_absolute() {
            return Err(bad("the key path must be absolute: local:/STORE/NAME"));
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| bad("no key name in URI"))?;
        let store = KeyStore::open(path.parent().ok_or_else(|| bad("no store directory in URI"))?);
        Ok(LocalProvider {
            uri: uri.into(),
            store,
            name: name.into(),
            pinned,
        })
    }

    fn err(&self, kind: ErrorKind, msg: impl Into<String>) -> ProviderError {
        ProviderError::new(
            kind,
            SCHEME,
            format!("'{}' in {}", self.name, self.store.root().display()),
            msg,
        )
    }

    fn store_err(&self, e: StoreError) -> ProviderError {
        let kind = match &e {
            StoreError::NoStore(_) => ErrorKind::Unreachable,
            StoreError::NoKey { .. } | StoreError::NoVersion { .. } => ErrorKind::Denied,
            StoreError::BadName(_) | StoreError::Invalid(_) => ErrorKind::Misconfigured,
            StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => ErrorKind::Denied,
            StoreError::Io { .. } => ErrorKind::Unreachable,
            StoreError::Corrupt { .. } | StoreError::Exists(_) => ErrorKind::Misconfigured,
            StoreError::Refused { .. } => ErrorKind::Denied,
            StoreError::Untrusted(_) => ErrorKind::Misconfigured,
        };
        self.err(kind, e.to_string())
    }

    fn info(&self, v: &VersionMeta) -> KeyInfo {
        KeyInfo {
            provider: SCHEME.into(),
            key_id: self.name.clone(),
            version: v.version.to_string(),
            bits: Some(v.bits),
            fingerprint: Some(v.fingerprint.clone()),
            expiry: v.expiry.clone(),
        }
    }

    /// Refuses a version that is disabled or not yet active; `for_wrap` also refuses an
    /// expired one (unwrapping with an expired key keeps working, with a warning).
    fn check_usable(&self, v: &VersionMeta, for_wrap: bool) -> Result<(), ProviderError> {
        if !v.enabled {
            return Err(self.err(ErrorKind::Denied, format!("version {} is disabled", v.version)));
        }
        let now = SystemTime::now();
        if let Some(a) = v
            .activation
            .as_deref()
            .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
        {
            if a > now {
                return Err(self.err(
                    ErrorKind::Denied,
                    format!(
                        "version {} is not active until {}",
                        v.version,
                        v.activation.as_deref().unwrap_or("")
                    ),
                ));
            }
        }
        if let Some(x) = v.expiry.as_deref().and_then(|s| humantime::parse_rfc3339_weak(s).ok()) {
            if x <= now {
                if for_wrap {
                    return Err(self.err(
                        ErrorKind::Denied,
                        format!(
                            "version {} expired at {}; create a new version before wrapping",
                            v.version,
                            v.expiry.as_deref().unwrap_or("")
                        ),
                    ));
                }
                tracing::warn!(key = %self.name, version = v.version, "KEK version has expired; it still unwraps");
            }
        }
        Ok(())
    }

    /// Reads the key's metadata and refuses a deleted or disabled key.
    fn usable_meta(&self) -> Result<store::KeyMeta, ProviderError> {
        let meta = self.store.meta(&self.name).map_err(|e| self.store_err(e))?;
        if let Some(d) = &meta.deleted {
            return Err(self.err(
                ErrorKind::Denied,
                format!(
                    "key was deleted at {}; 'cmkfs key recover {}' restores it until {}",
                    d.at, self.name, d.purge_after
                ),
            ));
        }
        if !meta.enabled {
            return Err(self.err(
                ErrorKind::Denied,
                "key is disabled ('cmkfs key enable' restores access)",
            ));
        }
        Ok(meta)
    }

    fn current_meta(&self) -> Result<VersionMeta, ProviderError> {
        let meta = self.usable_meta()?;
        let v = match self.pinned {
            Some(p) => meta
                .version(p)
                .cloned()
                .ok_or_else(|| self.err(ErrorKind::Denied, format!("version {p} does not exist")))?,
            None => meta
                .newest_enabled()
                .cloned()
                .ok_or_else(|| self.err(ErrorKind::Denied, "every version of the key is disabled"))?,
        };
        Ok(v)
    }
}

impl KeyProvider for LocalProvider {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn current(&self) -> Result<KeyInfo, ProviderError> {
        let v = self.current_meta()?;
        self.check_usable(&v, true)?;
        Ok(self.info(&v))
    }

    fn wrap(&self, secret: &SecretKey) -> Result<Wrapped, ProviderError> {
        let v = self.current_meta()?;
        self.check_usable(&v, true)?;
        let key = self
            .store
            .private_key(&self.name, v.version)
            .map_err(|e| self.store_err(e))?;
        let public = key.to_public_key();
        rsa::check_bits(rsa::bits(&public)).map_err(|m| self.err(ErrorKind::Misconfigured, m.to_string()))?;
        Ok(Wrapped::locally(self.info(&v), &public, OaepHash::Sha256, secret))
    }

    fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<Unwrapped, ProviderError> {
        let vn: u32 = version.parse().map_err(|_| {
            self.err(
                ErrorKind::Misconfigured,
                format!("'{version}' is not a local key version"),
            )
        })?;
        let meta = self.usable_meta()?;
        let v = meta
            .version(vn)
            .cloned()
            .ok_or_else(|| self.err(ErrorKind::Denied, format!("version {vn} does not exist (deleted?)")))?;
        self.check_usable(&v, false)?;
        let key = self.store.private_key(&self.name, vn).map_err(|e| self.store_err(e))?;
        let secret = rsa::unwrap(&key, wrapped).ok_or_else(|| {
            self.err(
                ErrorKind::UnwrapFailed,
                format!("version {vn} cannot decrypt this keyslot (made by another key, or corrupted)"),
            )
        })?;
        Ok(Unwrapped {
            secret,
            key: self.info(&v),
        })
    }
}
