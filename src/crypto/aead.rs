//! AES-256-GCM through aws-lc-rs.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use super::secret::{fill_random, SecretKey};

/// AES-GCM nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length in bytes.
pub const TAG_LEN: usize = 16;

/// A 12-byte random nonce.
pub fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    fill_random(&mut n);
    n
}

/// The authentication tag did not match: wrong key, tampered or misplaced ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailed;

/// AES-256-GCM with a fixed key. Cheap to share between threads (`&self` methods only).
pub struct Aead {
    key: LessSafeKey,
}

impl Aead {
    /// Builds the cipher for one key. AWS-LC cleanses the key state when it is dropped.
    pub fn new(key: &SecretKey) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, key.expose()).expect("a 32-byte key is valid for AES-256-GCM");
        Aead {
            key: LessSafeKey::new(unbound),
        }
    }

    /// Encrypts `buf` in place and returns the tag. `nonce` must never repeat under this key;
    /// callers use [`random_nonce`].
    pub fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .expect("AES-GCM encryption of a buffer under 64 GiB cannot fail");
        tag.as_ref().try_into().expect("AES-GCM tags are 16 bytes")
    }

    /// Decrypts `buf` in place after checking `tag`. On failure `buf` is left unspecified and
    /// must not be used.
    pub fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthFailed> {
        self.key
            .open_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), tag, buf)
            .map(|_| ())
            .map_err(|_| AuthFailed)
    }

    /// Seals a small message into `nonce || ciphertext || tag` with a fresh nonce.
    pub fn seal_message(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = random_nonce();
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self.seal_in_place(&nonce, aad, &mut out[NONCE_LEN..]);
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a message made by [`Aead::seal_message`].
    pub fn open_message(&self, aad: &[u8], sealed: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, AuthFailed> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(AuthFailed);
        }
        let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().unwrap();
        let tag: [u8; TAG_LEN] = sealed[sealed.len() - TAG_LEN..].try_into().unwrap();
        let mut body = zeroize::Zeroizing::new(sealed[NONCE_LEN..sealed.len() - TAG_LEN].to_vec());
        self.open_in_place(&nonce, aad, &mut body, &tag)?;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_tamper() {
        let k = SecretKey::random();
        let a = Aead::new(&k);
        let sealed = a.seal_message(b"ctx", b"hello");
        assert_eq!(&**a.open_message(b"ctx", &sealed).unwrap(), b"hello");
        assert!(a.open_message(b"other", &sealed).is_err(), "aad must be bound");
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(a.open_message(b"ctx", &t).is_err(), "bit flip at {i} undetected");
        }
        let other = Aead::new(&SecretKey::random());
        assert!(other.open_message(b"ctx", &sealed).is_err());
    }
}
