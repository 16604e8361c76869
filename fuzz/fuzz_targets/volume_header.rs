//! The volume header parser (`cmkfs.volume`): any bytes must parse or be refused with an
//! error, never panic; a parsed header never verifies under an unrelated key.
#![no_main]
use cmkfs::crypto::SecretKey;
use cmkfs::format::{VolumeHeader, VolumeKeys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = VolumeHeader::parse(data) {
        let keys = VolumeKeys::derive(&SecretKey::from_slice(&[9u8; 32]).unwrap(), parsed.header.volume_id_bytes());
        assert!(parsed.verify(&keys).is_err(), "a fuzzed header verified under a key nobody used");
        for slot in &parsed.header.keyslots {
            let _ = slot.wrapped_bytes();
        }
    }
});
