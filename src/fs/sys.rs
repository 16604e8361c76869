//! Thin, safe wrappers over the *at() syscalls the filesystem needs.
//!
//! The filesystem keeps an `O_PATH` descriptor for every inode the kernel knows, and does
//! every operation relative to those descriptors: renames never invalidate anything, hard
//! links need no path bookkeeping, and no operation re-resolves a path from the root.
//! Operations the kernel does not offer on `O_PATH` descriptors (chmod, xattrs, reopening
//! for I/O) go through `/proc/self/fd/N`, as libfuse's passthrough_hp does.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// A `libc::stat` (64-bit on every Linux target we build for).
pub type Stat = libc::stat;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
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
    // SAFETY: AT_FDCWD is not a real descriptor but a constant every *at() call accepts; it is
    // valid for the whole life of the process and never closed.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

/// openat(2).
pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` was just returned by a successful call and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens an inode for I/O from its O_PATH descriptor.
pub fn reopen(path_fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<OwnedFd> {
    let p = proc_path(path_fd.as_raw_fd());
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    let fd = cvt(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by a successful call and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Turns off the backing filesystem's readahead on the descriptor the write path uses
/// (`POSIX_FADV_RANDOM`), unless `CMKFS_BACKING_READAHEAD=1` is in the mount's environment
/// (for comparisons). User reads go through a second descriptor that keeps it.
///
/// Why: the daemon's small reads on the write path (an entry page, the old block of a
/// read-modify-write) look sequential under appends and sequential writes; the backing
/// filesystem then reads ahead into large folios (ext4, Linux 6.16 and later), and every later
/// small `pwrite` into such a folio walks all its buffer heads. Under 512-byte appends that
/// walk (`ext4_block_write_begin`, `block_commit_write`) was 19% of the daemon's time; see
/// docs/PERFORMANCE.md for the measurements.
pub fn no_backing_readahead(fd: BorrowedFd<'_>) {
    static KEEP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *KEEP.get_or_init(|| std::env::var_os("CMKFS_BACKING_READAHEAD").is_some_and(|v| v == "1")) {
        return;
    }
    // Advice only: a failure changes speed, never content.
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    let rc = unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    if rc != 0 {
        tracing::debug!(errno = rc, "posix_fadvise(POSIX_FADV_RANDOM) on a backing file failed");
    }
}

/// Starts writeback of a backing file's dirty pages without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), unless `CMKFS_NO_EARLY_WRITEBACK=1` is in the
/// mount's environment (for comparisons). The caller's later fsync waits for it.
pub fn start_writeback(fd: BorrowedFd<'_>) {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *OFF.get_or_init(|| std::env::var_os("CMKFS_NO_EARLY_WRITEBACK").is_some_and(|v| v == "1")) {
        return;
    }
    // Only a head start: the fsync that follows does the real work and reports errors.
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    if unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) } != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "sync_file_range on a backing file failed");
    }
}

/// fstatat(2) of the fd itself (`AT_EMPTY_PATH`).
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    // SAFETY: a plain C struct of integers, for which all-zero bytes are a valid value.
    let mut st: Stat = unsafe { std::mem::zeroed() };
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    cvt(unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// mkdirat(2).
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// mknodat(2).
pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t, rdev: libc::dev_t) -> io::Result<()> {
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

/// symlinkat(2).
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// readlinkat(2) of an O_PATH symlink descriptor.
pub fn readlink(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    let n = cvt_size(unsafe { libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(n);
    Ok(buf)
}

/// unlinkat(2).
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// renameat2(2).
pub fn renameat2(od: BorrowedFd<'_>, on: &CStr, nd: BorrowedFd<'_>, nn: &CStr, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    cvt(unsafe { libc::renameat2(od.as_raw_fd(), on.as_ptr(), nd.as_raw_fd(), nn.as_ptr(), flags) }).map(drop)
}

/// Hard-links the inode behind an O_PATH fd as `dir/name`.
pub fn link_fd(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            p.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

/// chmod through /proc (O_PATH fds cannot fchmod).
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    cvt(unsafe { libc::chmod(p.as_ptr(), mode) }).map(drop)
}

/// fchownat(2) with `AT_EMPTY_PATH`; `u32::MAX` leaves an id unchanged.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    cvt(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// utimensat(2) with `AT_EMPTY_PATH`.
pub fn utimens_fd(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    cvt(unsafe {
        libc::utimensat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// fallocate(2).
pub fn fallocate(fd: BorrowedFd<'_>, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    cvt(unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset as libc::off_t, len as libc::off_t) }).map(drop)
}

/// lseek(2); `Ok(None)` for ENXIO (no more data / offset past the end).
pub fn lseek(fd: BorrowedFd<'_>, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

/// fstatvfs(3).
pub fn statvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    // SAFETY: a plain C struct of integers, for which all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// getxattr(2) through /proc. `buf` empty asks for the size.
pub fn getxattr(fd: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    cvt_size(unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// setxattr(2) through /proc.
pub fn setxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: libc::c_int) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    cvt(unsafe { libc::setxattr(p.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), flags) }).map(drop)
}

/// listxattr(2) through /proc: the NUL-separated name list.
pub fn listxattr(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let p = proc_path(fd.as_raw_fd());
    loop {
        // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
        // NUL-terminated, and its buffers outlive the call with lengths that match them.
        let n = cvt_size(unsafe { libc::listxattr(p.as_ptr(), std::ptr::null_mut(), 0) })?;
        let mut buf = vec![0u8; n];
        // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
        // NUL-terminated, and its buffers outlive the call with lengths that match them.
        match cvt_size(unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }) {
            Ok(m) => {
                buf.truncate(m);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// removexattr(2) through /proc.
pub fn removexattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
    cvt(unsafe { libc::removexattr(p.as_ptr(), name.as_ptr()) }).map(drop)
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

/// Reads a whole directory from a descriptor opened with O_RDONLY|O_DIRECTORY. The fd is
/// consumed (closedir closes it), so callers pass a duplicate.
pub fn read_dir(fd: OwnedFd) -> io::Result<Vec<DirEntry>> {
    use std::os::fd::IntoRawFd;
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` is an open directory descriptor we own; on success the DIR owns it.
    let dir = unsafe { libc::fdopendir(raw) };
    if dir.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `raw` is still ours, and is closed once.
        unsafe { libc::close(raw) };
        return Err(e);
    }
    let mut out = vec![];
    let res = loop {
        // SAFETY: errno is thread-local; clearing it tells readdir's end from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `dir` is the valid DIR* from fdopendir, not yet closed.
        let ent = unsafe { libc::readdir64(dir) };
        if ent.is_null() {
            // SAFETY: errno is thread-local and always readable.
            let errno = unsafe { *libc::__errno_location() };
            break if errno == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(errno))
            };
        }
        // SAFETY: readdir returned a non-null entry, valid until the next readdir or closedir.
        let ent = unsafe { &*ent };
        // SAFETY: the kernel NUL-terminates d_name within the entry.
        let name = unsafe { CStr::from_ptr(ent.d_name.as_ptr()) }.to_bytes().to_vec();
        out.push(DirEntry {
            name,
            ino: ent.d_ino,
            kind: ent.d_type,
        });
    };
    // SAFETY: `dir` is valid and closed exactly once (which also closes `raw`).
    unsafe { libc::closedir(dir) };
    res.map(|_| out)
}

/// Largest file handle the kernel hands out (MAX_HANDLE_SZ).
const MAX_HANDLE_SZ: usize = 128;

/// name_to_handle_at(2) of the fd itself: the kernel's persistent identifier of the inode
/// (`handle_bytes`, `handle_type`, then the opaque bytes), about 20 bytes on ext4.
pub fn name_to_handle(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 8 + MAX_HANDLE_SZ];
    buf[..4].copy_from_slice(&(MAX_HANDLE_SZ as u32).to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
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
    let mut buf = handle.to_vec();
    // SAFETY: FFI call; its descriptors are borrowed for the call, its C strings are
    // NUL-terminated, and its buffers outlive the call with lengths that match them.
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
    // SAFETY: `fd` was just returned by a successful call and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
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
