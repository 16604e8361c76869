//! Secrets in memory: the zeroizing key type, constant-time comparison, randomness, and
//! reads of secret data that leave no copies behind.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of every symmetric key cmkfs uses (AES-256).
pub const KEY_LEN: usize = 32;

/// A 256-bit secret. Zeroized on drop; `Debug` prints nothing secret.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn random() -> Self {
        let mut k = [0u8; KEY_LEN];
        fill_random(&mut k);
        SecretKey(k)
    }

    /// Takes ownership of a key array (the crypto module's own constructors).
    pub(super) fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SecretKey(bytes)
    }

    /// Takes ownership of key bytes. Returns `None` unless exactly 32 bytes are given.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(SecretKey(arr))
    }

    /// The raw key bytes, for handing to a cipher or a key provider's wrap call.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Compares two keys in constant time. `SecretKey` has no `==` on purpose.
    pub fn ct_eq(&self, other: &SecretKey) -> bool {
        ct_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Fills `buf` from the OS random source (getrandom(2)). Aborts the operation by panic only if
/// the kernel cannot supply randomness, which on Linux does not happen after boot.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::getrandom(buf).expect("the OS random source failed");
}

/// Compares two byte strings in constant time (for equal lengths; the length itself is not
/// secret). Use it for anything secret instead of `==`.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Reads `r` to its end into one zeroizing buffer of `initial` bytes' capacity, refusing
/// more than `max` bytes. When the buffer must grow, the new one is a fresh zeroizing
/// allocation and the old one is zeroized when dropped, so no copy of the data is left behind
/// in freed memory (as `read_to_end`'s reallocations would). `Ok(None)`: more than `max`.
pub fn read_zeroizing(
    mut r: impl std::io::Read,
    initial: usize,
    max: usize,
) -> std::io::Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
    let mut buf = zeroize::Zeroizing::new(vec![0u8; initial.clamp(1, max.max(1))]);
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len >= max {
                // Full: one more byte means too much.
                let mut probe = [0u8; 1];
                return match r.read(&mut probe) {
                    Ok(0) => Ok(Some(buf)),
                    Ok(_) => {
                        probe.zeroize();
                        Ok(None)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
            }
            let mut bigger = zeroize::Zeroizing::new(vec![0u8; (len * 2).min(max)]);
            bigger[..len].copy_from_slice(&buf[..len]);
            buf = bigger;
        }
        match r.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_key() {
        let k = SecretKey::from_slice(&[0xab; 32]).unwrap();
        let s = format!("{k:?}");
        assert!(!s.contains("ab") && !s.contains("171"), "{s}");
    }

    #[test]
    fn constant_time_equality() {
        let a = SecretKey::from_slice(&[1u8; 32]).unwrap();
        let mut b = [1u8; 32];
        assert!(a.ct_eq(&SecretKey::from_slice(&b).unwrap()));
        b[31] = 2;
        assert!(!a.ct_eq(&SecretKey::from_slice(&b).unwrap()));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn bounded_zeroizing_reads() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let got = read_zeroizing(&data[..], 64, 5000).unwrap().unwrap();
        assert_eq!(&got[..], &data[..]);
        assert!(
            read_zeroizing(&data[..], 64, 4999).unwrap().is_none(),
            "one byte too many"
        );
        assert!(read_zeroizing(&data[..], 8192, 4999).unwrap().is_none());
        let got = read_zeroizing(&data[..10], 4096, 4096).unwrap().unwrap();
        assert_eq!(&got[..], &data[..10]);
        assert!(read_zeroizing(&b""[..], 16, 16).unwrap().unwrap().is_empty());
    }
}
