//! The mount table of this process's mount namespace, from `/proc/self/mountinfo`.
//!
//! One line per mount (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] -
//! FSTYPE SOURCE SUPEROPTIONS`. The optional fields vary in number, so the fields after them
//! are found from the `-` separator. The kernel writes space, tab, newline and backslash in
//! paths as three-digit octal escapes (`\040`, `\011`, `\012`, `\134`); [`unescape`] undoes
//! them.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type (`fuse`, `fuse.cmkfs`, `ext4`, ...).
    pub fs_type: String,
    /// Mount source (for cmkfs, the cipher directory); empty if the line has none.
    pub source: PathBuf,
}

/// The mounts of this process's namespace, in table order (a later mount on the same
/// mountpoint hides the earlier ones); empty if the table cannot be read.
pub fn mounts() -> Vec<Mount> {
    std::fs::read("/proc/self/mountinfo")
        .map(|info| parse(&info))
        .unwrap_or_default()
}

/// Parses mountinfo text; lines that do not have the fields up to the filesystem type are
/// skipped.
pub fn parse(info: &[u8]) -> Vec<Mount> {
    info.split(|&b| b == b'\n')
        .filter_map(|line| {
            let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let sep = f.iter().position(|x| *x == b"-")?;
            let mount_point = f.get(4).filter(|_| sep > 4)?;
            let fs_type = f.get(sep + 1)?;
            Some(Mount {
                mount_point: path(mount_point),
                fs_type: String::from_utf8_lossy(&unescape(fs_type)).into_owned(),
                source: f.get(sep + 2).map(|s| path(s)).unwrap_or_default(),
            })
        })
        .collect()
}

fn path(field: &[u8]) -> PathBuf {
    OsString::from_vec(unescape(field)).into()
}

/// Undoes the kernel's escaping of a mountinfo field: a backslash and three octal digits
/// stand for that byte; anything else is taken as is.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if let Some(&[b'\\', a, b, c]) = field.get(i..i + 4) {
            let octal = |d: u8| (b'0'..=b'7').contains(&d).then(|| d - b'0');
            if let (Some(a @ 0..=3), Some(b), Some(c)) = (octal(a), octal(b), octal(c)) {
                out.push(a << 6 | b << 3 | c);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &[u8] = b"\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
98 22 0:52 / /mnt/my\\040vault rw,nosuid,nodev,relatime shared:50 - fuse.cmkfs /srv/cipher\\040dir rw,user_id=0,group_id=0
99 22 0:53 / /mnt/tab\\011nl\\012back\\134slash rw - fuse /srv/c rw
100 22 0:54 / /mnt/plain rw master:3 propagate_from:2 unbindable - tmpfs tmpfs rw
";

    #[test]
    fn parses_fields_around_optional_ones() {
        let m = parse(INFO);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].mount_point, PathBuf::from("/"));
        assert_eq!(m[0].fs_type, "ext4");
        assert_eq!(m[0].source, PathBuf::from("/dev/sda1"));
        assert_eq!(m[3].mount_point, PathBuf::from("/mnt/plain"));
        assert_eq!(m[3].fs_type, "tmpfs");
        assert_eq!(m[3].source, PathBuf::from("tmpfs"));
    }

    #[test]
    fn undoes_octal_escapes_in_paths() {
        let m = parse(INFO);
        assert_eq!(m[1].mount_point, PathBuf::from("/mnt/my vault"));
        assert_eq!(m[1].fs_type, "fuse.cmkfs");
        assert_eq!(m[1].source, PathBuf::from("/srv/cipher dir"));
        assert_eq!(m[2].mount_point, PathBuf::from("/mnt/tab\tnl\nback\\slash"));
    }

    #[test]
    fn unescape_leaves_other_backslashes() {
        assert_eq!(unescape(b"a\\134040"), b"a\\040");
        assert_eq!(unescape(b"a\\9xy\\"), b"a\\9xy\\");
        assert_eq!(unescape(b"\\04"), b"\\04");
        assert_eq!(unescape(b"\\400"), b"\\400");
    }

    #[test]
    fn non_utf8_paths_survive() {
        let m = parse(b"1 0 0:1 / /mnt/\xff rw - fuse /src/\xfe rw\n");
        assert_eq!(m[0].mount_point.as_os_str().as_encoded_bytes(), b"/mnt/\xff");
        assert_eq!(m[0].source.as_os_str().as_encoded_bytes(), b"/src/\xfe");
    }

    #[test]
    fn skips_short_and_empty_lines() {
        assert!(parse(b"").is_empty());
        assert!(parse(b"\n1 2 3\n1 2 - fuse src\n").is_empty());
        assert!(parse(b"1 2 3 4 - fuse src\n").is_empty());
        assert!(parse(b"1 2 3 4 /m rw -\n").is_empty());
    }

    #[test]
    fn reads_this_process_table() {
        // Every Linux process has a root mount.
        assert!(mounts().iter().any(|m| m.mount_point == std::path::Path::new("/")));
    }
}
