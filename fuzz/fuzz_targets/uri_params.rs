//! KEK URI parameter parsing (percent-decoding, name=value lists): errors, never panics.
#![no_main]
use cmkfs::kms::params::{parse_params, percent_decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = percent_decode(s);
        if let Ok(m) = parse_params(s, '&', &["key", "timeout", "wrap", "token"]) {
            assert!(m.keys().all(|k| ["key", "timeout", "wrap", "token"].contains(&k.as_str())));
        }
    }
});
