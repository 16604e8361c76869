//! Format 3: names, symlink targets and extended attribute names, encrypted.
//!
//! **Names.** Every directory of a format-3 volume holds a random 16-byte *directory IV* in
//! a file [`DIRIV_NAME`]. The backing name of plaintext name `n` in that directory is
//! `base64url(AES-256-GCM-SIV(name key, nonce = IV[0..12], ad = "cmkfs-name-v3\0" || IV,
//! pad16(n)))` without padding characters: deterministic within the directory (a lookup is
//! one computation), different for the same name in another directory, authenticated (a
//! changed backing name does not decrypt; it is hidden, not shown as another name). Names
//! are padded with NUL bytes (which a name cannot contain) to a multiple of 16 bytes, so
//! the length of a name shows only to 16 bytes, as in gocryptfs.
//!
//! **Long names.** A name whose encoding is longer than 255 bytes (plaintext names over 160
//! bytes) is stored as `cmkfs.long.<base64url(SHA-256(encoding))>`, and the encoding itself
//! in a side file `<that name>.name` in the same directory. The side file is authenticated
//! by the hash in the entry's name (and its content by GCM-SIV): a side file that does not
//! hash to its entry's name is ignored. (gocryptfs's `gocryptfs.longname.*` scheme.)
//!
//! Base64url has no `.`, so an encrypted name can never be one of cmkfs's own names, all of
//! which start with `cmkfs.` ([`is_internal`]): the volume header's `cmkfs.volume*`
//! names, the directory IV, long-name entries and side files, temporary names. Those are
//! impossible to create through the mount by construction.
//!
//! **Symlink targets** are sealed with XAES-256-GCM under their own key, associated data
//! `"cmkfs-symlink-v3"`, and stored base64url as the backing symlink's target.
//!
//! **Extended attribute names** `user.X` are stored as `user.` + base64url(AES-256-GCM-SIV
//! of pad16(X), under their own key, fixed nonce): deterministic across the volume, like
//! gocryptfs's. Their values are bound to their file: see [`xattr_value_aad`].
//!
//! Pure: the store and the FUSE layer do the I/O.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;

use crate::crypto::{sha256, Siv, Xaes, TAG_LEN, XNONCE_LEN};

/// The directory IV's file in every directory of a format-3 volume.
pub const DIRIV_NAME: &str = "cmkfs.diriv";
/// Length of a directory IV.
pub const DIRIV_LEN: usize = 16;
/// Prefix of long-name entries.
pub const LONG_PREFIX: &str = "cmkfs.long.";
/// Suffix of a long name's side file.
pub const LONG_RECORD_SUFFIX: &str = ".name";
/// Prefix of temporary names (a directory being made, a side file being written).
pub const TMP_PREFIX: &str = "cmkfs.tmp.";
/// Longest backing name (NAME_MAX).
pub const NAME_MAX: usize = 255;
/// Longest plaintext symlink target whose encoding fits a backing target (PATH_MAX - 1).
pub const SYMLINK_MAX: usize = 4095 * 3 / 4 - XNONCE_LEN - TAG_LEN;
/// Longest plaintext extended attribute name after `user.` whose encoding fits XATTR_NAME_MAX.
pub const XATTR_SUFFIX_MAX: usize = 160;

const NAME_AD: &[u8] = b"cmkfs-name-v3\0";
const SYMLINK_AD: &[u8] = b"cmkfs-symlink-v3";
const XATTR_VALUE_AD: &[u8] = b"cmkfs-xattr-v3\0";

/// A name that cannot be stored or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Empty, `.`, `..`, or containing `/` or NUL.
    Invalid,
    /// Too long to store (a symlink target, an xattr name).
    TooLong,
    /// Not an encrypted name of this directory, or tampered with.
    Undecryptable,
}

/// True for names that belong to cmkfs itself (never an encrypted name).
pub fn is_internal(backing: &[u8]) -> bool {
    backing.starts_with(b"cmkfs.")
}

/// The backing entry of a plaintext name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackingName {
    /// The encoding is the name.
    Short(Vec<u8>),
    /// A long-name entry, and the encoding its side file holds.
    Long {
        /// `cmkfs.long.<hash>`.
        name: Vec<u8>,
        /// The side file's content.
        record: Vec<u8>,
    },
}

impl BackingName {
    /// The name of the backing entry.
    pub fn name(&self) -> &[u8] {
        match self {
            BackingName::Short(n) | BackingName::Long { name: n, .. } => n,
        }
    }
    /// The side file's name and content, for a long name.
    pub fn record(&self) -> Option<(Vec<u8>, &[u8])> {
        match self {
            BackingName::Short(_) => None,
            BackingName::Long { name, record } => Some((record_name(name), record)),
        }
    }
}

/// What a backing name in a directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// An encrypted name (its encoding).
    Short(&'a [u8]),
    /// A long-name entry: its encoding is in the side file.
    Long,
    /// cmkfs's own (directory IV, side files, temporaries, the volume header) or foreign.
    Other,
}

/// Classifies a backing name found in a directory.
pub fn kind(backing: &[u8]) -> Kind<'_> {
    if backing.starts_with(LONG_PREFIX.as_bytes()) && !backing.ends_with(LONG_RECORD_SUFFIX.as_bytes()) {
        Kind::Long
    } else if is_internal(backing) || backing.is_empty() || backing == b"." || backing == b".." {
        Kind::Other
    } else {
        Kind::Short(backing)
    }
}

/// The side file of long-name entry `name`.
pub fn record_name(name: &[u8]) -> Vec<u8> {
    let mut r = name.to_vec();
    r.extend_from_slice(LONG_RECORD_SUFFIX.as_bytes());
    r
}

fn long_name(encoding: &[u8]) -> Vec<u8> {
    let mut n = LONG_PREFIX.as_bytes().to_vec();
    n.extend_from_slice(B64.encode(sha256(encoding)).as_bytes());
    n
}

/// True when side file content `record` belongs to long-name entry `name`.
pub fn record_matches(name: &[u8], record: &[u8]) -> bool {
    crate::crypto::ct_eq(&long_name(record), name)
}

fn valid_name(n: &[u8]) -> bool {
    !n.is_empty() && n.len() <= NAME_MAX && n != b"." && n != b".." && !n.iter().any(|&b| b == b'/' || b == 0)
}

fn pad16(n: &[u8]) -> Vec<u8> {
    let mut p = n.to_vec();
    p.resize(n.len().div_ceil(16).max(1) * 16, 0);
    p
}

fn unpad(mut p: Vec<u8>) -> Option<Vec<u8>> {
    if p.is_empty() || p.len() % 16 != 0 {
        return None;
    }
    let n = p.iter().rposition(|&b| b != 0)? + 1;
    if p.len() - n >= 16 {
        return None; // more padding than pad16 adds: not ours
    }
    p.truncate(n);
    Some(p)
}

fn name_nonce(iv: &[u8; DIRIV_LEN]) -> [u8; 12] {
    iv[..12].try_into().unwrap()
}

fn name_ad(iv: &[u8; DIRIV_LEN]) -> Vec<u8> {
    [NAME_AD, iv].concat()
}

/// The keys of format 3's names, derived from the volume key.
pub struct NameKeys {
    names: Siv,
    symlinks: Xaes,
    xattr_names: Siv,
    xattr_values: Xaes,
}

impl NameKeys {
    /// From the three name keys and the xattr value key.
    pub fn new(names: Siv, symlinks: Xaes, xattr_names: Siv, xattr_values: Xaes) -> Self {
        NameKeys {
            names,
            symlinks,
            xattr_names,
            xattr_values,
        }
    }

    /// The backing entry of plaintext `name` in the directory with IV `iv`.
    pub fn encrypt(&self, iv: &[u8; DIRIV_LEN], name: &[u8]) -> Result<BackingName, NameError> {
        if !valid_name(name) {
            return Err(NameError::Invalid);
        }
        let enc = B64
            .encode(self.names.seal(&name_nonce(iv), &name_ad(iv), &pad16(name)))
            .into_bytes();
        Ok(if enc.len() <= NAME_MAX {
            BackingName::Short(enc)
        } else {
            BackingName::Long {
                name: long_name(&enc),
                record: enc,
            }
        })
    }

    /// The plaintext of an encoding (a short backing name, or a long name's side file).
    pub fn decrypt(&self, iv: &[u8; DIRIV_LEN], encoding: &[u8]) -> Result<Vec<u8>, NameError> {
        let ct = B64.decode(encoding).map_err(|_| NameError::Undecryptable)?;
        let p = self
            .names
            .open(&name_nonce(iv), &name_ad(iv), &ct)
            .map_err(|_| NameError::Undecryptable)?;
        unpad(p).filter(|n| valid_name(n)).ok_or(NameError::Undecryptable)
    }

    /// The backing target of a symlink to `target`.
    pub fn seal_symlink(&self, target: &[u8]) -> Result<Vec<u8>, NameError> {
        if target.is_empty() || target.contains(&0) {
            return Err(NameError::Invalid);
        }
        if target.len() > SYMLINK_MAX {
            return Err(NameError::TooLong);
        }
        Ok(B64.encode(self.symlinks.seal_message(SYMLINK_AD, target)).into_bytes())
    }

    /// The plaintext target of a backing symlink target.
    pub fn open_symlink(&self, backing: &[u8]) -> Result<Vec<u8>, NameError> {
        let sealed = B64.decode(backing).map_err(|_| NameError::Undecryptable)?;
        let t = self
            .symlinks
            .open_message(SYMLINK_AD, &sealed)
            .map_err(|_| NameError::Undecryptable)?;
        Ok(t.to_vec())
    }

    /// The backing name of extended attribute `user.<suffix>` (given the whole name).
    pub fn xattr_name(&self, name: &[u8]) -> Result<Vec<u8>, NameError> {
        let suffix = name.strip_prefix(b"user.").ok_or(NameError::Invalid)?;
        if suffix.is_empty() || suffix.contains(&0) {
            return Err(NameError::Invalid);
        }
        if suffix.len() > XATTR_SUFFIX_MAX {
            return Err(NameError::TooLong);
        }
        let mut out = b"user.".to_vec();
        out.extend_from_slice(
            B64.encode(self.xattr_names.seal(&[0; 12], b"cmkfs-xattr-name-v3", &pad16(suffix)))
                .as_bytes(),
        );
        Ok(out)
    }

    /// The plaintext name of a backing extended attribute name (None: not one of ours).
    pub fn xattr_plain_name(&self, backing: &[u8]) -> Option<Vec<u8>> {
        let enc = backing.strip_prefix(b"user.")?;
        let ct = B64.decode(enc).ok()?;
        let p = self
            .xattr_names
            .open(&[0; 12], b"cmkfs-xattr-name-v3", &ct)
            .ok()
            .and_then(unpad)?;
        Some([&b"user."[..], &p].concat())
    }

    /// Seals an extended attribute value of the file `binding` (see [`xattr_value_aad`]).
    pub fn seal_xattr(&self, binding: &[u8; 16], name: &[u8], value: &[u8]) -> Vec<u8> {
        self.xattr_values.seal_message(&xattr_value_aad(binding, name), value)
    }

    /// Opens an extended attribute value sealed by [`NameKeys::seal_xattr`].
    pub fn open_xattr(&self, binding: &[u8; 16], name: &[u8], sealed: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        self.xattr_values
            .open_message(&xattr_value_aad(binding, name), sealed)
            .ok()
    }
}

/// Associated data of a format-3 extended attribute value: `"cmkfs-xattr-v3\0" || binding
/// (16) || plaintext name`. The binding is the file's id (from its authenticated file header)
/// for a regular file, the directory IV for a directory: a value copied to another file, or
/// to another name, fails to open (EIO).
pub fn xattr_value_aad(binding: &[u8; 16], name: &[u8]) -> Vec<u8> {
    [XATTR_VALUE_AD, binding, name].concat()
}

/// Plaintext length of a symlink whose backing target is `len` bytes long.
pub fn symlink_plain_len(len: u64) -> u64 {
    (len * 3 / 4).saturating_sub((XNONCE_LEN + TAG_LEN) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    fn keys() -> NameKeys {
        NameKeys::new(
            Siv::new(&SecretKey::random()),
            Xaes::new(&SecretKey::random()),
            Siv::new(&SecretKey::random()),
            Xaes::new(&SecretKey::random()),
        )
    }

    #[test]
    fn names_roundtrip_short_and_long() {
        let k = keys();
        let iv = [5u8; 16];
        for len in [1usize, 15, 16, 17, 100, 160, 161, 200, 255] {
            let n: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let b = k.encrypt(&iv, &n).unwrap();
            assert!(b.name().len() <= NAME_MAX);
            assert!(!is_internal(b.name()) || len > 160);
            assert_eq!(matches!(b, BackingName::Long { .. }), len > 160, "len {len}");
            let enc = match &b {
                BackingName::Short(e) => {
                    assert_eq!(kind(e), Kind::Short(e));
                    e.clone()
                }
                BackingName::Long { name, record } => {
                    assert_eq!(kind(name), Kind::Long);
                    assert!(record_matches(name, record));
                    assert_eq!(kind(&record_name(name)), Kind::Other);
                    record.clone()
                }
            };
            assert_eq!(k.decrypt(&iv, &enc).unwrap(), n);
            assert_eq!(k.encrypt(&iv, &n).unwrap(), b, "deterministic");
        }
        let utf8 = "répertoire-日本語-🙂".as_bytes();
        let e = k.encrypt(&iv, utf8).unwrap();
        assert_eq!(k.decrypt(&iv, e.name()).unwrap(), utf8);
    }

    #[test]
    fn same_name_differs_per_directory_and_is_bound_to_it() {
        let k = keys();
        let a = k.encrypt(&[1; 16], b"payroll").unwrap();
        let b = k.encrypt(&[2; 16], b"payroll").unwrap();
        assert_ne!(a, b);
        assert_eq!(k.decrypt(&[2; 16], a.name()), Err(NameError::Undecryptable));
        let mut t = a.name().to_vec();
        t[3] = if t[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(k.decrypt(&[1; 16], &t), Err(NameError::Undecryptable));
    }

    #[test]
    fn invalid_names_and_reserved_patterns() {
        let k = keys();
        for n in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert_eq!(k.encrypt(&[0; 16], n), Err(NameError::Invalid));
        }
        assert_eq!(k.encrypt(&[0; 16], &[b'x'; 256]), Err(NameError::Invalid));
        // Names that look like cmkfs's own encrypt to ordinary names.
        for n in [
            "cmkfs.volume",
            "cmkfs.volume.session.0000",
            "cmkfs.diriv",
            "cmkfs.long.x",
        ] {
            let b = k.encrypt(&[0; 16], n.as_bytes()).unwrap();
            assert!(matches!(kind(b.name()), Kind::Short(_)), "{n}");
        }
        assert_eq!(kind(b"cmkfs.volume"), Kind::Other);
        assert_eq!(kind(DIRIV_NAME.as_bytes()), Kind::Other);
    }

    #[test]
    fn symlinks_and_xattrs() {
        let k = keys();
        let t = k.seal_symlink(b"../hr/payroll/ceo.txt").unwrap();
        assert_eq!(symlink_plain_len(t.len() as u64), 21);
        assert_eq!(k.open_symlink(&t).unwrap(), b"../hr/payroll/ceo.txt");
        let long = vec![b'a'; SYMLINK_MAX];
        assert!(k.seal_symlink(&long).unwrap().len() <= 4095);
        assert_eq!(k.seal_symlink(&[b'a'; SYMLINK_MAX + 1]), Err(NameError::TooLong));
        let xn = k.xattr_name(b"user.secret-label").unwrap();
        assert!(xn.len() <= 255 && xn.starts_with(b"user."));
        assert_eq!(k.xattr_plain_name(&xn).unwrap(), b"user.secret-label");
        let max = [&b"user."[..], &[b'q'; XATTR_SUFFIX_MAX]].concat();
        assert!(k.xattr_name(&max).unwrap().len() <= 255);
        assert_eq!(k.xattr_name(&[&max[..], b"q"].concat()), Err(NameError::TooLong));
        let v = k.seal_xattr(&[1; 16], b"user.a", b"value");
        assert_eq!(&**k.open_xattr(&[1; 16], b"user.a", &v).unwrap(), b"value");
        assert!(k.open_xattr(&[2; 16], b"user.a", &v).is_none(), "bound to its file");
        assert!(k.open_xattr(&[1; 16], b"user.b", &v).is_none(), "bound to its name");
    }
}
