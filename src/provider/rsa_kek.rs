//! RSA KEK helpers shared by providers that hold the private key in this process (the local
//! key store and PEM files) or only the public key (hardware and remote providers wrap
//! locally with the public key).

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

use crate::crypto::{self, SecretKey};

/// The only RSA sizes cmkfs accepts for KEKs.
pub const ALLOWED_BITS: [usize; 3] = [2048, 3072, 4096];

/// Refuses key sizes other than 2048, 3072 and 4096 bits.
pub fn check_bits(bits: usize) -> Result<(), String> {
    if ALLOWED_BITS.contains(&bits) {
        Ok(())
    } else {
        Err(format!(
            "RSA-{bits} is not allowed as a KEK; use 2048, 3072 or 4096 bits"
        ))
    }
}

/// Modulus size in bits.
pub fn bits(key: &RsaPublicKey) -> usize {
    key.n().bits()
}

/// Generates a new KEK.
pub fn generate(bits: usize) -> Result<RsaPrivateKey, String> {
    check_bits(bits)?;
    RsaPrivateKey::new(&mut rand_core::OsRng, bits).map_err(|e| format!("RSA key generation failed: {e}"))
}

/// SHA-256 over the DER SubjectPublicKeyInfo, hex.
pub fn fingerprint(key: &RsaPublicKey) -> String {
    let der = key.to_public_key_der().expect("RSA public key encodes");
    crypto::hex(&crypto::sha256(der.as_bytes()))
}

/// RSA-OAEP-SHA256 encryption of a 32-byte secret with the public key.
pub fn wrap(key: &RsaPublicKey, secret: &SecretKey) -> Vec<u8> {
    key.encrypt(&mut rand_core::OsRng, Oaep::new::<Sha256>(), secret.expose())
        .expect("OAEP encryption of 32 bytes under a >=2048-bit key cannot fail")
}

/// RSA-OAEP-SHA256 decryption. `None` when the ciphertext was not made by this key.
pub fn unwrap(key: &RsaPrivateKey, wrapped: &[u8]) -> Option<SecretKey> {
    let pt = zeroize::Zeroizing::new(key.decrypt(Oaep::new::<Sha256>(), wrapped).ok()?);
    SecretKey::from_slice(&pt)
}

/// Parses a PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`) PEM.
pub fn parse_private_pem(pem: &str) -> Result<RsaPrivateKey, String> {
    RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| "not an unencrypted RSA private key in PKCS#8 or PKCS#1 PEM form".to_string())
}

/// PKCS#8 PEM of a private key (zeroized on drop).
pub fn private_pem(key: &RsaPrivateKey) -> zeroize::Zeroizing<String> {
    key.to_pkcs8_pem(LineEnding::LF).expect("RSA private key encodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_other_sizes() {
        assert!(check_bits(1024).is_err());
        assert!(check_bits(2047).is_err());
        assert!(generate(1024).is_err());
        assert!(check_bits(3072).is_ok());
    }

    #[test]
    fn wrap_unwrap() {
        let k = generate(2048).unwrap();
        let s = SecretKey::random();
        let w = wrap(&k.to_public_key(), &s);
        assert_eq!(unwrap(&k, &w).unwrap().expose(), s.expose());
        let other = generate(2048).unwrap();
        assert!(unwrap(&other, &w).is_none());
        let pem = private_pem(&k);
        let k2 = parse_private_pem(&pem).unwrap();
        assert_eq!(fingerprint(&k.to_public_key()), fingerprint(&k2.to_public_key()));
    }
}
