//! The on-disk format, versions 1 and 2 (new volumes are format 2). docs/FORMAT.md is the
//! prose version of this module; the two must agree, and the golden volumes under
//! tests/golden/ hold us to it.
//!
//! Pure: no I/O and no global state. It parses, builds, seals and opens byte buffers and
//! computes where things are; the store (`crate::store`) and the volume (`crate::volume`) do
//! the reading and writing. The format version is an explicit argument (carried by
//! [`VolumeKeys::layout`]).
//!
//! - [`volume_header`]: the volume header (`cmkfs.volume` at the root of the cipher
//!   directory): keyslots wrapping the volume key, authenticated with a MAC derived from the
//!   volume key.
//! - [`file_header`]: the 84-byte file header: random file id and the file's DEK wrapped by
//!   the volume key.
//! - [`content`]: sealing and opening one block of file content (4 KiB plaintext blocks,
//!   AES-256-GCM, file id and block index bound as associated data).
//! - [`layout`]: where blocks live in the backing file ([`layout::v1`], [`layout::v2`]),
//!   write plans, entries and slot choice.
//! - [`names`]: format 3's encrypted names, long names, symlink targets and xattr names.
//! - [`journal`]: the rekey journal's names and authenticated binding record.

pub mod content;
pub mod file_header;
pub mod journal;
pub mod layout;
pub mod names;
pub mod volume_header;

pub use content::{BlockError, ContentCipher, BLOCK_OVERHEAD, BLOCK_SIZE, CIPHER_BLOCK_SIZE};
pub use file_header::{FileHeader, FILE_HEADER_LEN};
pub use layout::Layout;
pub use volume_header::{Keyslot, VolumeHeader, VolumeKeys, VOLUME_HEADER_NAME};

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
