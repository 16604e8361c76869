//! The 84-byte file header: any bytes are refused with an error (truncated, bad magic,
//! version, flags, authentication), never a panic, never a usable cipher.
#![no_main]
use cmkfs::crypto::SecretKey;
use cmkfs::format::{FileHeader, VolumeKeys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = VolumeKeys::derive(&SecretKey::from_slice(&[3u8; 32]).unwrap(), [1u8; 16]);
    assert!(FileHeader::open(data, &keys).is_err(), "fuzzed bytes opened as a file header");
});
