//! Test harness: real key stores, real volumes, real FUSE mounts through the cmkfs binary.
//! Shared by every module of this test binary: running cmkfs and other programs and asserting
//! on the outcome ([`cmkfs_command`], [`ok`], [`run_ok`]), volume fixtures ([`Vol`]), ports for
//! test servers ([`ports`]), format 3 offsets and byte surgery ([`layout`]), in-process provider
//! calls ([`provider`]), and the only changes tests make to the process environment ([`env`]).
#![allow(dead_code)]

pub mod env;
pub mod layout;
pub mod ports;
pub mod provider;

pub use env::set_process_env;
pub use layout::{
    data_off, entry_off, flip, only_backing_xattr, read_block, BS, CUR_AT, ENTRY, GROUP, RESERVED_AT, STAMP_AT, TAG0_AT,
};
pub use ports::{free_port, free_ports};
pub use provider::{expect_provider_err, open_provider};

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::process::{Pid, Signal};

pub const BIN: &str = env!("CARGO_BIN_EXE_cmkfs");

/// Runs the cmkfs binary.
pub fn cmkfs<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    cmkfs_env(args, &[])
}

/// Runs the cmkfs binary with extra environment. The audit log defaults to a shared file in
/// the temporary directory so that tests never write to the system's audit log.
pub fn cmkfs_env<I, S>(args: I, env: &[(&str, &OsStr)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    cmkfs_command(args, env).output().expect("run cmkfs")
}

/// The `Command` behind [`cmkfs_env`], for runs that must be spawned. Variables that tests
/// set in this process for in-process providers ([`env::IN_PROCESS_ONLY`]) are removed: a
/// command sees one only if `env` passes it.
pub fn cmkfs_command<I, S>(args: I, env: &[(&str, &OsStr)]) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(BIN);
    for k in env::IN_PROCESS_ONLY {
        c.env_remove(k);
    }
    c.args(args)
        .env_remove("CMKFS_KEYSTORE")
        .env("CMKFS_AUDIT_LOG", std::env::temp_dir().join("cmkfs-tests-audit.jsonl"))
        // The local volume configuration (allowed KEKs, pins) of tests never touches /etc.
        .env("CMKFS_CONFIG_DIR", std::env::temp_dir().join("cmkfs-tests-config"));
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Asserts that a cmkfs run succeeded (showing its output if not); returns its stdout.
pub fn ok(out: &Output) -> String {
    succeeded(out, "cmkfs")
}

/// Asserts that the run `what` succeeded, showing its stdout and stderr if not; returns its
/// stdout.
pub fn succeeded(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` and asserts it succeeded ([`succeeded`]); returns its stdout.
pub fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    succeeded(&out, what)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails loudly (rather than skipping) where FUSE cannot run: these tests are the point.
pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the integration tests need FUSE (run scripts/test.sh as root)"
    );
    assert_eq!(
        cmkfs::sys::process::euid(),
        0,
        "the integration tests mount filesystems and must run as root (scripts/test.sh)"
    );
}

/// Creates a key in a store and returns its URI.
pub fn create_key(store: &Path, name: &str) -> String {
    create_key_env(store, name, &[])
}

/// [`create_key`] with extra environment (e.g. a volume's own audit log).
pub fn create_key_env(store: &Path, name: &str, env: &[(&str, &OsStr)]) -> String {
    let out = ok(&cmkfs_env(
        [
            OsStr::new("key"),
            OsStr::new("create"),
            OsStr::new("--store"),
            store.as_os_str(),
            OsStr::new("--bits"),
            OsStr::new("2048"),
            OsStr::new(name),
        ],
        env,
    ));
    out.lines().last().unwrap().to_string()
}

/// A volume with its key store, cipher directory and mountpoint in a temporary directory.
pub struct Vol {
    pub tmp: tempfile::TempDir,
    pub store: PathBuf,
    pub cipher: PathBuf,
    pub mnt: PathBuf,
    pub log: PathBuf,
    pub audit: PathBuf,
    pub uri: String,
    pub mounted: bool,
    /// Extra environment for every cmkfs command of this volume (and so its daemon):
    /// provider configuration such as SOFTHSM2_CONF.
    pub env: Vec<(String, std::ffi::OsString)>,
}

impl Vol {
    /// Key, volume and a live mount.
    pub fn new() -> Vol {
        let mut v = Vol::unmounted();
        v.mount(&[]);
        v
    }

    /// Key and volume, not mounted.
    pub fn unmounted() -> Vol {
        Vol::unmounted_with(None, &[])
    }

    /// A volume wrapped by the KEK `uri` (any provider), not mounted; `env` is passed to
    /// every cmkfs command run for it. `None` creates a key in a local store.
    pub fn with_kek(uri: &str, env: &[(&str, &OsStr)]) -> Vol {
        Vol::unmounted_with(Some(uri), env)
    }

    /// Key and volume, not mounted, with the cipher directory at `cipher` (which must not
    /// exist yet), e.g. on a filesystem of the test's own; the rest stays in the temporary
    /// directory.
    pub fn with_cipher_dir(cipher: &Path) -> Vol {
        Vol::build(None, &[], Some(cipher))
    }

    fn unmounted_with(kek: Option<&str>, extra_env: &[(&str, &OsStr)]) -> Vol {
        Vol::build(kek, extra_env, None)
    }

    fn build(kek: Option<&str>, extra_env: &[(&str, &OsStr)], cipher: Option<&Path>) -> Vol {
        require_fuse();
        let tmp = tempfile::Builder::new().prefix("cmkfs-test-").tempdir().unwrap();
        let store = tmp.path().join("keys");
        let cipher = cipher.map_or_else(|| tmp.path().join("cipher"), Path::to_path_buf);
        let mnt = tmp.path().join("mnt");
        let log = tmp.path().join("daemon.log");
        let audit = tmp.path().join("audit.jsonl");
        let config = tmp.path().join("config");
        std::fs::create_dir(&mnt).unwrap();
        let mut env: Vec<(&str, &OsStr)> = vec![
            ("CMKFS_AUDIT_LOG", audit.as_os_str()),
            ("CMKFS_CONFIG_DIR", config.as_os_str()),
        ];
        env.extend_from_slice(extra_env);
        let uri = match kek {
            Some(u) => u.to_string(),
            None => create_key_env(&store, "kek", &env),
        };
        ok(&cmkfs_env(
            [
                OsStr::new("init"),
                OsStr::new("--kek"),
                OsStr::new(&uri),
                cipher.as_os_str(),
            ],
            &env,
        ));
        Vol {
            tmp,
            store,
            cipher,
            mnt,
            log,
            audit,
            uri,
            mounted: false,
            env: std::iter::once(("CMKFS_CONFIG_DIR".to_string(), config.into_os_string()))
                .chain(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_os_string())))
                .collect(),
        }
    }

    pub fn mount_output(&self, extra: &[&str]) -> Output {
        let mut args: Vec<&OsStr> = vec![OsStr::new("mount"), OsStr::new("--log-file"), self.log.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        args.push(self.cipher.as_os_str());
        args.push(self.mnt.as_os_str());
        self.run(args)
    }

    /// Runs cmkfs with this volume's audit log and key store.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        vol_command(self, args, &[]).output().expect("run cmkfs")
    }

    /// Creates another key in this volume's store.
    pub fn new_key(&self, name: &str) -> String {
        create_key(&self.store, name)
    }

    /// Status as JSON.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&ok(&self.run([
            OsStr::new("status"),
            OsStr::new("--json"),
            self.mnt.as_os_str(),
        ])))
        .unwrap()
    }

    /// Polls status until `state` or the deadline; returns the time it took.
    pub fn wait_state(&self, state: &str, deadline: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        wait_until(deadline, || self.status()["state"] == state).then(|| t0.elapsed())
    }

    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn mount(&mut self, extra: &[&str]) {
        ok(&self.mount_output(extra));
        self.mounted = true;
    }

    /// Unmounts, waiting out EBUSY for a few seconds: in this multi-threaded test binary,
    /// another test's fork() briefly duplicates every open descriptor (this test's files on
    /// this mount included) until its child execs, which makes umount(2) answer EBUSY.
    pub fn umount(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = self.run([OsStr::new("umount"), self.mnt.as_os_str()]);
            if out.status.success() || !stderr(&out).contains("is busy") || Instant::now() > deadline {
                ok(&out);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.mounted = false;
    }

    pub fn remount(&mut self) {
        self.umount();
        self.mount(&[]);
    }

    /// Path in the plaintext view.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The backing path of plaintext path `rel` in the cipher directory. Format 3 encrypts
    /// names, so this asks `cmkfs path` (which unlocks the volume, mounted or not); cmkfs's
    /// own names (`cmkfs.*` in the root) are given as they are.
    pub fn c(&self, rel: &str) -> PathBuf {
        if rel.is_empty() || rel.starts_with("cmkfs.") {
            return self.cipher.join(rel);
        }
        let out = self.run([OsStr::new("path"), self.cipher.as_os_str(), OsStr::new(rel)]);
        PathBuf::from(succeeded(&out, &format!("cmkfs path {rel}")).trim_end())
    }

    /// The cipher directory's own path joined with `rel`, names as given (no encryption):
    /// for planting files under names of the attacker's choosing.
    pub fn c_raw(&self, rel: &str) -> PathBuf {
        self.cipher.join(rel)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Vol {
    fn drop(&mut self) {
        if self.mounted {
            let _ = cmkfs([OsStr::new("umount"), OsStr::new("--lazy"), self.mnt.as_os_str()]);
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

pub fn cpath(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap()
}

pub fn errno_of<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// The end-to-end lifecycle every key provider must pass on a live mount:
/// init (done by the caller through [`Vol::with_kek`]), mount, write and read, online
/// rotation to `rotate_to` (another key or key version of the same provider), `revoke` →
/// every read refused with EACCES and status Inaccessible, `restore` → Available again
/// with the same data and no remount, then unmount and mount again.
///
/// `revoke` and `restore` change the state *in the provider* (disable a key, remove a
/// policy, evict a handle), never in cmkfs. Returns the status JSON seen while revoked, so
/// callers can assert on the reason the provider gave.
pub fn provider_lifecycle(
    v: &mut Vol,
    rotate_to: Option<&str>,
    revoke: impl FnOnce(),
    restore: impl FnOnce(),
) -> serde_json::Value {
    let deadline = Duration::from_secs(15);
    v.mount(&["--check-interval", "300ms", "--unreachable-grace", "1s"]);
    assert_eq!(v.status()["state"], "Available", "fresh mount is available");
    let data = pattern(0x5eed, 3 * 4096 + 123);
    std::fs::write(v.p("file"), &data).unwrap();
    assert_eq!(std::fs::read(v.p("file")).unwrap(), data);
    let held = std::fs::File::open(v.p("file")).unwrap();

    if let Some(new_uri) = rotate_to {
        let before = std::fs::read(v.c("file")).unwrap();
        ok(&v.run([
            OsStr::new("rotate"),
            OsStr::new("--kek"),
            OsStr::new(new_uri),
            v.mnt.as_os_str(),
        ]));
        assert!(
            wait_until(deadline, || v.status()["kek_uri"] == new_uri),
            "the daemon follows the rotated keyslot: {}",
            v.status()
        );
        assert_eq!(
            std::fs::read(v.c("file")).unwrap(),
            before,
            "rotation rewrites no file data"
        );
        assert_eq!(
            std::fs::read(v.p("file")).unwrap(),
            data,
            "data readable after rotation"
        );
        v.uri = new_uri.to_string();
    }

    revoke();
    assert!(
        v.wait_state("Inaccessible", deadline).is_some(),
        "revoking in the provider makes the mount inaccessible: {}",
        v.status()
    );
    let revoked_status = v.status();
    assert_eq!(
        errno_of(std::fs::read(v.p("file"))),
        Some(libc::EACCES),
        "reads refused"
    );
    let mut buf = [0u8; 16];
    assert_eq!(
        errno_of(std::os::unix::fs::FileExt::read_at(&held, &mut buf, 0)),
        Some(libc::EACCES),
        "handles opened before are refused too"
    );

    restore();
    assert!(
        v.wait_state("Available", deadline).is_some(),
        "restoring in the provider brings access back without a remount: {}",
        v.status()
    );
    assert_eq!(std::fs::read(v.p("file")).unwrap(), data, "same data after restore");
    drop(held);
    v.umount();
    v.mount(&[]);
    assert_eq!(
        std::fs::read(v.p("file")).unwrap(),
        data,
        "data readable after a remount"
    );
    v.umount();
    revoked_status
}

// ---------------------------------------------------------------------------------------
// Helpers first written for attacks.rs, used by any module.
// ---------------------------------------------------------------------------------------

/// The local configuration directory (trust anchors) of a volume: `CMKFS_CONFIG_DIR` from its
/// environment, or `<vol tmp>/config` when the harness did not set one.
pub fn config_dir_of(v: &Vol) -> PathBuf {
    v.env
        .iter()
        .rev()
        .find(|(k, _)| k == "CMKFS_CONFIG_DIR")
        .map(|(_, d)| PathBuf::from(d))
        .unwrap_or_else(|| v.tmp.path().join("config"))
}

/// Makes sure every command of `v` (and so its daemon) runs with `CMKFS_CONFIG_DIR` set to
/// its own configuration directory ([`config_dir_of`]); returns that directory.
pub fn ensure_config_env(v: &mut Vol) -> PathBuf {
    let d = config_dir_of(v);
    if !v.env.iter().any(|(k, _)| k == "CMKFS_CONFIG_DIR") {
        v.env.push(("CMKFS_CONFIG_DIR".into(), d.clone().into_os_string()));
    }
    d
}

/// A `Command` for the cmkfs binary with the same environment as [`Vol::run`], plus `extra`
/// (later entries win), for runs that must be spawned (deadlines, rusage, killing).
pub fn vol_command<I, S>(v: &Vol, args: I, extra: &[(&str, &OsStr)]) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut env: Vec<(&str, &OsStr)> = vec![
        ("CMKFS_AUDIT_LOG", v.audit.as_os_str()),
        ("CMKFS_KEYSTORE", v.store.as_os_str()),
    ];
    env.extend(v.env.iter().map(|(k, val)| (k.as_str(), val.as_os_str())));
    env.extend_from_slice(extra);
    cmkfs_command(args, &env)
}

/// What [`run_with_deadline`] saw.
pub struct Timed {
    /// `None` when the deadline passed and the process was killed.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
    /// Peak resident set of the process (and the children it waited for), in KiB.
    pub max_rss_kib: i64,
}

impl Timed {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }
}

/// Spawns `cmd` (stdin null, stdout/stderr piped), polls it until it exits or `deadline`
/// passes (then SIGKILLs it, by its own pid), and reports exit, output, time and peak RSS
/// (from wait4). Output is read after the exit; the commands run here print little.
// The child is reaped with wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn run_with_deadline(mut cmd: Command, deadline: Duration) -> Timed {
    use std::io::Read;
    use std::process::Stdio;
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    // Drain the pipes on threads so a chatty child can never block on a full pipe.
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let mut status = 0;
    // SAFETY: rusage is a plain C struct of integers (and timevals of integers), for which all
    // zero bytes are a valid value; wait4 overwrites it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // wait4 is the one call that reaps the child and reports its rusage (rustix and std
        // have no such call). SAFETY: `status` and `ru` are live, exclusively borrowed locals
        // of the types wait4 writes; `pid` is our own unreaped child.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if t0.elapsed() > deadline {
            let _ = send_signal(pid, Signal::KILL);
            killed = true;
            // SAFETY: as above: live, exclusively borrowed out-parameters, our own child.
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            assert_eq!(r, pid);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t0.elapsed();
    // A grandchild (the mount daemon) may hold the pipes open: do not wait for it forever.
    let join = |t: std::thread::JoinHandle<Vec<u8>>| {
        let end = Instant::now() + Duration::from_secs(2);
        while !t.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            String::from_utf8_lossy(&t.join().unwrap()).into_owned()
        } else {
            String::from("<output still held open by a descendant>")
        }
    };
    let stdout = join(t_out);
    let stderr = join(t_err);
    let status = if killed {
        None
    } else if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else {
        Some(128 + libc::WTERMSIG(status))
    };
    Timed {
        status,
        stdout,
        stderr,
        took,
        max_rss_kib: ru.ru_maxrss,
    }
}

/// Everything under `root` (not following symlinks): relative path -> (kind, mode, content
/// or link target). For "nothing outside the volume changed" checks.
pub fn tree_snapshot(root: &Path) -> std::collections::BTreeMap<PathBuf, (String, u32, Vec<u8>)> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let mut m = std::collections::BTreeMap::new();
    fn walk(root: &Path, dir: &Path, m: &mut std::collections::BTreeMap<PathBuf, (String, u32, Vec<u8>)>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let mode = md.permissions().mode();
            let ft = md.file_type();
            if ft.is_symlink() {
                let t = std::fs::read_link(&p).unwrap_or_default();
                m.insert(rel, ("symlink".into(), mode, t.as_os_str().as_bytes().to_vec()));
            } else if ft.is_dir() {
                m.insert(rel, ("dir".into(), mode, vec![]));
                walk(root, &p, m);
            } else if ft.is_file() {
                m.insert(rel, ("file".into(), mode, std::fs::read(&p).unwrap_or_default()));
            } else if ft.is_fifo() {
                m.insert(rel, ("fifo".into(), mode, vec![]));
            } else {
                m.insert(rel, ("other".into(), mode, vec![]));
            }
        }
    }
    walk(root, root, &mut m);
    m
}

/// Opens each FIFO for writing without blocking and closes it at once, so that a process
/// blocked opening it for reading wakes up (and reads end of file). Cleanup for tests that
/// plant FIFOs where cmkfs expects files.
pub fn release_fifo_readers(fifos: &[PathBuf]) {
    for _ in 0..3 {
        for f in fifos {
            // Opened and closed at once (the descriptor drops); a failure (no reader) is fine.
            let _ = rustix::fs::open(f, OFlags::WRONLY | OFlags::NONBLOCK, Mode::empty());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes a FIFO at `p`.
pub fn mkfifo(p: &Path) {
    // mkfifo(3) is mknod with S_IFIFO, relative to the current directory.
    let r = rustix::fs::mknodat(rustix::fs::CWD, p, FileType::Fifo, Mode::from_raw_mode(0o600), 0);
    assert_eq!(r, Ok(()), "mkfifo {}", p.display());
}

/// A process (or process group) id as rustix takes it; `None` unless positive.
fn pid(raw: i32) -> Option<Pid> {
    (raw > 0).then_some(raw).and_then(Pid::from_raw)
}

/// kill(2): sends `sig` to the process `pid` (a whole group: `cmkfs::sys::process::kill_group`).
pub fn send_signal(raw: i32, sig: Signal) -> std::io::Result<()> {
    let pid = pid(raw).ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(rustix::process::kill_process(pid, sig)?)
}

/// kill(2) of `-pgid` with signal 0: whether the group `pgid` still has a process.
pub fn group_alive(pgid: i32) -> bool {
    pid(pgid).is_some_and(|pid| rustix::process::test_kill_process_group(pid).is_ok())
}
