//! Thin, safe wrappers over the *at() syscalls the filesystem needs.
//!
//! The filesystem keeps an `O_PATH` descriptor for every inode the kernel knows, and does
//! every operation relative to those descriptors: renames never invalidate anything, hard
//! links need no path bookkeeping, and no operation re-resolves a path from the root.
//! Operations the kernel does not offer on `O_PATH` descriptors (chmod, xattrs, reopening
//! for I/O) go through `/proc/self/fd/N`, as libfuse's passthrough_hp does.
//!
//! The calls go through rustix, which returns the kernel's errno unchanged (as an
//! [`io::Error`] with that raw OS error, which the FUSE layer answers with). The callers speak
//! libc's constants (`O_*`, `AT_*`, `SEEK_*`, `FALLOC_FL_*`); they are passed through as the
//! same bits. `libc` remains only for what rustix does not offer: `fstatat` into a
//! `libc::stat` (the type the FUSE layer reads), `sync_file_range`, and the file-handle calls.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::num::NonZeroU64;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FallocateFlags, Mode, OFlags, RenameFlags, SeekFrom, XattrFlags};

/// A `libc::stat` (64-bit on every Linux target we build for).
pub type Stat = libc::stat;

/// What [`statvfs`] answers.
pub type StatVfs = rustix::fs::StatVfs;

/// libc's `O_*` bits as rustix's flags, plus `O_CLOEXEC` (no descriptor of ours leaks into a
/// child process).
fn oflags(flags: libc::c_int) -> OFlags {
    OFlags::from_bits_retain(flags as u32) | OFlags::CLOEXEC
}

/// A name as a C string; names with NUL bytes cannot exist.
pub fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `/proc/self/fd/N` for an fd.
pub fn proc_path(fd: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).unwrap()
}

/// The current directory as a "descriptor" for the *at() calls (`AT_FDCWD`): a path given to
/// them relative to it resolves as a plain path would.
pub fn cwd() -> BorrowedFd<'static> {
    rustix::fs::CWD
}

/// openat(2); `O_CLOEXEC` is always added.
pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(dir, name, oflags(flags), Mode::from_raw_mode(mode))?)
}

/// Opens an inode for I/O from its O_PATH descriptor.
pub fn reopen(path_fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<OwnedFd> {
    let p = proc_path(path_fd.as_raw_fd());
    Ok(rustix::fs::open(p.as_c_str(), oflags(flags), Mode::empty())?)
}

/// Turns off the backing filesystem's readahead on the descriptor the write path uses
/// (`POSIX_FADV_RANDOM`); the caller skips it when `CMKFS_BACKING_READAHEAD=1` is in the
/// mount's environment (for comparisons). User reads go through a second descriptor that
/// keeps it.
///
/// Why: the daemon's small reads on the write path (an entry page, the old block of a
/// read-modify-write) look sequential under appends and sequential writes; the backing
/// filesystem then reads ahead into large folios (ext4, Linux 6.16 and later), and every later
/// small `pwrite` into such a folio walks all its buffer heads. Under 512-byte appends that
/// walk (`ext4_block_write_begin`, `block_commit_write`) was 19% of the daemon's time; see
/// docs/PERFORMANCE.md for the measurements.
pub fn no_backing_readahead(fd: BorrowedFd<'_>) {
    // Advice only: a failure changes speed, never content.
    if let Err(e) = rustix::fs::fadvise(fd, 0, None::<NonZeroU64>, rustix::fs::Advice::Random) {
        tracing::debug!(
            errno = e.raw_os_error(),
            "posix_fadvise(POSIX_FADV_RANDOM) on a backing file failed"
        );
    }
}

/// Starts writeback of a backing file's dirty pages without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`); the caller skips it when
/// `CMKFS_NO_EARLY_WRITEBACK=1` is in the mount's environment (for comparisons). The caller's
/// later fsync waits for it.
pub fn start_writeback(fd: BorrowedFd<'_>) {
    // Only a head start: the fsync that follows does the real work and reports errors.
    // SAFETY: rustix has no sync_file_range. The descriptor is borrowed, so open, for the
    // whole call, which takes no pointers.
    if unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) } != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "sync_file_range on a backing file failed");
    }
}

/// fsync(2).
pub fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::fsync(fd)?)
}

/// fstatat(2) of the fd itself (`AT_EMPTY_PATH`).
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    // rustix answers its own `Stat`, whose field types differ from libc's by target; the
    // filesystem reads libc's, so this one call stays on libc.
    let mut st = std::mem::MaybeUninit::<Stat>::uninit();
    // SAFETY: the descriptor is borrowed for the call, the path is a NUL-terminated literal,
    // and `st` is valid for writes of one `libc::stat`.
    let r = unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            st.as_mut_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat succeeded, so the kernel filled in the whole struct.
    Ok(unsafe { st.assume_init() })
}

/// mkdirat(2).
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    Ok(rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))?)
}

/// mknodat(2). `mode` holds the file type bits too; none means a regular file, as for the
/// system call.
pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t, rdev: libc::dev_t) -> io::Result<()> {
    let kind = match mode & libc::S_IFMT {
        0 => rustix::fs::FileType::RegularFile,
        t => rustix::fs::FileType::from_raw_mode(t),
    };
    Ok(rustix::fs::mknodat(
        dir,
        name,
        kind,
        Mode::from_raw_mode(mode & !libc::S_IFMT),
        rdev,
    )?)
}

/// symlinkat(2).
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    Ok(rustix::fs::symlinkat(target, dir, name)?)
}

/// readlinkat(2) of an O_PATH symlink descriptor.
pub fn readlink(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let target = rustix::fs::readlinkat(fd, c"", Vec::with_capacity(libc::PATH_MAX as usize + 1))?;
    Ok(target.into_bytes())
}

/// unlinkat(2).
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(
        dir,
        name,
        AtFlags::from_bits_retain(flags as u32),
    )?)
}

/// renameat2(2).
pub fn renameat2(od: BorrowedFd<'_>, on: &CStr, nd: BorrowedFd<'_>, nn: &CStr, flags: libc::c_uint) -> io::Result<()> {
    Ok(rustix::fs::renameat_with(
        od,
        on,
        nd,
        nn,
        RenameFlags::from_bits_retain(flags),
    )?)
}

/// Hard-links the inode behind an O_PATH fd as `dir/name`.
pub fn link_fd(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    Ok(rustix::fs::linkat(
        cwd(),
        p.as_c_str(),
        dir,
        name,
        AtFlags::SYMLINK_FOLLOW,
    )?)
}

/// chmod through /proc (O_PATH fds cannot fchmod).
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    Ok(rustix::fs::chmod(p.as_c_str(), Mode::from_raw_mode(mode))?)
}

/// fchownat(2) with `AT_EMPTY_PATH`; `u32::MAX` leaves an id unchanged.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    let uid = (uid != u32::MAX).then(|| rustix::fs::Uid::from_raw(uid));
    let gid = (gid != u32::MAX).then(|| rustix::fs::Gid::from_raw(gid));
    Ok(rustix::fs::chownat(
        fd,
        c"",
        uid,
        gid,
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// utimensat(2) with `AT_EMPTY_PATH`; `UTIME_NOW` and `UTIME_OMIT` in `tv_nsec` pass through.
pub fn utimens_fd(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> io::Result<()> {
    let ts = |t: &libc::timespec| rustix::fs::Timespec {
        tv_sec: t.tv_sec,
        tv_nsec: t.tv_nsec,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts(&times[0]),
        last_modification: ts(&times[1]),
    };
    Ok(rustix::fs::utimensat(
        fd,
        c"",
        &times,
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// fallocate(2).
pub fn fallocate(fd: BorrowedFd<'_>, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    Ok(rustix::fs::fallocate(
        fd,
        FallocateFlags::from_bits_retain(mode as u32),
        offset,
        len,
    )?)
}

/// lseek(2) with libc's `whence` (`SEEK_SET`, `SEEK_CUR`, `SEEK_END`, `SEEK_DATA`,
/// `SEEK_HOLE`); `Ok(None)` for ENXIO (no more data / offset past the end).
pub fn lseek(fd: BorrowedFd<'_>, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let pos = match whence {
        libc::SEEK_SET => SeekFrom::Start(offset),
        libc::SEEK_CUR => SeekFrom::Current(offset as i64),
        libc::SEEK_END => SeekFrom::End(offset as i64),
        libc::SEEK_DATA => SeekFrom::Data(offset),
        libc::SEEK_HOLE => SeekFrom::Hole(offset),
        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    match rustix::fs::seek(fd, pos) {
        Ok(r) => Ok(Some(r)),
        Err(rustix::io::Errno::NXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// fstatvfs(3).
pub fn statvfs(fd: BorrowedFd<'_>) -> io::Result<StatVfs> {
    Ok(rustix::fs::fstatvfs(fd)?)
}

/// getxattr(2) through /proc. `buf` empty asks for the size.
pub fn getxattr(fd: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    let p = proc_path(fd.as_raw_fd());
    // rustix answers 0 for an empty buffer; the size comes from its own query call.
    if buf.is_empty() {
        return Ok(rustix::fs::getxattr_query(p.as_c_str(), name)?);
    }
    Ok(rustix::fs::getxattr(p.as_c_str(), name, buf)?)
}

/// setxattr(2) through /proc.
pub fn setxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: libc::c_int) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    Ok(rustix::fs::setxattr(
        p.as_c_str(),
        name,
        value,
        XattrFlags::from_bits_retain(flags as u32),
    )?)
}

/// listxattr(2) through /proc: the NUL-separated name list.
pub fn listxattr(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let p = proc_path(fd.as_raw_fd());
    xattr_list(
        || rustix::fs::listxattr_query(p.as_c_str()),
        |buf| rustix::fs::listxattr(p.as_c_str(), buf),
    )
}

/// The whole NUL-separated name list from a listxattr-like pair of calls (the size, then the
/// list), asking again when the list grew in between (ERANGE).
fn xattr_list(
    size: impl Fn() -> rustix::io::Result<usize>,
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Vec<u8>> {
    loop {
        let n = size()?;
        let mut buf = vec![0u8; n];
        match list(&mut buf) {
            Ok(m) => {
                buf.truncate(m);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// removexattr(2) through /proc.
pub fn removexattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    Ok(rustix::fs::removexattr(p.as_c_str(), name)?)
}

/// llistxattr(2) of a path (symlinks not followed): the NUL-separated name list.
pub fn llistxattr(path: &CStr) -> io::Result<Vec<u8>> {
    xattr_list(
        || rustix::fs::llistxattr_query(path),
        |buf| rustix::fs::llistxattr(path, buf),
    )
}

/// lgetxattr(2) of a path (symlinks not followed): the whole value.
pub fn lgetxattr(path: &CStr, name: &CStr) -> io::Result<Vec<u8>> {
    loop {
        let n = rustix::fs::lgetxattr_query(path, name)?;
        let mut buf = vec![0u8; n];
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(m) => {
                buf.truncate(m);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One directory entry.
pub struct DirEntry {
    /// Name (not NUL-terminated).
    pub name: Vec<u8>,
    /// Backing inode number.
    pub ino: u64,
    /// `DT_*` type.
    pub kind: u8,
}

/// Reads a whole directory from a descriptor opened with O_RDONLY|O_DIRECTORY (entries `.`
/// and `..` included). The fd is consumed (the reader closes it), so callers pass a duplicate.
pub fn read_dir(fd: OwnedFd) -> io::Result<Vec<DirEntry>> {
    let mut dir = rustix::fs::Dir::new(fd)?;
    let mut out = vec![];
    while let Some(ent) = dir.read() {
        let ent = ent?;
        out.push(DirEntry {
            name: ent.file_name().to_bytes().to_vec(),
            ino: ent.ino(),
            kind: dirent_type(ent.file_type()),
        });
    }
    Ok(out)
}

/// The `DT_*` value of a directory entry's type, as readdir(3) gives it.
fn dirent_type(t: rustix::fs::FileType) -> u8 {
    use rustix::fs::FileType as T;
    match t {
        T::RegularFile => libc::DT_REG,
        T::Directory => libc::DT_DIR,
        T::Symlink => libc::DT_LNK,
        T::Fifo => libc::DT_FIFO,
        T::Socket => libc::DT_SOCK,
        T::CharacterDevice => libc::DT_CHR,
        T::BlockDevice => libc::DT_BLK,
        T::Unknown => libc::DT_UNKNOWN,
    }
}

/// Largest file handle the kernel hands out (MAX_HANDLE_SZ).
const MAX_HANDLE_SZ: usize = 128;

/// name_to_handle_at(2) of the fd itself: the kernel's persistent identifier of the inode
/// (`handle_bytes`, `handle_type`, then the opaque bytes), about 20 bytes on ext4.
pub fn name_to_handle(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 8 + MAX_HANDLE_SZ];
    buf[..4].copy_from_slice(&(MAX_HANDLE_SZ as u32).to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: rustix has no name_to_handle_at. The descriptor is borrowed for the call, the
    // path is a NUL-terminated literal, `buf` is a `struct file_handle` whose `handle_bytes`
    // (MAX_HANDLE_SZ) matches the room after its 8-byte head, and `mount_id` is a valid int.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let n = u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize;
    buf.truncate(8 + n);
    Ok(buf)
}

/// open_by_handle_at(2): reopens an inode from its handle (needs CAP_DAC_READ_SEARCH).
pub fn open_by_handle(mount_fd: BorrowedFd<'_>, handle: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let declared = handle
        .get(..4)
        .map(|b| u32::from_ne_bytes(b.try_into().unwrap()) as usize);
    if handle.len() < 8 || declared != Some(handle.len() - 8) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut buf = handle.to_vec();
    // SAFETY: rustix has no open_by_handle_at. The descriptor is borrowed for the call and
    // `buf` is a `struct file_handle` whose `handle_bytes` (checked above) is exactly the
    // room after its 8-byte head, which is all the kernel reads.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            buf.as_mut_ptr(),
            flags | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by a successful open_by_handle_at and is owned by
    // nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reads up to `buf.len()` bytes at `off`, retrying short reads and EINTR; returns fewer
/// only at end of file.
pub fn read_full_at(f: &std::fs::File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// True if a caller (primary group `gid`, process `pid`) belongs to group `group`: its
/// primary group or one of the supplementary groups in `/proc/PID/status`. FUSE passes only
/// the primary group; if the process is gone, only that is known.
pub fn caller_in_group(gid: u32, pid: u32, group: u32) -> bool {
    if gid == group {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(group)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn path_fd(p: &std::path::Path) -> OwnedFd {
        openat(cwd(), &cstr(p.as_os_str()).unwrap(), libc::O_PATH, 0).unwrap()
    }

    #[test]
    fn xattrs_through_proc() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let fd = path_fd(&f);
        match setxattr(fd.as_fd(), c"user.cmkfs.test", b"value", 0) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return, // no user xattrs here
            r => r.unwrap(),
        }
        assert_eq!(getxattr(fd.as_fd(), c"user.cmkfs.test", &mut []).unwrap(), 5);
        let mut buf = [0u8; 16];
        let n = getxattr(fd.as_fd(), c"user.cmkfs.test", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"value");
        let e = getxattr(fd.as_fd(), c"user.cmkfs.test", &mut [0u8; 2]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ERANGE));
        assert!(listxattr(fd.as_fd())
            .unwrap()
            .split(|b| *b == 0)
            .any(|n| n == b"user.cmkfs.test"));
        let c = cstr(f.as_os_str()).unwrap();
        assert!(llistxattr(&c)
            .unwrap()
            .split(|b| *b == 0)
            .any(|n| n == b"user.cmkfs.test"));
        assert_eq!(lgetxattr(&c, c"user.cmkfs.test").unwrap(), b"value");
        let e = setxattr(fd.as_fd(), c"user.cmkfs.test", b"v", libc::XATTR_CREATE).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        removexattr(fd.as_fd(), c"user.cmkfs.test").unwrap();
        let e = getxattr(fd.as_fd(), c"user.cmkfs.test", &mut []).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODATA));
    }

    #[test]
    fn seek_data_and_hole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sparse");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(1 << 20).unwrap();
        assert_eq!(lseek(f.as_fd(), 0, libc::SEEK_HOLE).unwrap(), Some(0));
        assert_eq!(lseek(f.as_fd(), 2 << 20, libc::SEEK_DATA).unwrap(), None);
        assert_eq!(lseek(f.as_fd(), 0, libc::SEEK_END).unwrap(), Some(1 << 20));
        assert_eq!(lseek(f.as_fd(), 7, libc::SEEK_SET).unwrap(), Some(7));
    }

    #[test]
    fn directory_entries_and_kinds() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("file"), b"").unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        std::os::unix::fs::symlink("file", d.path().join("link")).unwrap();
        let fd = openat(
            cwd(),
            &cstr(d.path().as_os_str()).unwrap(),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .unwrap();
        let mut got: Vec<(Vec<u8>, u8)> = read_dir(fd).unwrap().into_iter().map(|e| (e.name, e.kind)).collect();
        got.sort();
        let want: Vec<(Vec<u8>, u8)> = vec![
            (b".".to_vec(), libc::DT_DIR),
            (b"..".to_vec(), libc::DT_DIR),
            (b"dir".to_vec(), libc::DT_DIR),
            (b"file".to_vec(), libc::DT_REG),
            (b"link".to_vec(), libc::DT_LNK),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn errno_passes_through() {
        let d = tempfile::tempdir().unwrap();
        let dir = openat(
            cwd(),
            &cstr(d.path().as_os_str()).unwrap(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .unwrap();
        let e = openat(dir.as_fd(), c"missing", libc::O_RDONLY, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        mkdirat(dir.as_fd(), c"sub", 0o700).unwrap();
        let e = mkdirat(dir.as_fd(), c"sub", 0o700).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        mknodat(dir.as_fd(), c"plain", 0o600, 0).unwrap();
        let st = fstat(openat(dir.as_fd(), c"plain", libc::O_PATH, 0).unwrap().as_fd()).unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFREG);
        assert_eq!(st.st_mode & 0o7777, 0o600);
        let e = renameat2(dir.as_fd(), c"plain", dir.as_fd(), c"sub", libc::RENAME_NOREPLACE).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        let e = unlinkat(dir.as_fd(), c"sub", 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR));
        unlinkat(dir.as_fd(), c"sub", libc::AT_REMOVEDIR).unwrap();
    }
}
