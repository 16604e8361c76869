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
    wrap_with(key, OaepHash::Sha256, secret)
}

/// The hash used by RSA-OAEP (for both the label hash and MGF1). SHA-256 is the default
/// everywhere; SHA-1 exists for tokens that implement nothing else (SoftHSM2 2.6 and many
/// real HSMs). OAEP with SHA-1 is still a sound padding: its security does not rest on
/// SHA-1's collision resistance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OaepHash {
    /// SHA-1 with MGF1-SHA1.
    Sha1,
    /// SHA-256 with MGF1-SHA256.
    #[default]
    Sha256,
}

impl OaepHash {
    /// Parses `sha1` / `sha256` (as written in provider URIs).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sha1" | "sha-1" => Ok(OaepHash::Sha1),
            "sha256" | "sha-256" => Ok(OaepHash::Sha256),
            other => Err(format!(
                "unsupported OAEP hash '{other}': use sha256 (preferred) or sha1"
            )),
        }
    }

    /// The name used in URIs.
    pub fn name(self) -> &'static str {
        match self {
            OaepHash::Sha1 => "sha1",
            OaepHash::Sha256 => "sha256",
        }
    }

    fn padding(self) -> Oaep {
        match self {
            OaepHash::Sha1 => Oaep::new::<sha1::Sha1>(),
            OaepHash::Sha256 => Oaep::new::<Sha256>(),
        }
    }
}

/// RSA-OAEP encryption of a 32-byte secret with the public key, with the given hash. This
/// is how every provider wraps: the private key is never needed to wrap.
pub fn wrap_with(key: &RsaPublicKey, hash: OaepHash, secret: &SecretKey) -> Vec<u8> {
    key.encrypt(&mut rand_core::OsRng, hash.padding(), secret.expose())
        .expect("OAEP encryption of 32 bytes under a >=2048-bit key cannot fail")
}

/// Builds a public key from its big-endian modulus and public exponent (as PKCS#11 and
/// TPMs hand them out) and checks its size.
pub fn public_from_parts(modulus: &[u8], exponent: &[u8]) -> Result<RsaPublicKey, String> {
    let key = RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(modulus),
        rsa::BigUint::from_bytes_be(exponent),
    )
    .map_err(|e| format!("not a usable RSA public key: {e}"))?;
    check_bits(bits(&key))?;
    Ok(key)
}

/// Parses a public key from PEM (`BEGIN PUBLIC KEY` SubjectPublicKeyInfo, or
/// `BEGIN RSA PUBLIC KEY` PKCS#1), as KMS services hand them out, and checks its size.
pub fn public_from_pem(pem: &str) -> Result<RsaPublicKey, String> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    let key = RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|_| "not an RSA public key in SubjectPublicKeyInfo or PKCS#1 PEM form".to_string())?;
    check_bits(bits(&key))?;
    Ok(key)
}

/// Parses a public key from DER SubjectPublicKeyInfo (AWS KMS GetPublicKey) and checks its size.
pub fn public_from_der(der: &[u8]) -> Result<RsaPublicKey, String> {
    use rsa::pkcs8::DecodePublicKey;
    let key = RsaPublicKey::from_public_key_der(der).map_err(|e| format!("not an RSA public key (DER SPKI): {e}"))?;
    check_bits(bits(&key))?;
    Ok(key)
}

/// The [`super::KeyInfo`] for a public key held by `provider` under `key_id`/`version`.
pub fn key_info(provider: &str, key_id: &str, version: &str, key: &RsaPublicKey) -> super::KeyInfo {
    super::KeyInfo {
        provider: provider.into(),
        key_id: key_id.into(),
        version: version.into(),
        bits: bits(key),
        fingerprint: fingerprint(key),
        expiry: None,
    }
}

/// RSA-OAEP-SHA256 decryption. `None` when the ciphertext was not made by this key.
pub fn unwrap(key: &RsaPrivateKey, wrapped: &[u8]) -> Option<SecretKey> {
    unwrap_with(key, OaepHash::Sha256, wrapped)
}

/// RSA-OAEP decryption with the given hash. `None` when the ciphertext was not made by this key.
pub fn unwrap_with(key: &RsaPrivateKey, hash: OaepHash, wrapped: &[u8]) -> Option<SecretKey> {
    let pt = zeroize::Zeroizing::new(key.decrypt(hash.padding(), wrapped).ok()?);
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

    #[test]
    fn oaep_hashes_are_not_interchangeable() {
        let k = generate(2048).unwrap();
        let s = SecretKey::random();
        let w1 = wrap_with(&k.to_public_key(), OaepHash::Sha1, &s);
        assert_eq!(unwrap_with(&k, OaepHash::Sha1, &w1).unwrap().expose(), s.expose());
        assert!(unwrap_with(&k, OaepHash::Sha256, &w1).is_none());
        assert_eq!(OaepHash::parse("SHA-1").unwrap(), OaepHash::Sha1);
        assert!(OaepHash::parse("md5").is_err());
        let pub_pem = {
            use rsa::pkcs8::EncodePublicKey;
            k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap()
        };
        let p = public_from_pem(&pub_pem).unwrap();
        assert_eq!(fingerprint(&p), fingerprint(&k.to_public_key()));
        let n = k.to_public_key().n().to_bytes_be();
        let e = k.to_public_key().e().to_bytes_be();
        assert_eq!(fingerprint(&public_from_parts(&n, &e).unwrap()), fingerprint(&p));
    }
}
