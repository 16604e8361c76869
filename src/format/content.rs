//! File content: fixed-size plaintext blocks, each sealed independently under the file's
//! DEK. Where the sealed blocks go in the backing file is the layout's business
//! ([`super::layout`]); this module seals and opens one block.
//!
//! A sealed block is `nonce (12) || ciphertext (n) || tag (16)` (stored like that in layout
//! 1; layout 2 keeps nonce and tag in an entry), `n = 4096` for every block but the last.
//! The associated data of block `i` is `file_id (16) || i as u64 big-endian`, so a block
//! cannot be moved to another index or another file without failing its tag check; the key
//! is the file's own DEK on top of that.
//!
//! A block whose stored bytes are all zero is a hole and reads as zeros. That is what a
//! sparse backing file returns for never-written ranges, so holes stay holes on disk. (An
//! attacker can therefore zero a whole block, which reads as zeros instead of EIO; see
//! docs/FORMAT.md, "Limits of the integrity guarantee".)

use crate::crypto::{Aead, AuthFailed, SecretKey, Xaes, NONCE_LEN, TAG_LEN, XNONCE_LEN};

/// Plaintext bytes per block.
pub const BLOCK_SIZE: u64 = 4096;
/// Bytes a block grows by when sealed: nonce and tag.
pub const BLOCK_OVERHEAD: u64 = (NONCE_LEN + TAG_LEN) as u64;
/// Stored bytes of a full block.
pub const CIPHER_BLOCK_SIZE: u64 = BLOCK_SIZE + BLOCK_OVERHEAD;

/// Why a block could not be decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    /// The tag check failed: corrupted, tampered, swapped or moved block.
    Auth,
    /// The stored block has an impossible length.
    Length,
}

/// The content cipher of one file: its DEK and file id.
pub struct ContentCipher {
    aead: Aead,
    /// Format 3: XAES-256-GCM (192-bit nonces) under the same DEK.
    xaes: Option<Xaes>,
    file_id: [u8; 16],
}

impl ContentCipher {
    /// Builds the cipher from a file's DEK and id (formats 1 and 2: AES-256-GCM, 96-bit nonces).
    pub fn new(dek: &SecretKey, file_id: [u8; 16]) -> Self {
        ContentCipher {
            aead: Aead::new(dek),
            xaes: None,
            file_id,
        }
    }

    /// Format 3: XAES-256-GCM under the file's DEK, 24-byte nonces in [`Self::seal_detached`].
    pub fn new_xaes(dek: &SecretKey, file_id: [u8; 16]) -> Self {
        ContentCipher {
            aead: Aead::new(dek),
            xaes: Some(Xaes::new(dek)),
            file_id,
        }
    }

    /// Length of the nonces [`Self::seal_detached`] takes: 12, or 24 with XAES.
    pub fn nonce_len(&self) -> usize {
        if self.xaes.is_some() {
            XNONCE_LEN
        } else {
            NONCE_LEN
        }
    }

    /// The random file id from the file header.
    pub fn file_id(&self) -> &[u8; 16] {
        &self.file_id
    }

    fn aad(&self, index: u64) -> [u8; 24] {
        let mut aad = [0u8; 24];
        aad[..16].copy_from_slice(&self.file_id);
        aad[16..].copy_from_slice(&index.to_be_bytes());
        aad
    }

    /// Seals `plain` (1..=4096 bytes) as block `index` into `out`, which must be exactly
    /// `plain.len() + BLOCK_OVERHEAD` bytes.
    pub fn seal_block(&self, index: u64, plain: &[u8], out: &mut [u8]) {
        self.seal_block_with_nonce(index, &crate::crypto::random_nonce(), plain, out)
    }

    /// [`ContentCipher::seal_block`] with a nonce the caller drew from the OS random source
    /// (the write path draws the nonces of a whole request with one call).
    pub fn seal_block_with_nonce(&self, index: u64, nonce: &[u8; NONCE_LEN], plain: &[u8], out: &mut [u8]) {
        debug_assert!(!plain.is_empty() && plain.len() as u64 <= BLOCK_SIZE);
        debug_assert_eq!(out.len(), plain.len() + BLOCK_OVERHEAD as usize);
        out[..NONCE_LEN].copy_from_slice(nonce);
        let body_end = NONCE_LEN + plain.len();
        out[NONCE_LEN..body_end].copy_from_slice(plain);
        let tag = self
            .aead
            .seal_in_place(nonce, &self.aad(index), &mut out[NONCE_LEN..body_end]);
        out[body_end..].copy_from_slice(&tag);
    }

    /// Layouts 2 and 3: encrypts `buf` (1..=4096 bytes of block `index`) in place under
    /// `nonce` ([`Self::nonce_len`] bytes) and returns the tag; nonce and tag are stored apart
    /// from the ciphertext.
    pub fn seal_detached(&self, index: u64, nonce: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        debug_assert!(!buf.is_empty() && buf.len() as u64 <= BLOCK_SIZE);
        match &self.xaes {
            Some(x) => x.seal_in_place(nonce.try_into().expect("24-byte nonce"), &self.aad(index), buf),
            None => self
                .aead
                .seal_in_place(nonce.try_into().expect("12-byte nonce"), &self.aad(index), buf),
        }
    }

    /// Layout 2: checks `tag` and decrypts `buf` in place. On failure `buf` holds garbage
    /// (zeroed here, so it can never be mistaken for plaintext) and must be read again.
    pub fn open_detached(
        &self,
        index: u64,
        nonce: &[u8],
        tag: &[u8; TAG_LEN],
        buf: &mut [u8],
    ) -> Result<(), BlockError> {
        let r = match (&self.xaes, nonce.len()) {
            (Some(x), XNONCE_LEN) => x.open_in_place(nonce.try_into().unwrap(), &self.aad(index), buf, tag),
            (None, NONCE_LEN) => self
                .aead
                .open_in_place(nonce.try_into().unwrap(), &self.aad(index), buf, tag),
            _ => Err(AuthFailed),
        };
        r.map_err(|AuthFailed| {
            buf.fill(0);
            BlockError::Auth
        })
    }

    /// Opens stored block `index` into `out` (`stored.len() - BLOCK_OVERHEAD` bytes).
    /// An all-zero stored block is a hole and yields zeros.
    pub fn open_block(&self, index: u64, stored: &[u8], out: &mut [u8]) -> Result<(), BlockError> {
        if stored.len() as u64 <= BLOCK_OVERHEAD || stored.len() as u64 > CIPHER_BLOCK_SIZE {
            return Err(BlockError::Length);
        }
        debug_assert_eq!(out.len(), stored.len() - BLOCK_OVERHEAD as usize);
        if is_zero(stored) {
            out.fill(0);
            return Ok(());
        }
        let nonce: [u8; NONCE_LEN] = stored[..NONCE_LEN].try_into().unwrap();
        let tag: [u8; TAG_LEN] = stored[stored.len() - TAG_LEN..].try_into().unwrap();
        out.copy_from_slice(&stored[NONCE_LEN..stored.len() - TAG_LEN]);
        self.aead
            .open_in_place(&nonce, &self.aad(index), out, &tag)
            .map_err(|AuthFailed| {
                out.fill(0);
                BlockError::Auth
            })
    }
}

/// True when every byte is zero. Word-at-a-time; this runs on every block read.
pub fn is_zero(buf: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u64, so viewing the aligned middle as words is sound.
    let (prefix, words, suffix) = unsafe { buf.align_to::<u64>() };
    prefix.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && suffix.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(id: u8) -> ContentCipher {
        ContentCipher::new(&SecretKey::from_slice(&[id; 32]).unwrap(), [id; 16])
    }

    fn seal(c: &ContentCipher, i: u64, p: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; p.len() + BLOCK_OVERHEAD as usize];
        c.seal_block(i, p, &mut out);
        out
    }

    fn open(c: &ContentCipher, i: u64, s: &[u8]) -> Result<Vec<u8>, BlockError> {
        let mut out = vec![0u8; s.len().saturating_sub(BLOCK_OVERHEAD as usize)];
        c.open_block(i, s, &mut out).map(|_| out)
    }

    #[test]
    fn block_roundtrip_and_fresh_nonces() {
        let c = cipher(1);
        let p = vec![0x5a; 4096];
        let a = seal(&c, 3, &p);
        let b = seal(&c, 3, &p);
        assert_ne!(a, b, "every seal must use a fresh nonce");
        assert_eq!(open(&c, 3, &a).unwrap(), p);
        assert_eq!(open(&c, 3, &seal(&c, 3, b"tail")).unwrap(), b"tail");
    }

    #[test]
    fn tamper_is_detected() {
        let c = cipher(1);
        let s = seal(&c, 0, &[9u8; 4096]);
        for bit in [0usize, 12 * 8, 100 * 8 + 3, (s.len() - 1) * 8] {
            let mut t = s.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(open(&c, 0, &t), Err(BlockError::Auth), "bit {bit}");
        }
        // Reordered within the file.
        assert_eq!(open(&c, 1, &s), Err(BlockError::Auth));
        // Moved to another file (other DEK and file id).
        assert_eq!(open(&cipher(2), 0, &s), Err(BlockError::Auth));
        // Same DEK but other file id: the id alone must also bind.
        let same_key_other_id = ContentCipher::new(&SecretKey::from_slice(&[1; 32]).unwrap(), [3; 16]);
        assert_eq!(open(&same_key_other_id, 0, &s), Err(BlockError::Auth));
        // Truncated block.
        assert_eq!(open(&c, 0, &s[..s.len() - 1]), Err(BlockError::Auth));
        assert_eq!(open(&c, 0, &s[..20]).unwrap_err(), BlockError::Length);
    }

    #[test]
    fn zero_block_is_hole() {
        let c = cipher(1);
        assert_eq!(open(&c, 7, &[0u8; 4124]).unwrap(), vec![0u8; 4096]);
        assert_eq!(open(&c, 7, &[0u8; 40]).unwrap(), vec![0u8; 12]);
    }

    #[test]
    fn is_zero_works_unaligned() {
        let mut v = [0u8; 100];
        assert!(is_zero(&v[1..]));
        v[99] = 1;
        assert!(!is_zero(&v[1..]));
        v[99] = 0;
        v[1] = 1;
        assert!(!is_zero(&v[1..]));
    }
}
