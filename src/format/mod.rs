//! The on-disk format, version 1. docs/FORMAT.md is the prose version of this module; the
//! two must agree, and the golden volumes under tests/golden/ hold us to it.
//!
//! - [`volume`]: the volume header (`cmkfs.volume` at the root of the cipher directory):
//!   keyslots wrapping the volume key, authenticated with a MAC derived from the volume key.
//! - [`file`]: the 84-byte file header: random file id and the file's DEK wrapped by the
//!   volume key.
//! - [`content`]: the block layout of file content (4 KiB plaintext blocks, AES-256-GCM,
//!   file id and block index bound as associated data, all-zero blocks are holes).

pub mod content;
pub mod file;
pub mod layout;
pub mod volume;

pub use content::{ContentCipher, BLOCK_OVERHEAD, BLOCK_SIZE, CIPHER_BLOCK_SIZE};
pub use file::{FileHeader, FILE_HEADER_LEN};
pub use layout::Layout;
pub use volume::{Keyslot, VolumeHeader, VolumeKeys, VOLUME_HEADER_NAME};

/// Associated data of an extended attribute value: `"cmkfs-xattr-v1\0" || name`, so a value
/// cannot be moved to another attribute name. Values are sealed with the volume's xattr key
/// ([`VolumeKeys::xattr`]) as `nonce || ciphertext || tag`.
pub fn xattr_aad(name: &[u8]) -> Vec<u8> {
    const LABEL: &[u8] = b"cmkfs-xattr-v1\0";
    let mut aad = Vec::with_capacity(LABEL.len() + name.len());
    aad.extend_from_slice(LABEL);
    aad.extend_from_slice(name);
    aad
}
