//! Block decryption: any stored bytes at any index either decrypt (only all-zero holes can,
//! without the key) or fail with an error; never a panic, never non-zero plaintext.
#![no_main]
use cmkfs::crypto::SecretKey;
use cmkfs::format::{ContentCipher, BLOCK_OVERHEAD, CIPHER_BLOCK_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let index = u64::from_le_bytes(data[..8].try_into().unwrap());
    let stored = &data[8..];
    let cipher = ContentCipher::new(&SecretKey::from_slice(&[5u8; 32]).unwrap(), [2u8; 16]);
    let plain_len = (stored.len() as u64).saturating_sub(BLOCK_OVERHEAD).min(CIPHER_BLOCK_SIZE) as usize;
    let mut out = vec![0xAAu8; plain_len];
    if cipher.open_block(index, stored, &mut out).is_ok() {
        assert!(out.iter().all(|&b| b == 0), "forged block decrypted to non-zero plaintext");
    }
});
