//! This process: who it runs as, how the mount daemon hardens itself, detaches, waits for
//! termination signals and unmounts; locks on files; killing a process group.
//!
//! All through rustix except the signal mask and `sigwait` (rustix offers those only in its
//! `runtime` module, whose calls are unsafe and meant for libc-free programs).

use std::fs::File;
use std::io;
use std::path::Path;

use rustix::process::{Pid, Resource, Rlimit, Signal};

/// The effective uid.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The effective gid.
pub fn egid() -> u32 {
    rustix::process::getegid().as_raw()
}

/// The real uid.
pub fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Kills this process with SIGKILL, as a crash would (test hooks).
pub fn kill_self() {
    let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::KILL);
}

/// Sends SIGKILL to the process group `pgid` (a child started as its own group leader, with
/// all its children). Errors (the group is already gone) are ignored.
pub fn kill_group(pgid: u32) {
    if let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
    }
}

/// Takes an exclusive `flock` on `f`, waiting as long as it takes.
pub fn flock(f: &File) -> io::Result<()> {
    Ok(rustix::fs::flock(f, rustix::fs::FlockOperation::LockExclusive)?)
}

/// Takes an exclusive `flock` on `f` if it is free: false when another descriptor holds it.
pub fn try_flock(f: &File) -> io::Result<bool> {
    match rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Makes the process not dumpable: no core dumps with key material, no ptrace attach by the
/// same uid.
pub fn set_not_dumpable() {
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
}

/// Sets the file mode creation mask.
pub fn set_umask(mask: u32) {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask));
}

/// The soft limit on open descriptors (`RLIMIT_NOFILE`); `None` when unlimited.
pub fn nofile_limit() -> Option<u64> {
    rustix::process::getrlimit(Resource::Nofile).current
}

/// Raises the soft limit on open descriptors to the hard limit, and first the hard limit to
/// `ceiling` (`fs.nr_open`, for root) when that is higher. When raising the hard limit is
/// refused, the soft limit still goes up to the old hard limit.
pub fn raise_nofile_limit(ceiling: Option<u64>) {
    // rustix says "unlimited" as None; compare and set as RLIM_INFINITY (u64::MAX).
    let raw = |v: Option<u64>| v.unwrap_or(u64::MAX);
    let lim = |v: u64| (v != u64::MAX).then_some(v);
    let old = rustix::process::getrlimit(Resource::Nofile);
    let mut max = raw(old.maximum);
    if let Some(n) = ceiling {
        if n > max {
            max = n;
        }
    }
    let want = Rlimit {
        current: lim(max),
        maximum: lim(max),
    };
    if rustix::process::setrlimit(Resource::Nofile, want).is_err() {
        let hard = rustix::process::getrlimit(Resource::Nofile).maximum;
        let _ = rustix::process::setrlimit(
            Resource::Nofile,
            Rlimit {
                current: hard,
                maximum: hard,
            },
        );
    }
}

/// setsid(2): a new session with this process as its leader. Async-signal-safe (one system
/// call), so it may run between fork and exec.
pub fn setsid() -> io::Result<()> {
    rustix::process::setsid()?;
    Ok(())
}

/// Points standard output at /dev/null (after the daemon has told its parent it is ready, so
/// that a closed pipe never fails a later write).
pub fn stdout_to_dev_null() -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let null = rustix::fs::open(c"/dev/null", OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
    // Descriptor 1 belongs to no Rust object; dup2 replaces it (without O_CLOEXEC) and
    // `null` is closed when it goes out of scope.
    rustix::stdio::dup2_stdout(&null)?;
    Ok(())
}

/// The signals that end the daemon (SIGTERM, SIGINT, SIGHUP): blocked in every thread, waited
/// for by one.
pub struct TerminationSignals(libc::sigset_t);

impl TerminationSignals {
    /// Blocks SIGTERM, SIGINT and SIGHUP in this thread and in every thread it starts from now
    /// on, so that only [`TerminationSignals::wait`] sees them.
    pub fn block() -> Self {
        let mut s = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the whole set it is given; sigaddset then only
        // changes bits of that initialised set; the signal numbers are valid.
        let set = unsafe {
            libc::sigemptyset(s.as_mut_ptr());
            let mut s = s.assume_init();
            libc::sigaddset(&mut s, libc::SIGTERM);
            libc::sigaddset(&mut s, libc::SIGINT);
            libc::sigaddset(&mut s, libc::SIGHUP);
            s
        };
        // SAFETY: `set` is an initialised signal set; the old mask is not asked for (null).
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        TerminationSignals(set)
    }

    /// Waits until one of the signals arrives; returns its number.
    pub fn wait(&self) -> i32 {
        let mut sig = 0;
        // SAFETY: `self.0` is an initialised signal set and `sig` a valid place for the answer.
        unsafe { libc::sigwait(&self.0, &mut sig) };
        sig
    }
}

/// umount2(2); `lazy` detaches a busy mount (`MNT_DETACH`).
pub fn unmount(mp: &Path, lazy: bool) -> io::Result<()> {
    let flags = if lazy {
        rustix::mount::UnmountFlags::DETACH
    } else {
        rustix::mount::UnmountFlags::empty()
    };
    Ok(rustix::mount::unmount(mp, flags)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_flock_sees_another_holder() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let a = File::create(&p).unwrap();
        let b = File::open(&p).unwrap();
        assert!(try_flock(&a).unwrap());
        assert!(!try_flock(&b).unwrap());
        drop(a);
        assert!(try_flock(&b).unwrap());
        flock(&b).unwrap();
    }

    #[test]
    fn nofile_limit_is_known() {
        assert!(nofile_limit().is_none_or(|n| n > 0));
    }
}
