//! Deterministic authenticated encryption for names: AES-256-GCM-SIV (RFC 8452) through
//! aws-lc-rs.
//!
//! Names must encrypt deterministically (a lookup computes the backing name; it cannot scan
//! the directory), so the nonce is not random but the directory's own IV. GCM-SIV is
//! misuse-resistant: repeating a nonce reveals only that the same (nonce, associated data,
//! plaintext) was encrypted twice, which for a name in one directory is exactly what
//! deterministic encryption must reveal, and nothing about other names. (gocryptfs uses EME,
//! a wide-block mode without authentication; AES-SIV, RFC 5297, would do as well but no vetted
//! implementation is linked here. GCM-SIV also authenticates: a changed backing name fails to
//! decrypt instead of showing as another name.)

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM_SIV};

use super::aead::{AuthFailed, NONCE_LEN, TAG_LEN};
use super::secret::SecretKey;

/// AES-256-GCM-SIV with a fixed key.
pub struct Siv {
    key: LessSafeKey,
}

impl Siv {
    /// The cipher for one 256-bit key.
    pub fn new(key: &SecretKey) -> Self {
        let k = UnboundKey::new(&AES_256_GCM_SIV, key.expose()).expect("a 32-byte key is valid for AES-256-GCM-SIV");
        Siv {
            key: LessSafeKey::new(k),
        }
    }

    /// `ciphertext || tag` of `plain`; the same inputs always give the same output.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), &mut out)
            .expect("AES-GCM-SIV encryption of a short buffer cannot fail");
        out
    }

    /// Opens `ciphertext || tag` made by [`Siv::seal`].
    pub fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthFailed> {
        if sealed.len() < TAG_LEN {
            return Err(AuthFailed);
        }
        let mut buf = sealed.to_vec();
        let n = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), &mut buf)
            .map_err(|_| AuthFailed)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::unhex;

    /// RFC 8452, appendix C.2, the first AES-256-GCM-SIV vector with a plaintext.
    #[test]
    fn rfc8452_vector() {
        let key = unhex("0100000000000000000000000000000000000000000000000000000000000000").unwrap();
        let s = Siv::new(&SecretKey::from_slice(&key).unwrap());
        let nonce: [u8; 12] = unhex("030000000000000000000000").unwrap().try_into().unwrap();
        let ct = s.seal(&nonce, b"", &unhex("0100000000000000").unwrap());
        assert_eq!(ct, unhex("c2ef328e5c71c83b843122130f7364b761e0b97427e3df28").unwrap());
        assert_eq!(s.open(&nonce, b"", &ct).unwrap(), unhex("0100000000000000").unwrap());
    }

    #[test]
    fn deterministic_bound_and_authenticated() {
        let s = Siv::new(&SecretKey::random());
        let n = [9u8; 12];
        let a = s.seal(&n, b"dir", b"name");
        assert_eq!(a, s.seal(&n, b"dir", b"name"));
        assert_ne!(a, s.seal(&[8u8; 12], b"dir", b"name"));
        assert_ne!(a, s.seal(&n, b"dis", b"name"));
        assert!(s.open(&n, b"dis", &a).is_err());
        let mut t = a.clone();
        t[0] ^= 1;
        assert!(s.open(&n, b"dir", &t).is_err());
    }
}
