//! Key derivation and MACs: HKDF-SHA256 sub-keys of a secret, HMAC-SHA256, SHA-256.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::secret::{SecretKey, KEY_LEN};

impl SecretKey {
    /// Derives a sub-key with HKDF-SHA256. `info` names the purpose so that keys for
    /// different purposes are independent even though they come from one volume key.
    pub fn derive(&self, salt: &[u8], info: &[u8]) -> SecretKey {
        let hk = Hkdf::<Sha256>::new(Some(salt), self.expose());
        let mut out = [0u8; KEY_LEN];
        hk.expand(info, &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        SecretKey::from_bytes(out)
    }
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &SecretKey, data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).expect("any key length works for HMAC");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Checks an HMAC-SHA256 in constant time.
pub fn hmac_sha256_verify(key: &SecretKey, data: &[u8], expected: &[u8]) -> bool {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).expect("any key length works for HMAC");
    mac.update(data);
    mac.verify_slice(expected).is_ok()
}

/// SHA-256 digest.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_is_deterministic_and_purpose_separated() {
        let k = SecretKey::from_slice(&[7u8; 32]).unwrap();
        assert_eq!(k.derive(b"s", b"a").expose(), k.derive(b"s", b"a").expose());
        assert_ne!(k.derive(b"s", b"a").expose(), k.derive(b"s", b"b").expose());
        assert_ne!(k.derive(b"s", b"a").expose(), k.derive(b"t", b"a").expose());
    }

    #[test]
    fn hmac_verify() {
        let k = SecretKey::random();
        let m = hmac_sha256(&k, b"data");
        assert!(hmac_sha256_verify(&k, b"data", &m));
        assert!(!hmac_sha256_verify(&k, b"datb", &m));
    }
}
