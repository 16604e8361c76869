//! Hex encoding of ids and digests (file ids in journal names, fingerprints, chain hashes).

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lower- or upper-case hex: an even number of ASCII hex digits, nothing else (no
/// sign, no prefix, no whitespace).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    b.chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip() {
        assert_eq!(unhex(&hex(&[0, 1, 0xfe, 0xff])).unwrap(), vec![0, 1, 0xfe, 0xff]);
        assert_eq!(unhex("ABcd").unwrap(), vec![0xab, 0xcd]);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
        // u8::from_str_radix would take these.
        assert!(unhex("+f").is_none());
        assert!(unhex("-1").is_none());
        assert!(unhex("é1").is_none());
    }
}
