//! The file header: the first 84 bytes of every non-empty backing file.
//!
//! ```text
//! offset  len  field
//!      0    4  magic "CMKF"
//!      4    2  file format version, u16 big-endian: the layout, 1, 2 or 3 (see [`super::layout`])
//!      6    2  flags, u16 big-endian (0; any unknown bit makes the file unreadable)
//!      8   16  file id (random)
//!     24   12  nonce of the wrapped DEK
//!     36   32  DEK, AES-256-GCM under the volume's DEK-wrapping key
//!     68   16  tag
//! ```
//! The DEK's associated data is `"cmkfs-dek-v1" || volume id || header bytes 0..24`, so a
//! header cannot be moved to another volume, and magic, version, flags and file id cannot be
//! changed without the DEK failing to unwrap. A header copied onto another file of the same
//! volume gives that file the copied DEK and id: its own blocks then fail their tags (EIO).

use crate::crypto::{SecretKey, NONCE_LEN, TAG_LEN};

use super::content::ContentCipher;
use super::volume_header::VolumeKeys;

/// Length of the file header in bytes.
pub const FILE_HEADER_LEN: u64 = 84;
const MAGIC: &[u8; 4] = b"CMKF";
const DEK_AAD_LABEL: &[u8] = b"cmkfs-dek-v1";

/// Why a file header could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Shorter than 84 bytes: a truncated file.
    #[error("file header truncated")]
    Truncated,
    /// Wrong magic: not a cmkfs file, or garbled.
    #[error("file header has a bad magic number (not a cmkfs file, or garbled)")]
    BadMagic,
    /// A version this build does not know.
    #[error("file header version {0} is not supported by this cmkfs")]
    UnsupportedVersion(u16),
    /// Flags this build does not know.
    #[error("file header has unsupported flags {0:#06x}")]
    UnsupportedFlags(u16),
    /// The wrapped DEK failed its tag: tampered header, or from another volume.
    #[error("file header failed authentication (tampered, or from another volume)")]
    Auth,
}

/// Parsed and authenticated file header.
pub struct FileHeader;

impl FileHeader {
    /// Makes a header for a new file: fresh file id and DEK. Returns the bytes to store and
    /// the content cipher to use.
    pub fn create(keys: &VolumeKeys) -> ([u8; FILE_HEADER_LEN as usize], ContentCipher) {
        let mut h = [0u8; FILE_HEADER_LEN as usize];
        h[..4].copy_from_slice(MAGIC);
        h[4..6].copy_from_slice(&keys.layout().file_version().to_be_bytes());
        h[6..8].copy_from_slice(&0u16.to_be_bytes());
        let mut file_id = [0u8; 16];
        crate::crypto::fill_random(&mut file_id);
        h[8..24].copy_from_slice(&file_id);
        let dek = SecretKey::random();
        let nonce = crate::crypto::random_nonce();
        h[24..36].copy_from_slice(&nonce);
        h[36..68].copy_from_slice(dek.expose());
        let aad = dek_aad(keys.volume_id(), &h[..24]);
        let tag = keys.dek_wrap().seal_in_place(&nonce, &aad, &mut h[36..68]);
        h[68..84].copy_from_slice(&tag);
        (h, content_cipher(keys, &dek, file_id))
    }

    /// Parses and authenticates a stored header, returning the file's content cipher.
    pub fn open(bytes: &[u8], keys: &VolumeKeys) -> Result<ContentCipher, HeaderError> {
        if bytes.len() < FILE_HEADER_LEN as usize {
            return Err(HeaderError::Truncated);
        }
        if &bytes[..4] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        if version != keys.layout().file_version() {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let flags = u16::from_be_bytes([bytes[6], bytes[7]]);
        if flags != 0 {
            return Err(HeaderError::UnsupportedFlags(flags));
        }
        let file_id: [u8; 16] = bytes[8..24].try_into().unwrap();
        let nonce: [u8; NONCE_LEN] = bytes[24..36].try_into().unwrap();
        let tag: [u8; TAG_LEN] = bytes[68..84].try_into().unwrap();
        let mut dek = zeroize::Zeroizing::new([0u8; 32]);
        dek.copy_from_slice(&bytes[36..68]);
        let aad = dek_aad(keys.volume_id(), &bytes[..24]);
        keys.dek_wrap()
            .open_in_place(&nonce, &aad, &mut dek[..], &tag)
            .map_err(|_| HeaderError::Auth)?;
        let dek = SecretKey::from_slice(&dek[..]).expect("32 bytes");
        Ok(content_cipher(keys, &dek, file_id))
    }
}

/// The content cipher of a file of this volume's layout: XAES-256-GCM in format 3.
fn content_cipher(keys: &VolumeKeys, dek: &SecretKey, file_id: [u8; 16]) -> ContentCipher {
    if keys.layout().nonce_len() == crate::crypto::XNONCE_LEN {
        ContentCipher::new_xaes(dek, file_id)
    } else {
        ContentCipher::new(dek, file_id)
    }
}

fn dek_aad(volume_id: &[u8; 16], header_prefix: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(DEK_AAD_LABEL.len() + 16 + 24);
    aad.extend_from_slice(DEK_AAD_LABEL);
    aad.extend_from_slice(volume_id);
    aad.extend_from_slice(header_prefix);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::content::BLOCK_OVERHEAD;

    fn keys() -> VolumeKeys {
        VolumeKeys::derive(&SecretKey::random(), [1; 16])
    }

    #[test]
    fn create_open_roundtrip() {
        let k = keys();
        let (h, c) = FileHeader::create(&k);
        let c2 = FileHeader::open(&h, &k).unwrap();
        assert_eq!(c.file_id(), c2.file_id());
        let mut s = vec![0u8; 10 + BLOCK_OVERHEAD as usize];
        c.seal_block(0, b"0123456789", &mut s);
        let mut out = vec![0u8; 10];
        c2.open_block(0, &s, &mut out).unwrap();
        assert_eq!(&out, b"0123456789");
    }

    #[test]
    fn every_bit_of_the_header_is_authenticated() {
        let k = keys();
        let (h, _) = FileHeader::create(&k);
        for i in 0..h.len() * 8 {
            let mut t = h;
            t[i / 8] ^= 1 << (i % 8);
            assert!(FileHeader::open(&t, &k).is_err(), "bit {i} flip undetected");
        }
        assert_eq!(FileHeader::open(&h[..50], &k).err(), Some(HeaderError::Truncated));
    }

    #[test]
    fn header_from_other_volume_is_refused() {
        let vk = SecretKey::random();
        let a = VolumeKeys::derive(&vk, [1; 16]);
        let b = VolumeKeys::derive(&vk, [2; 16]);
        let (h, _) = FileHeader::create(&a);
        assert_eq!(FileHeader::open(&h, &b).err(), Some(HeaderError::Auth));
    }

    #[test]
    fn header_swap_between_files_makes_blocks_fail() {
        let k = keys();
        let (h1, c1) = FileHeader::create(&k);
        let (_h2, c2) = FileHeader::create(&k);
        let mut s = vec![0u8; 4 + BLOCK_OVERHEAD as usize];
        c2.seal_block(0, b"abcd", &mut s);
        // File 2's block read with file 1's header (swapped in) must fail.
        let swapped = FileHeader::open(&h1, &k).unwrap();
        let mut out = [0u8; 4];
        assert!(swapped.open_block(0, &s, &mut out).is_err());
        drop(c1);
    }
}
