//! RSA KEK primitives: key generation, parsing and PEM, RSA-OAEP wrap and unwrap. Used by the
//! key services ([`crate::kms`]) that hold the private key in this process (the local key
//! store and PEM files) or only the public key (hardware and remote providers wrap locally
//! with the public key). Pure: nothing here knows about providers, URIs or files.
//!
//! Everything here runs on aws-lc-rs (AWS-LC): its RSA-OAEP decryption is constant-time and
//! blinded, unlike the RustCrypto `rsa` crate this replaced (RUSTSEC-2023-0071, "Marvin"),
//! which every revalidation check of a `local:` or `pem:` volume used to run. AWS-LC clears
//! private key material when the key is freed. The few DER structures AWS-LC does not parse
//! for us (PKCS#1 private and public keys, which cmkfs wraps into PKCS#8 and
//! SubjectPublicKeyInfo) and PEM armour are handled by the small functions below.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{
    KeySize, OaepAlgorithm, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    PublicEncryptingKey, PublicKeyComponents, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use base64::Engine as _;
use zeroize::Zeroizing;

use super::SecretKey;

/// Why an RSA key or operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RsaError {
    /// A key size other than 2048, 3072 or 4096 bits.
    #[error("RSA-{0} is not allowed as a KEK; use 2048, 3072 or 4096 bits")]
    BadSize(usize),
    /// Bytes that are not a usable RSA public key (`what` names the form expected).
    #[error("not a usable RSA public key ({what}){}", detail_suffix(.detail))]
    NotPublicKey {
        /// The form that was expected.
        what: &'static str,
        /// AWS-LC's reason, where it gave one.
        detail: Option<String>,
    },
    /// Bytes that are not an unencrypted RSA private key in PKCS#8 or PKCS#1 PEM form.
    #[error("not an unencrypted RSA private key in PKCS#8 or PKCS#1 PEM form{}", detail_suffix(.detail))]
    NotPrivateKey {
        /// AWS-LC's reason, where it gave one.
        detail: Option<String>,
    },
    /// An OAEP hash name other than sha1 or sha256.
    #[error("unsupported OAEP hash '{0}': use sha256 (preferred) or sha1")]
    UnknownHash(String),
    /// AWS-LC refused an operation that should not fail (generation, encoding, encryption).
    #[error("{0}")]
    Failed(&'static str),
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
}

/// The only RSA sizes cmkfs accepts for KEKs.
pub const ALLOWED_BITS: [usize; 3] = [2048, 3072, 4096];

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Refuses key sizes other than 2048, 3072 and 4096 bits.
pub fn check_bits(bits: usize) -> Result<(), RsaError> {
    if ALLOWED_BITS.contains(&bits) {
        Ok(())
    } else {
        Err(RsaError::BadSize(bits))
    }
}

/// An RSA public key: what every provider wraps with.
#[derive(Clone)]
pub struct RsaPublicKey {
    key: PublicEncryptingKey,
    /// DER SubjectPublicKeyInfo as AWS-LC encodes it (canonical: minimal INTEGERs,
    /// rsaEncryption with NULL parameters), whatever form the key came in.
    der: Vec<u8>,
}

impl std::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaPublicKey(RSA-{}, {})", self.bits(), &fingerprint(self)[..16])
    }
}

impl RsaPublicKey {
    fn from_aws(key: PublicEncryptingKey) -> Result<Self, RsaError> {
        let der = key
            .as_der()
            .map_err(|_| RsaError::Failed("the RSA public key cannot be encoded"))?
            .as_ref()
            .to_vec();
        Ok(RsaPublicKey { key, der })
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.key_size_bits()
    }

    /// DER SubjectPublicKeyInfo.
    pub fn to_der(&self) -> &[u8] {
        &self.der
    }

    /// `BEGIN PUBLIC KEY` PEM (SubjectPublicKeyInfo).
    pub fn to_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.der).to_string()
    }
}

/// An RSA private key held in this process (local key store, PEM file). AWS-LC clears the
/// key's numbers when the last reference is freed.
#[derive(Clone)]
pub struct RsaPrivateKey {
    key: PrivateDecryptingKey,
}

impl std::fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaPrivateKey(RSA-{}, <redacted>)", self.key.key_size_bits())
    }
}

impl RsaPrivateKey {
    /// The public half.
    pub fn to_public_key(&self) -> RsaPublicKey {
        RsaPublicKey::from_aws(self.key.public_key()).expect("AWS-LC encodes the public key of its own private key")
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.key_size_bits()
    }
}

/// Modulus size in bits.
pub fn bits(key: &RsaPublicKey) -> usize {
    key.bits()
}

/// Generates a new KEK.
pub fn generate(bits: usize) -> Result<RsaPrivateKey, RsaError> {
    check_bits(bits)?;
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        _ => KeySize::Rsa4096,
    };
    let key = PrivateDecryptingKey::generate(size).map_err(|_| RsaError::Failed("RSA key generation failed"))?;
    Ok(RsaPrivateKey { key })
}

/// SHA-256 over the DER SubjectPublicKeyInfo, hex. Volume headers store it: it must never
/// change for a given key (`fingerprint_is_pinned` below).
pub fn fingerprint(key: &RsaPublicKey) -> String {
    super::hex(&super::sha256(&key.der))
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
    pub fn parse(s: &str) -> Result<Self, RsaError> {
        match s.to_ascii_lowercase().as_str() {
            "sha1" | "sha-1" => Ok(OaepHash::Sha1),
            "sha256" | "sha-256" => Ok(OaepHash::Sha256),
            other => Err(RsaError::UnknownHash(other.to_string())),
        }
    }

    /// The name used in URIs.
    pub fn name(self) -> &'static str {
        match self {
            OaepHash::Sha1 => "sha1",
            OaepHash::Sha256 => "sha256",
        }
    }

    fn algorithm(self) -> &'static OaepAlgorithm {
        match self {
            OaepHash::Sha1 => &OAEP_SHA1_MGF1SHA1,
            OaepHash::Sha256 => &OAEP_SHA256_MGF1SHA256,
        }
    }
}

/// RSA-OAEP encryption of a 32-byte secret with the public key, with the given hash. This
/// is how every provider wraps: the private key is never needed to wrap.
pub fn wrap_with(key: &RsaPublicKey, hash: OaepHash, secret: &SecretKey) -> Vec<u8> {
    encrypt_with(key, hash, secret.expose()).expect("OAEP encryption of 32 bytes under a >=2048-bit key cannot fail")
}

/// RSA-OAEP encryption of any short message (for tests and probes; keys go through
/// [`wrap_with`]).
pub fn encrypt_with(key: &RsaPublicKey, hash: OaepHash, message: &[u8]) -> Result<Vec<u8>, RsaError> {
    let k = OaepPublicEncryptingKey::new(key.key.clone()).map_err(|_| RsaError::Failed("not an OAEP key"))?;
    let mut out = vec![0u8; k.ciphertext_size()];
    let n = k
        .encrypt(hash.algorithm(), message, &mut out, None)
        .map_err(|_| RsaError::Failed("RSA-OAEP encryption failed (message too long?)"))?
        .len();
    out.truncate(n);
    Ok(out)
}

/// A public key from its SubjectPublicKeyInfo DER, size checked.
fn public_from_spki(der: &[u8], what: &'static str) -> Result<RsaPublicKey, RsaError> {
    let key = PublicEncryptingKey::from_der(der).map_err(|e| RsaError::NotPublicKey {
        what,
        detail: Some(e.to_string()),
    })?;
    let key = RsaPublicKey::from_aws(key)?;
    check_bits(key.bits())?;
    Ok(key)
}

/// Builds a public key from its big-endian modulus and public exponent (as PKCS#11 and
/// TPMs hand them out) and checks its size.
pub fn public_from_parts(modulus: &[u8], exponent: &[u8]) -> Result<RsaPublicKey, RsaError> {
    // AWS-LC wants minimal big-endian integers; TPMs and tokens may pad them with zeros
    // (a TPM's exponent is a u32: 00 01 00 01).
    let strip = |b: &[u8]| -> Vec<u8> { b[b.iter().take_while(|x| **x == 0).count()..].to_vec() };
    let (modulus, exponent) = (strip(modulus), strip(exponent));
    let (modulus, exponent) = (modulus.as_slice(), exponent.as_slice());
    let key: PublicEncryptingKey = PublicKeyComponents {
        n: modulus,
        e: exponent,
    }
    .try_into()
    .map_err(|_| RsaError::NotPublicKey {
        what: "modulus and exponent",
        detail: None,
    })?;
    let key = RsaPublicKey::from_aws(key)?;
    check_bits(key.bits())?;
    Ok(key)
}

/// Parses a public key from PEM (`BEGIN PUBLIC KEY` SubjectPublicKeyInfo, or
/// `BEGIN RSA PUBLIC KEY` PKCS#1), as KMS services hand them out, and checks its size.
pub fn public_from_pem(pem: &str) -> Result<RsaPublicKey, RsaError> {
    const WHAT: &str = "SubjectPublicKeyInfo or PKCS#1 PEM";
    let bad = || RsaError::NotPublicKey {
        what: WHAT,
        detail: None,
    };
    let (label, der) = pem_decode(pem).ok_or_else(bad)?;
    match label.as_str() {
        "PUBLIC KEY" => public_from_spki(&der, WHAT),
        "RSA PUBLIC KEY" => public_from_spki(&der::spki_from_pkcs1(&der), WHAT),
        _ => Err(bad()),
    }
}

/// Parses a public key from DER SubjectPublicKeyInfo (AWS KMS GetPublicKey) and checks its size.
pub fn public_from_der(der: &[u8]) -> Result<RsaPublicKey, RsaError> {
    public_from_spki(der, "DER SPKI")
}

/// RSA-OAEP-SHA256 decryption. `None` when the ciphertext was not made by this key.
pub fn unwrap(key: &RsaPrivateKey, wrapped: &[u8]) -> Option<SecretKey> {
    unwrap_with(key, OaepHash::Sha256, wrapped)
}

/// RSA-OAEP decryption with the given hash, in constant time (AWS-LC). `None` when the
/// ciphertext was not made by this key.
pub fn unwrap_with(key: &RsaPrivateKey, hash: OaepHash, wrapped: &[u8]) -> Option<SecretKey> {
    let k = OaepPrivateDecryptingKey::new(key.key.clone()).ok()?;
    if wrapped.len() != k.key_size_bytes() {
        return None;
    }
    let mut out = Zeroizing::new(vec![0u8; k.min_output_size()]);
    let pt = k.decrypt(hash.algorithm(), wrapped, &mut out, None).ok()?;
    SecretKey::from_slice(pt)
}

/// Parses a PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`) PEM.
pub fn parse_private_pem(pem: &str) -> Result<RsaPrivateKey, RsaError> {
    let bad = || RsaError::NotPrivateKey { detail: None };
    let (label, der) = pem_decode(pem).ok_or_else(bad)?;
    let pkcs8 = match label.as_str() {
        "PRIVATE KEY" => der,
        "RSA PRIVATE KEY" => der::pkcs8_from_pkcs1(&der),
        _ => return Err(bad()),
    };
    let key = PrivateDecryptingKey::from_pkcs8(&pkcs8).map_err(|e| RsaError::NotPrivateKey {
        detail: Some(e.to_string()),
    })?;
    Ok(RsaPrivateKey { key })
}

/// PKCS#8 PEM of a private key (zeroized on drop).
pub fn private_pem(key: &RsaPrivateKey) -> Zeroizing<String> {
    // AWS-LC's DER buffer is zeroized when dropped.
    let der: Pkcs8V1Der<'static> = key.key.as_der().expect("RSA private key encodes");
    pem_encode("PRIVATE KEY", der.as_ref())
}

/// PEM armour with 64-column lines, built in one zeroizing allocation of the right size.
fn pem_encode(label: &str, der: &[u8]) -> Zeroizing<String> {
    let b64_len = der.len().div_ceil(3) * 4;
    let mut out = Zeroizing::new(String::with_capacity(b64_len + b64_len / 64 + 2 * label.len() + 40));
    let b64 = Zeroizing::new(B64.encode(der));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// The label and DER body of the first PEM block. Encrypted PEM (RFC 1421 headers) is
/// refused. Every intermediate buffer is zeroized.
fn pem_decode(pem: &str) -> Option<(String, Zeroizing<Vec<u8>>)> {
    let start = pem.find("-----BEGIN ")?;
    let rest = &pem[start + "-----BEGIN ".len()..];
    let (label, rest) = rest.split_once("-----")?;
    let end_marker = format!("-----END {label}-----");
    let body = &rest[..rest.find(&end_marker)?];
    if body.contains(':') {
        return None;
    }
    let mut b64 = Zeroizing::new(String::with_capacity(body.len()));
    b64.extend(body.chars().filter(|c| !c.is_ascii_whitespace()));
    let mut der = Zeroizing::new(Vec::with_capacity(b64.len() / 4 * 3 + 3));
    B64.decode_vec(b64.as_bytes(), &mut der).ok()?;
    Some((label.to_string(), der))
}

/// Just enough DER to put PKCS#1 keys into the envelopes AWS-LC parses.
mod der {
    use zeroize::Zeroizing;

    /// rsaEncryption (1.2.840.113549.1.1.1) with NULL parameters.
    const RSA_ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];

    fn push_len(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }

    /// TAG LEN CONTENT, where the content is the concatenation of `parts`, written into one
    /// zeroizing buffer of the final size.
    fn tlv(tag: u8, parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut out = Zeroizing::new(Vec::with_capacity(len + 8));
        out.push(tag);
        push_len(&mut out, len);
        for p in parts {
            out.extend_from_slice(p);
        }
        out
    }

    /// PrivateKeyInfo { version 0, rsaEncryption, OCTET STRING { RSAPrivateKey } } (RFC 5208).
    pub fn pkcs8_from_pkcs1(rsa_private_key: &[u8]) -> Zeroizing<Vec<u8>> {
        let octets = tlv(0x04, &[rsa_private_key]);
        tlv(0x30, &[&[0x02, 0x01, 0x00], &RSA_ALGORITHM, &octets])
    }

    /// SubjectPublicKeyInfo { rsaEncryption, BIT STRING { RSAPublicKey } } (RFC 5280).
    pub fn spki_from_pkcs1(rsa_public_key: &[u8]) -> Zeroizing<Vec<u8>> {
        let bits = tlv(0x03, &[&[0x00], rsa_public_key]);
        tlv(0x30, &[&RSA_ALGORITHM, &bits])
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn lengths() {
            let mut v = vec![];
            super::push_len(&mut v, 0x7f);
            super::push_len(&mut v, 0x80);
            super::push_len(&mut v, 0x1234);
            assert_eq!(v, [0x7f, 0x81, 0x80, 0x82, 0x12, 0x34]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden volumes' KEK (tests/golden/v1/kek.pem, PKCS#8 as the key store writes it).
    const GOLDEN_PEM: &str = include_str!("../../tests/golden/v1/kek.pem");
    /// Its fingerprint, computed by the RustCrypto `rsa` crate that made every existing
    /// volume header (`to_public_key_der`), and by `openssl pkey -pubout -outform DER |
    /// sha256sum`. Headers store it: it must never change.
    const GOLDEN_FINGERPRINT: &str = "948881c9bfc9c613be1718a7ff880d35949b78fe76e425627e8bfa85c0061144";

    #[test]
    fn refuses_other_sizes() {
        assert!(check_bits(1024).is_err());
        assert!(check_bits(2047).is_err());
        assert!(generate(1024).is_err());
        assert!(check_bits(3072).is_ok());
    }

    #[test]
    fn fingerprint_is_pinned() {
        let k = parse_private_pem(GOLDEN_PEM).unwrap();
        assert_eq!(fingerprint(&k.to_public_key()), GOLDEN_FINGERPRINT);
        // The same key as PKCS#1 (`BEGIN RSA PRIVATE KEY`, what `openssl genrsa -traditional`
        // and older tools write) and through every public-key form.
        let p = k.to_public_key();
        assert_eq!(fingerprint(&public_from_pem(&p.to_pem()).unwrap()), GOLDEN_FINGERPRINT);
        assert_eq!(fingerprint(&public_from_der(p.to_der()).unwrap()), GOLDEN_FINGERPRINT);
    }

    #[test]
    fn wrap_unwrap() {
        let k = generate(2048).unwrap();
        let s = SecretKey::random();
        let w = wrap(&k.to_public_key(), &s);
        assert!(unwrap(&k, &w).unwrap().ct_eq(&s));
        let other = generate(2048).unwrap();
        assert!(unwrap(&other, &w).is_none());
        assert!(unwrap(&k, &w[1..]).is_none(), "short ciphertext");
        let pem = private_pem(&k);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let k2 = parse_private_pem(&pem).unwrap();
        assert_eq!(fingerprint(&k.to_public_key()), fingerprint(&k2.to_public_key()));
        assert!(unwrap(&k2, &w).unwrap().ct_eq(&s));
        assert!(parse_private_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err());
        assert!(parse_private_pem(&k.to_public_key().to_pem()).is_err());
        let encrypted = pem.replace("-----\n", "-----\nProc-Type: 4,ENCRYPTED\n\n");
        assert!(parse_private_pem(&encrypted).is_err());
    }

    #[test]
    fn generated_sizes() {
        for bits in [2048, 3072] {
            let k = generate(bits).unwrap();
            assert_eq!(k.bits(), bits);
            assert_eq!(k.to_public_key().bits(), bits);
        }
    }

    #[test]
    fn oaep_hashes_are_not_interchangeable() {
        let k = generate(2048).unwrap();
        let s = SecretKey::random();
        let w1 = wrap_with(&k.to_public_key(), OaepHash::Sha1, &s);
        assert!(unwrap_with(&k, OaepHash::Sha1, &w1).unwrap().ct_eq(&s));
        assert!(unwrap_with(&k, OaepHash::Sha256, &w1).is_none());
        assert_eq!(OaepHash::parse("SHA-1").unwrap(), OaepHash::Sha1);
        assert!(OaepHash::parse("md5").is_err());
        let p = public_from_pem(&k.to_public_key().to_pem()).unwrap();
        assert_eq!(fingerprint(&p), fingerprint(&k.to_public_key()));
        // A 16-byte message decrypts, but is no volume key.
        let short = encrypt_with(&p, OaepHash::Sha256, &[7u8; 16]).unwrap();
        assert!(unwrap(&k, &short).is_none());
    }

    /// Cross-checks against the RustCrypto `rsa` crate (a dev-dependency only, kept as an
    /// independent implementation): the same SPKI bytes, PKCS#1 files accepted, and OAEP
    /// ciphertexts interchangeable both ways, for both hashes.
    #[test]
    fn interoperates_with_the_rsa_crate() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;
        let theirs = rsa::RsaPrivateKey::from_pkcs8_pem(GOLDEN_PEM).unwrap();
        let their_der = theirs.to_public_key().to_public_key_der().unwrap();
        let ours = parse_private_pem(GOLDEN_PEM).unwrap();
        assert_eq!(ours.to_public_key().to_der(), their_der.as_bytes());
        let pkcs1 = theirs.to_pkcs1_pem(LineEnding::LF).unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let from_pkcs1 = parse_private_pem(&pkcs1).unwrap();
        assert_eq!(fingerprint(&from_pkcs1.to_public_key()), GOLDEN_FINGERPRINT);
        let pkcs1_pub = {
            use rsa::pkcs1::EncodeRsaPublicKey;
            theirs.to_public_key().to_pkcs1_pem(LineEnding::LF).unwrap()
        };
        assert_eq!(fingerprint(&public_from_pem(&pkcs1_pub).unwrap()), GOLDEN_FINGERPRINT);
        let n = theirs.n().to_bytes_be();
        let e = theirs.e().to_bytes_be();
        assert_eq!(fingerprint(&public_from_parts(&n, &e).unwrap()), GOLDEN_FINGERPRINT);
        let mut padded = vec![0u8];
        padded.extend_from_slice(&n);
        assert_eq!(
            fingerprint(&public_from_parts(&padded, &[0, 1, 0, 1]).unwrap()),
            GOLDEN_FINGERPRINT,
            "leading zero bytes (TPM, PKCS#11) do not change the key"
        );
        let s = SecretKey::random();
        for hash in [OaepHash::Sha256, OaepHash::Sha1] {
            let pad = || match hash {
                OaepHash::Sha256 => rsa::Oaep::new::<sha2::Sha256>(),
                OaepHash::Sha1 => rsa::Oaep::new::<sha1::Sha1>(),
            };
            let ct = theirs
                .to_public_key()
                .encrypt(&mut rand_core::OsRng, pad(), s.expose())
                .unwrap();
            assert!(unwrap_with(&ours, hash, &ct).unwrap().ct_eq(&s));
            let ct = wrap_with(&ours.to_public_key(), hash, &s);
            assert_eq!(&theirs.decrypt(pad(), &ct).unwrap()[..], s.expose());
        }
    }
}
