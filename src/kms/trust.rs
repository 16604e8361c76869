//! Who may control the files a provider trusts: programs the daemon runs (`exec:`), key
//! store directories and key files (`local:`), PEM key files (`pem:`).
//!
//! The daemon usually runs as root. A file that another, unprivileged user can write, or
//! replace, lets that user run code as root (a program) or substitute a key of their own
//! (the next rotation or rewrap would wrap the volume key under it). So a trusted file or
//! directory must be owned by root or by the effective uid of this process, and not be
//! writable by group or others.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Symbolic links followed at most while resolving one path (the kernel's limit).
const MAX_LINKS: usize = 40;

use crate::util::euid;

/// Why a file or directory is not trusted (`what` names it: "program", "key file", ...).
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    /// Owned by someone other than root or this process's effective user.
    #[error(
        "{what} {} is owned by uid {uid}, neither root nor this user (uid {euid}); that user could \
         change it: chown root (or chown to this user) and chmod go-w",
        .path.display()
    )]
    Owner {
        /// What the file is.
        what: String,
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// This process's effective uid.
        euid: u32,
    },
    /// Writable by group or others.
    #[error(
        "{what} {} is writable by group or others{} (mode {mode:o}); others could replace it: \
         chmod go-w, or move it to a directory only root writes",
        .path.display(),
        if *.sticky { " (a sticky, shared directory like /tmp)" } else { "" }
    )]
    Writable {
        /// What the file is.
        what: String,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// A sticky directory (the sticky bit does not stop anyone from creating the name first).
        sticky: bool,
    },
    /// A directory on the way to `path` is not trusted.
    #[error("{what} {}: {inner}", .path.display())]
    Directory {
        /// What the file is.
        what: String,
        /// The path being resolved.
        path: PathBuf,
        /// Why the directory is not trusted.
        inner: Box<Untrusted>,
    },
    /// The path is relative.
    #[error("{what} {} is not an absolute path", .path.display())]
    NotAbsolute {
        /// What the file is.
        what: String,
        /// The path.
        path: PathBuf,
    },
    /// A component cannot be examined.
    #[error("cannot use {what} {}: {}: {source}", .path.display(), .at.display())]
    Io {
        /// What the file is.
        what: String,
        /// The path being resolved.
        path: PathBuf,
        /// The component that failed.
        at: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// More symbolic links than the kernel follows.
    #[error("cannot use {what} {}: too many symbolic links", .path.display())]
    TooManyLinks {
        /// What the file is.
        what: String,
        /// The path being resolved.
        path: PathBuf,
    },
    /// A component that must be a directory is not.
    #[error("cannot use {what} {}: {} is not a directory", .path.display(), .at.display())]
    NotDirectory {
        /// What the file is.
        what: String,
        /// The path being resolved.
        path: PathBuf,
        /// The component.
        at: PathBuf,
    },
    /// A key file that is not a regular file.
    #[error("{what} {} is not a regular file", .path.display())]
    NotRegular {
        /// What the file is.
        what: String,
        /// The file.
        path: PathBuf,
    },
    /// A key file larger than any key.
    #[error("{what} {} is larger than 1 MiB", .path.display())]
    TooLarge {
        /// What the file is.
        what: String,
        /// The file.
        path: PathBuf,
    },
    /// A key file that is not text.
    #[error("{what} {} is not text (PEM)", .path.display())]
    NotText {
        /// What the file is.
        what: String,
        /// The file.
        path: PathBuf,
    },
}

/// Refuses `md` (of `path`, a `what`) unless it is owned by root or `euid` and not writable
/// by group or others. Sticky directories writable by others (`/tmp`) are refused too: the
/// sticky bit does not stop anyone from creating the name first.
pub fn check_owner_and_mode(path: &Path, md: &Metadata, what: &str, euid: u32) -> Result<(), Untrusted> {
    let uid = md.uid();
    if uid != 0 && uid != euid {
        return Err(Untrusted::Owner {
            what: what.into(),
            path: path.into(),
            uid,
            euid,
        });
    }
    let mode = md.mode();
    if mode & 0o022 != 0 {
        return Err(Untrusted::Writable {
            what: what.into(),
            path: path.into(),
            mode: mode & 0o7777,
            sticky: md.is_dir() && mode & 0o1000 != 0,
        });
    }
    Ok(())
}

/// Resolves the absolute `path` one component at a time, following symbolic links, and
/// checks every directory it passes through, from `/` on ([`check_owner_and_mode`]): whoever
/// can write one of them can swap what the path names. The directory holding each symbolic
/// link is among them, so a link cannot be replaced either. Returns the resolved path and
/// the final file's metadata (not checked here: the caller has its own rules for it).
pub fn resolve_trusted(path: &Path, what: &str) -> Result<(PathBuf, Metadata), Untrusted> {
    let euid = euid();
    if !path.is_absolute() {
        return Err(Untrusted::NotAbsolute {
            what: what.into(),
            path: path.into(),
        });
    }
    let io = |p: &Path, source: std::io::Error| Untrusted::Io {
        what: what.into(),
        path: path.into(),
        at: p.into(),
        source,
    };
    let check_dir = |p: &Path| -> Result<(), Untrusted> {
        let md = std::fs::metadata(p).map_err(|e| io(p, e))?;
        check_owner_and_mode(p, &md, "directory", euid).map_err(|inner| Untrusted::Directory {
            what: what.into(),
            path: path.into(),
            inner: Box::new(inner),
        })
    };
    let mut cur = PathBuf::from("/");
    check_dir(&cur)?;
    // Components still to walk, last first.
    let mut todo: Vec<std::ffi::OsString> = components(path);
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&c);
        let md = std::fs::symlink_metadata(&next).map_err(|e| io(&next, e))?;
        if md.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(Untrusted::TooManyLinks {
                    what: what.into(),
                    path: path.into(),
                });
            }
            let target = std::fs::read_link(&next).map_err(|e| io(&next, e))?;
            if target.is_absolute() {
                cur = PathBuf::from("/");
            }
            todo.extend(components(&target));
            continue;
        }
        if todo.is_empty() {
            return Ok((next, md));
        }
        if !md.is_dir() {
            return Err(Untrusted::NotDirectory {
                what: what.into(),
                path: path.into(),
                at: next,
            });
        }
        check_dir(&next)?;
        cur = next;
    }
    // The path was `/` (or resolved to it).
    let md = std::fs::metadata(&cur).map_err(|e| io(&cur, e))?;
    Ok((cur, md))
}

/// Why [`read_secret_file`] refused.
#[derive(Debug)]
pub enum ReadError {
    /// Opening or reading failed.
    Io(std::io::Error),
    /// The file is not trusted ([`check_owner_and_mode`]), or not a regular file or not text.
    Untrusted(Untrusted),
}

/// Reads a file holding a private key: checks the opened file itself (no race with a
/// rename) with [`check_owner_and_mode`], warns when group or others may read it, and reads
/// it into one zeroizing buffer of the file's size (no reallocation copies).
pub fn read_secret_file(path: &Path, what: &str) -> Result<zeroize::Zeroizing<String>, ReadError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(ReadError::Io)?;
    let md = f.metadata().map_err(ReadError::Io)?;
    if !md.is_file() {
        return Err(ReadError::Untrusted(Untrusted::NotRegular {
            what: what.into(),
            path: path.into(),
        }));
    }
    check_owner_and_mode(path, &md, what, euid()).map_err(ReadError::Untrusted)?;
    if md.mode() & 0o044 != 0 {
        tracing::warn!(path = %path.display(), "{what} is readable by group or others (chmod 600); consider the key exposed");
    }
    const MAX: usize = 1 << 20;
    let bytes = crate::crypto::read_zeroizing(f.take(MAX as u64 + 1), (md.len() as usize).clamp(1, MAX), MAX)
        .map_err(ReadError::Io)?
        .ok_or_else(|| {
            ReadError::Untrusted(Untrusted::TooLarge {
                what: what.into(),
                path: path.into(),
            })
        })?;
    let mut bytes = bytes;
    if std::str::from_utf8(&bytes).is_err() {
        return Err(ReadError::Untrusted(Untrusted::NotText {
            what: what.into(),
            path: path.into(),
        }));
    }
    // Move the bytes into a String without copying them.
    let v = std::mem::take(&mut *bytes);
    Ok(zeroize::Zeroizing::new(String::from_utf8(v).expect("checked UTF-8")))
}

/// The normal and `..` components of `p`, reversed (so that `pop` walks them in order).
fn components(p: &Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    v.reverse();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A scratch directory under the crate (its ancestors are the checkout's, not /tmp's).
    fn scratch() -> tempfile::TempDir {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/trust-tests");
        std::fs::create_dir_all(&base).unwrap();
        chmod(&base, 0o755);
        let d = tempfile::tempdir_in(&base).unwrap();
        chmod(d.path(), 0o755);
        d
    }

    #[test]
    fn resolves_links_and_checks_every_directory() {
        let d = scratch();
        let ok = d.path().join("ok");
        std::fs::create_dir(&ok).unwrap();
        chmod(&ok, 0o755);
        std::fs::write(ok.join("f"), "x").unwrap();
        std::os::unix::fs::symlink(ok.join("f"), d.path().join("link")).unwrap();
        std::os::unix::fs::symlink("ok/../ok/f", d.path().join("rel")).unwrap();
        for p in [ok.join("f"), d.path().join("link"), d.path().join("rel")] {
            let (r, md) = resolve_trusted(&p, "file").unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(r, ok.join("f"));
            assert!(md.is_file());
        }
        // A directory others may write, anywhere on the way (also behind a link).
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        chmod(&open, 0o1777);
        std::fs::write(open.join("f"), "x").unwrap();
        std::os::unix::fs::symlink(open.join("f"), ok.join("via")).unwrap();
        for p in [open.join("f"), ok.join("via")] {
            let e = resolve_trusted(&p, "file").unwrap_err().to_string();
            assert!(e.contains("writable by group or others") && e.contains("sticky"), "{e}");
            assert!(e.contains(open.to_str().unwrap()), "names the directory: {e}");
        }
        // /tmp itself is such a directory.
        let t = tempfile::NamedTempFile::new_in("/tmp").unwrap();
        assert!(resolve_trusted(t.path(), "file").is_err());
        assert!(resolve_trusted(Path::new("relative"), "file").is_err());
        assert!(resolve_trusted(&d.path().join("missing"), "file").is_err());
    }

    #[test]
    fn refuses_other_owners() {
        if euid() != 0 {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let d = scratch();
        let f = d.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let md = std::fs::metadata(&f).unwrap();
        assert!(check_owner_and_mode(&f, &md, "file", 0).is_ok());
        std::os::unix::fs::chown(&f, Some(65534), None).unwrap();
        let md = std::fs::metadata(&f).unwrap();
        let e = check_owner_and_mode(&f, &md, "file", 0).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
        assert!(
            check_owner_and_mode(&f, &md, "file", 65534).is_ok(),
            "its own user may use it"
        );
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::os::unix::fs::chown(&sub, Some(65534), None).unwrap();
        std::fs::write(sub.join("g"), "x").unwrap();
        let e = resolve_trusted(&sub.join("g"), "file").unwrap_err().to_string();
        assert!(
            e.contains("owned by uid 65534") && e.contains(sub.to_str().unwrap()),
            "{e}"
        );
    }
}
