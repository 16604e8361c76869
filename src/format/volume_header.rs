//! The volume header, `cmkfs.volume` at the root of the cipher directory.
//!
//! It is a JSON document `{"body": {...}, "mac": "<base64>"}`. The MAC is HMAC-SHA256 over the
//! exact bytes of `body` as stored (no re-serialisation, so no canonicalisation pitfalls),
//! keyed by a key derived from the volume key. Parsing happens before the volume key is
//! known; [`ParsedHeader::verify`] must be called after a keyslot was unwrapped and before
//! anything else trusts the body. A header whose MAC fails was tampered with (or the
//! keyslot unwrapped to a wrong key) and the volume is refused.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::crypto::{self, Aead, SecretKey};

/// File name of the volume header in the cipher directory's root.
pub const VOLUME_HEADER_NAME: &str = "cmkfs.volume";
/// Names in the cipher root that belong to cmkfs and are hidden from the plaintext view.
pub fn is_reserved_root_name(name: &[u8]) -> bool {
    name.starts_with(VOLUME_HEADER_NAME.as_bytes())
}
/// The `format` string of a volume header.
pub const FORMAT_NAME: &str = "cmkfs-volume";
/// The format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 3;
/// Feature flags this build understands. A header that requires any other is refused with
/// a message naming it (filename encryption will be the first).
pub const KNOWN_FEATURES: &[&str] = &[];
/// Default key-wrapping algorithm of keyslots (formats 1 and 2).
pub const SLOT_ALGORITHM: &str = "RSA-OAEP-SHA256";
/// The other keyslot algorithm formats 1 and 2 allow: RSA-OAEP with SHA-1 and MGF1-SHA1, for
/// tokens that implement nothing else (SoftHSM2 2.6, many HSMs). Builds before 0.2 refuse
/// such keyslots with a clear error rather than misreading them.
pub const SLOT_ALGORITHM_SHA1: &str = "RSA-OAEP-SHA1";

/// Keys derived from the volume key. Held only while the volume is unlocked.
pub struct VolumeKeys {
    volume_id: [u8; 16],
    dek_wrap: Aead,
    header_mac: SecretKey,
    xattr: Aead,
    layout: super::layout::Layout,
    commitment: [u8; 32],
    rekey_journal: SecretKey,
    /// Format 3's name keys (derived for every volume, used only by format 3).
    names: super::names::NameKeys,
}

impl VolumeKeys {
    /// Derives the purpose keys (HKDF-SHA256, salt = volume id).
    pub fn derive(volume_key: &SecretKey, volume_id: [u8; 16]) -> Self {
        VolumeKeys {
            volume_id,
            dek_wrap: Aead::new(&volume_key.derive(&volume_id, b"cmkfs v1 dek-wrap")),
            header_mac: volume_key.derive(&volume_id, b"cmkfs v1 header-mac"),
            xattr: Aead::new(&volume_key.derive(&volume_id, b"cmkfs v1 xattr")),
            layout: super::layout::Layout::for_format(FORMAT_VERSION),
            commitment: *volume_key.derive(&volume_id, b"cmkfs v1 key-commitment").expose(),
            rekey_journal: volume_key.derive(&volume_id, b"cmkfs v1 rekey-journal"),
            names: super::names::NameKeys::new(
                crypto::Siv::new(&volume_key.derive(&volume_id, b"cmkfs v3 names")),
                crypto::Xaes::new(&volume_key.derive(&volume_id, b"cmkfs v3 symlinks")),
                crypto::Siv::new(&volume_key.derive(&volume_id, b"cmkfs v3 xattr-names")),
                crypto::Xaes::new(&volume_key.derive(&volume_id, b"cmkfs v3 xattr-values")),
            ),
        }
    }
    /// A commitment to the volume key (HKDF-SHA256 output under its own label; reveals
    /// nothing about the key). A host pins it, so that a header wrapping a different volume key
    /// (key substitution: anyone can wrap a key of their choosing to a KEK's public key) is
    /// refused however validly it is MACed.
    pub fn commitment(&self) -> &[u8; 32] {
        &self.commitment
    }
    /// The key that authenticates rekey journals kept in the cipher root.
    pub fn rekey_journal_key(&self) -> &SecretKey {
        &self.rekey_journal
    }
    /// The same keys for a volume of format `version` (which decides the content layout).
    pub fn for_format(mut self, version: u32) -> Self {
        self.layout = super::layout::Layout::for_format(version);
        self
    }
    /// How file content is laid out in this volume.
    pub fn layout(&self) -> super::layout::Layout {
        self.layout
    }
    /// The volume id these keys belong to.
    pub fn volume_id(&self) -> &[u8; 16] {
        &self.volume_id
    }
    /// The AEAD that wraps file DEKs.
    pub fn dek_wrap(&self) -> &Aead {
        &self.dek_wrap
    }
    /// Format 3: the keys of names, symlink targets and extended attributes; `None` for
    /// formats 1 and 2, which store them in clear (xattr values under [`VolumeKeys::xattr`]).
    pub fn names(&self) -> Option<&super::names::NameKeys> {
        (self.layout == super::layout::Layout::V3).then_some(&self.names)
    }
    /// The AEAD that seals extended attribute values.
    pub fn xattr(&self) -> &Aead {
        &self.xattr
    }
}

/// What a keyslot is for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SlotRole {
    /// The KEK the volume is mounted and revalidated with.
    Primary,
    /// An escrow KEK for an administrator's explicit recovery.
    Recovery,
}

/// One KEK's wrapping of the volume key.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Keyslot {
    /// Slot number, unique within the header.
    pub id: u32,
    /// Primary or recovery.
    pub role: SlotRole,
    /// The KEK URI as the user gave it (versionless URIs follow the newest version).
    pub kek_uri: String,
    /// URI scheme of the provider (`local`, `pem`, ...).
    pub provider: String,
    /// The provider's name for the key.
    pub key_id: String,
    /// The key version that made `wrapped_key`; unwrap asks the provider for this version.
    pub key_version: String,
    /// SHA-256 of the KEK's public key (DER SubjectPublicKeyInfo), hex. Lets `--kek` find
    /// its slot when a key moved to another URI.
    pub kek_fingerprint: String,
    /// [`SLOT_ALGORITHM`], or [`SLOT_ALGORITHM_SHA1`] for tokens that implement nothing else.
    pub algorithm: String,
    /// The volume key wrapped by the KEK, base64.
    pub wrapped_key: String,
    /// When the slot was written (RFC 3339).
    pub created: String,
}

impl Keyslot {
    /// The wrapped volume key bytes.
    pub fn wrapped_bytes(&self) -> Result<Vec<u8>, VolumeHeaderError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.wrapped_key)
            .map_err(|_| VolumeHeaderError::BadField(format!("keyslot {} wrapped_key is not base64", self.id)))
    }
}

/// The authenticated body of the volume header.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct VolumeHeader {
    /// Always `cmkfs-volume`.
    pub format: String,
    /// Format version (1 or 2; 2 is written by this build, see docs/FORMAT.md).
    pub version: u32,
    /// Random volume id, 32 hex digits.
    pub volume_id: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Incremented on every rewrite of the header (rotation, keyslot changes).
    pub generation: u64,
    /// Plaintext block size (4096 in formats 1 and 2).
    pub block_size: u32,
    /// Content cipher (`AES-256-GCM` in formats 1 and 2).
    pub cipher: String,
    /// Required feature flags.
    pub features: Vec<String>,
    /// KEK wrappings of the volume key.
    pub keyslots: Vec<Keyslot>,
}

#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    #[serde(borrow)]
    body: &'a RawValue,
    mac: String,
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    body: &'a RawValue,
    mac: String,
}

/// A header that was read but not yet authenticated.
pub struct ParsedHeader {
    /// The body; not trustworthy until [`ParsedHeader::verify`] returned `Ok`.
    pub header: VolumeHeader,
    body_bytes: Vec<u8>,
    mac: Vec<u8>,
}

/// What can be wrong with a volume header.
#[derive(Debug, thiserror::Error)]
pub enum VolumeHeaderError {
    /// Not parseable.
    #[error("volume header is not valid (corrupted or not a cmkfs volume): {0}")]
    Malformed(String),
    /// Newer format.
    #[error("volume format version {0} is newer than this cmkfs supports ({FORMAT_VERSION}); upgrade cmkfs")]
    UnsupportedVersion(u32),
    /// Feature this build does not know.
    #[error("volume requires feature '{0}', which this cmkfs does not support; upgrade cmkfs")]
    UnsupportedFeature(String),
    /// A field has a value this build does not accept.
    #[error("volume header field invalid: {0}")]
    BadField(String),
    /// MAC failure.
    #[error("volume header failed authentication: it was modified after it was written (tampering or corruption), or the key unwrapped a different volume key")]
    Tampered,
}

impl VolumeHeader {
    /// A new header body with no keyslots yet.
    pub fn new(volume_id: [u8; 16], created: String) -> Self {
        VolumeHeader {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            volume_id: crypto::hex(&volume_id),
            created,
            generation: 1,
            block_size: super::BLOCK_SIZE as u32,
            cipher: "AES-256-GCM".into(),
            features: vec![],
            keyslots: vec![],
        }
    }

    /// The volume id as bytes (validated by [`VolumeHeader::parse`]).
    pub fn volume_id_bytes(&self) -> [u8; 16] {
        crypto::unhex(&self.volume_id)
            .and_then(|v| v.try_into().ok())
            .expect("volume id validated at parse time")
    }

    /// Serialises and MACs the header into the bytes to store.
    pub fn seal(&self, keys: &VolumeKeys) -> Vec<u8> {
        let body = serde_json::to_string_pretty(self).expect("header serialises");
        let mac = crypto::hmac_sha256(&keys.header_mac, body.as_bytes());
        let raw = RawValue::from_string(body).expect("valid JSON");
        let env = EnvelopeOut {
            body: &raw,
            mac: base64::engine::general_purpose::STANDARD.encode(mac),
        };
        let mut out = serde_json::to_vec(&env).expect("envelope serialises");
        out.push(b'\n');
        out
    }

    /// Parses stored bytes and checks everything that can be checked without the key.
    pub fn parse(bytes: &[u8]) -> Result<ParsedHeader, VolumeHeaderError> {
        let env: EnvelopeIn<'_> =
            serde_json::from_slice(bytes).map_err(|e| VolumeHeaderError::Malformed(e.to_string()))?;
        let header: VolumeHeader =
            serde_json::from_str(env.body.get()).map_err(|e| VolumeHeaderError::Malformed(e.to_string()))?;
        if header.format != FORMAT_NAME {
            return Err(VolumeHeaderError::Malformed(format!(
                "format is '{}', not '{FORMAT_NAME}'",
                header.format
            )));
        }
        if header.version > FORMAT_VERSION || header.version == 0 {
            return Err(VolumeHeaderError::UnsupportedVersion(header.version));
        }
        if let Some(f) = header.features.iter().find(|f| !KNOWN_FEATURES.contains(&f.as_str())) {
            return Err(VolumeHeaderError::UnsupportedFeature(f.clone()));
        }
        if header.block_size != super::BLOCK_SIZE as u32 {
            return Err(VolumeHeaderError::BadField(format!(
                "block_size {} (only 4096 is defined)",
                header.block_size
            )));
        }
        if header.cipher != "AES-256-GCM" {
            return Err(VolumeHeaderError::BadField(format!(
                "cipher '{}' (only AES-256-GCM is defined)",
                header.cipher
            )));
        }
        if crypto::unhex(&header.volume_id).map(|v| v.len()) != Some(16) {
            return Err(VolumeHeaderError::BadField("volume_id must be 32 hex digits".into()));
        }
        if header.keyslots.is_empty() {
            return Err(VolumeHeaderError::BadField("no keyslots".into()));
        }
        for s in &header.keyslots {
            if s.algorithm != SLOT_ALGORITHM && s.algorithm != SLOT_ALGORITHM_SHA1 {
                return Err(VolumeHeaderError::BadField(format!(
                    "keyslot {} algorithm '{}'",
                    s.id, s.algorithm
                )));
            }
        }
        let mac = base64::engine::general_purpose::STANDARD
            .decode(&env.mac)
            .map_err(|_| VolumeHeaderError::Malformed("mac is not base64".into()))?;
        Ok(ParsedHeader {
            header,
            body_bytes: env.body.get().as_bytes().to_vec(),
            mac,
        })
    }
}

impl ParsedHeader {
    /// Authenticates the body with keys derived from the unwrapped volume key.
    pub fn verify(&self, keys: &VolumeKeys) -> Result<(), VolumeHeaderError> {
        if keys.volume_id() != &self.header.volume_id_bytes() {
            return Err(VolumeHeaderError::Tampered);
        }
        if crypto::hmac_sha256_verify(&keys.header_mac, &self.body_bytes, &self.mac) {
            Ok(())
        } else {
            Err(VolumeHeaderError::Tampered)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (VolumeHeader, VolumeKeys) {
        let vk = SecretKey::random();
        let mut h = VolumeHeader::new([9; 16], "2026-01-01T00:00:00Z".into());
        h.keyslots.push(Keyslot {
            id: 0,
            role: SlotRole::Primary,
            kek_uri: "local:/k/a".into(),
            provider: "local".into(),
            key_id: "a".into(),
            key_version: "1".into(),
            kek_fingerprint: "00".into(),
            algorithm: SLOT_ALGORITHM.into(),
            wrapped_key: "AAAA".into(),
            created: "2026-01-01T00:00:00Z".into(),
        });
        (h, VolumeKeys::derive(&vk, [9; 16]))
    }

    #[test]
    fn seal_parse_verify() {
        let (h, k) = sample();
        let bytes = h.seal(&k);
        let p = VolumeHeader::parse(&bytes).unwrap();
        p.verify(&k).unwrap();
        assert_eq!(p.header.keyslots[0].kek_uri, "local:/k/a");
    }

    #[test]
    fn tampering_any_field_is_detected() {
        let (h, k) = sample();
        let bytes = String::from_utf8(h.seal(&k)).unwrap();
        for (from, to) in [
            ("local:/k/a", "local:/k/b"),
            ("\"generation\": 1", "\"generation\": 2"),
            ("primary", "recovery"),
        ] {
            let t = bytes.replacen(from, to, 1);
            assert_ne!(t, bytes);
            let p = VolumeHeader::parse(t.as_bytes()).unwrap();
            assert!(
                matches!(p.verify(&k), Err(VolumeHeaderError::Tampered)),
                "{from} -> {to}"
            );
        }
        let other = VolumeKeys::derive(&SecretKey::random(), [9; 16]);
        assert!(VolumeHeader::parse(bytes.as_bytes()).unwrap().verify(&other).is_err());
    }

    #[test]
    fn unknown_feature_and_version_refused() {
        let (mut h, k) = sample();
        h.features.push("filename-encryption-v9".into());
        let e = VolumeHeader::parse(&h.seal(&k)).err().unwrap();
        assert!(e.to_string().contains("filename-encryption-v9"), "{e}");
        let (mut h, k) = sample();
        h.version = FORMAT_VERSION + 1;
        assert!(matches!(
            VolumeHeader::parse(&h.seal(&k)),
            Err(VolumeHeaderError::UnsupportedVersion(v)) if v == FORMAT_VERSION + 1
        ));
        assert!(matches!(
            VolumeHeader::parse(b"garbage"),
            Err(VolumeHeaderError::Malformed(_))
        ));
    }
}
