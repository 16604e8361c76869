//! The rekey journal's names and its binding record: which file a journal belongs to,
//! authenticated under a key derived from the volume key. The store's
//! [`crate::store::journal`] writes, finds and replays journals; see there for the protocol.

use crate::crypto;

use super::volume_header::VOLUME_HEADER_NAME;
use super::VolumeKeys;

/// Journal names start with `cmkfs.volume.` followed by this.
pub const PREFIX: &str = "rekey.";
const BIND_LEN: usize = 16 + 16 + 8 + 8 + 8;
const BIND_LABEL: &[u8] = b"cmkfs rekey journal binding v1\0";

/// Journal names of one rekey (relative to the cipher root).
pub struct Journal {
    /// The journal while being written.
    pub tmp: String,
    /// The committed journal.
    pub done: String,
    /// The authenticated binding record.
    pub bind: String,
}

impl Journal {
    /// Journal names for a rekey to `new_file_id`.
    pub fn new(new_file_id: &[u8; 16]) -> Self {
        let base = format!("{VOLUME_HEADER_NAME}.{PREFIX}{}", crypto::hex(new_file_id));
        Journal {
            tmp: format!("{base}.tmp"),
            bind: format!("{base}.bind"),
            done: base,
        }
    }
}

/// What a journal belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// File id before the rekey.
    pub old_file_id: [u8; 16],
    /// File id after it (the journal's own).
    pub new_file_id: [u8; 16],
    /// Backing device of the file.
    pub dev: u64,
    /// Backing inode of the file.
    pub ino: u64,
    /// Ciphertext length of the journal.
    pub len: u64,
}

impl Binding {
    fn body(&self) -> [u8; BIND_LEN] {
        let mut b = [0u8; BIND_LEN];
        b[..16].copy_from_slice(&self.old_file_id);
        b[16..32].copy_from_slice(&self.new_file_id);
        b[32..40].copy_from_slice(&self.dev.to_be_bytes());
        b[40..48].copy_from_slice(&self.ino.to_be_bytes());
        b[48..56].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    fn mac_input(&self, keys: &VolumeKeys) -> Vec<u8> {
        let mut m = BIND_LABEL.to_vec();
        m.extend_from_slice(keys.volume_id());
        m.extend_from_slice(&self.body());
        m
    }

    /// The stored record: body and HMAC-SHA256 under the volume's journal key.
    pub fn seal(&self, keys: &VolumeKeys) -> Vec<u8> {
        let mut out = self.body().to_vec();
        out.extend_from_slice(&crypto::hmac_sha256(keys.rekey_journal_key(), &self.mac_input(keys)));
        out
    }

    /// Parses and authenticates a stored record.
    pub fn open(bytes: &[u8], keys: &VolumeKeys) -> Option<Binding> {
        if bytes.len() != BIND_LEN + 32 {
            return None;
        }
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().unwrap());
        let b = Binding {
            old_file_id: bytes[..16].try_into().unwrap(),
            new_file_id: bytes[16..32].try_into().unwrap(),
            dev: u64_at(32),
            ino: u64_at(40),
            len: u64_at(48),
        };
        crypto::hmac_sha256_verify(keys.rekey_journal_key(), &b.mac_input(keys), &bytes[BIND_LEN..]).then_some(b)
    }
}
