//! `pkcs11:` provider — not implemented yet (placeholder so the dispatch compiles).

use super::{ErrorKind, KeyInfo, KeyProvider, ProviderError, Unwrapped, Wrapped};
use crate::crypto::SecretKey;

/// URI scheme.
pub const SCHEME: &str = "pkcs11";

/// Placeholder.
pub struct Pkcs11Provider {
    uri: String,
}

impl Pkcs11Provider {
    /// Parses the URI.
    pub fn open(uri: &str, _rest: &str) -> Result<Self, ProviderError> {
        Err(ProviderError::new(
            ErrorKind::Misconfigured,
            SCHEME,
            uri,
            "not implemented yet",
        ))
    }
}

impl KeyProvider for Pkcs11Provider {
    fn uri(&self) -> &str {
        &self.uri
    }
    fn current(&self) -> Result<KeyInfo, ProviderError> {
        unimplemented!()
    }
    fn wrap(&self, _secret: &SecretKey) -> Result<Wrapped, ProviderError> {
        unimplemented!()
    }
    fn unwrap(&self, _version: &str, _wrapped: &[u8]) -> Result<Unwrapped, ProviderError> {
        unimplemented!()
    }
}
