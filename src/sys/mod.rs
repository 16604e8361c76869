//! System calls, wrapped safely: everything below the filesystem and the daemon that talks to
//! the kernel directly.
//!
//! - [`fs`]: the *at() calls, xattrs, fallocate, lseek, readdir and file handles the FUSE
//!   filesystem and the cipher root do relative to descriptors (re-exported here, so
//!   callers write `sys::openat`).
//! - [`mountinfo`]: the mount table (`/proc/self/mountinfo`).
//! - [`process`]: ids, process hardening (not dumpable, umask, descriptor limit), detaching,
//!   termination signals, unmounting, `flock`.
//!
//! The wrappers use rustix; `libc` remains only where rustix has no such call, each such
//! `unsafe` with its `// SAFETY:` reason. Errors are [`std::io::Error`]s carrying the
//! kernel's errno unchanged (the FUSE layer answers with it).

pub mod fs;
pub mod mountinfo;
pub mod process;

pub use self::fs::*;
