//! Mounting, daemonizing and unmounting.
//!
//! `cmkfs mount` checks what it can cheaply (volume header present, mountpoint usable, FUSE
//! available), then starts itself again in the background with `--foreground` and waits on
//! the child's stdout: the child unlocks the volume, mounts, starts the control socket, and
//! writes `READY` (or `ERROR: message`) there. So `cmkfs mount` returns only once the mount
//! is live, and every failure reaches the user's terminal with its reason.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

use super::revalidation::{self, Checker};
use super::{control, metrics, notify};
use crate::access::Access;
use crate::audit::{AuditLog, Event};
use crate::fs::CmkFs;
use crate::sys;
use crate::util;
use crate::volume;

/// Everything `cmkfs mount` needs.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Cipher directory.
    pub cipher_dir: PathBuf,
    /// Mountpoint.
    pub mountpoint: PathBuf,
    /// Use this KEK instead of the keyslots' own URIs.
    pub kek: Option<String>,
    /// Stay in the foreground.
    pub foreground: bool,
    /// Let other users access the mount.
    pub allow_other: bool,
    /// FUSE worker threads.
    pub threads: usize,
    /// Daemon log file.
    pub log_file: Option<PathBuf>,
    /// Set by the parent when it started this process as the background daemon.
    pub daemon_child: bool,
    /// Key revalidation interval.
    pub check_interval: Duration,
    /// How long an unreachable key provider is tolerated.
    pub unreachable_grace: Duration,
    /// Audit log.
    pub audit_log: PathBuf,
    /// Longest a provider call may take during revalidation [default: the check interval,
    /// within 2 s..30 s].
    pub provider_timeout: Option<Duration>,
}

/// Default log file of a background mount.
pub fn default_log_file(mountpoint: &Path) -> PathBuf {
    let dir = if util::is_root() {
        PathBuf::from("/var/log/cmkfs")
    } else {
        std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| util::home_dir().map(|h| h.join(".local/state")))
            .map(|d| d.join("cmkfs"))
            .unwrap_or_else(util::runtime_dir)
    };
    let stem = control::socket_path(mountpoint)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    dir.join(format!("mount-{stem}.log"))
}

/// Checks that can be made before unlocking, each with what to do about it.
pub fn preflight(o: &MountOptions) -> Result<()> {
    volume::read_header(&o.cipher_dir)?;
    // Checked before touching the mountpoint: a dead FUSE mount there fails every stat.
    if let Some(t) = control::mount_type(&o.mountpoint) {
        bail!(
            "mountpoint {} is busy: a {t} filesystem is already mounted there (unmount it first{})",
            o.mountpoint.display(),
            if control::is_cmkfs_mount(&o.mountpoint) {
                format!(" with 'cmkfs umount {}'", o.mountpoint.display())
            } else {
                String::new()
            }
        );
    }
    let md = std::fs::metadata(&o.mountpoint).with_context(|| {
        format!(
            "mountpoint {} does not exist; create it with 'mkdir -p {}'",
            o.mountpoint.display(),
            o.mountpoint.display()
        )
    })?;
    if !md.is_dir() {
        bail!("mountpoint {} is not a directory", o.mountpoint.display());
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        bail!("FUSE is unavailable: cannot open /dev/fuse ({e}); install fuse3 and load the fuse module ('modprobe fuse')");
    }
    let c = std::fs::canonicalize(&o.cipher_dir)?;
    let m = std::fs::canonicalize(&o.mountpoint)?;
    if m.starts_with(&c) || c.starts_with(&m) {
        bail!("the mountpoint and the cipher directory must not contain each other");
    }
    Ok(())
}

/// `cmkfs mount`.
pub fn mount(mut o: MountOptions) -> Result<()> {
    o.cipher_dir = std::path::absolute(&o.cipher_dir)?;
    o.mountpoint = control::normalize_mountpoint(&o.mountpoint);
    preflight(&o)?;
    if o.foreground {
        run_foreground(o)
    } else {
        spawn_daemon(o)
    }
}

fn spawn_daemon(o: MountOptions) -> Result<()> {
    let log = o.log_file.clone().unwrap_or_else(|| default_log_file(&o.mountpoint));
    if let Some(d) = log.parent() {
        if !d.exists() {
            util::ensure_private_dir(d).with_context(|| format!("cannot create log directory {}", d.display()))?;
        }
    }
    // Logs name files and keys: private to the mounting user (0600 in a 0700 directory).
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&log)
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount")
        .arg("--foreground")
        .arg("--daemon-child")
        .arg("--threads")
        .arg(o.threads.to_string());
    cmd.arg("--log-file").arg(&log);
    cmd.arg("--check-interval")
        .arg(humantime::format_duration(o.check_interval).to_string());
    cmd.arg("--unreachable-grace")
        .arg(humantime::format_duration(o.unreachable_grace).to_string());
    cmd.arg("--audit-log").arg(&o.audit_log);
    if let Some(t) = o.provider_timeout {
        cmd.arg("--provider-timeout")
            .arg(humantime::format_duration(t).to_string());
    }
    if let Some(k) = &o.kek {
        cmd.arg("--kek").arg(k);
    }
    if o.allow_other {
        cmd.arg("--allow-other");
    }
    cmd.arg(&o.cipher_dir).arg(&o.mountpoint);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(logf));
    // SAFETY: between fork and exec the closure only calls setsid (one system call, no
    // allocation or lock), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let _ = sys::process::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the mount daemon")?;
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    match lines.next() {
        Some(Ok(l)) if l == "READY" => {
            eprintln!(
                "cmkfs: mounted {} at {} (daemon pid {}, log {})",
                o.cipher_dir.display(),
                o.mountpoint.display(),
                child.id(),
                log.display()
            );
            Ok(())
        }
        Some(Ok(l)) => {
            let _ = child.wait();
            bail!("{}", l.strip_prefix("ERROR: ").unwrap_or(&l))
        }
        _ => {
            let st = child.wait()?;
            bail!(
                "the mount daemon exited ({st}) before the mount was ready; see {}",
                log.display()
            )
        }
    }
}

fn harden_process() {
    // Not dumpable: no core dumps with key material, no ptrace attach by the same uid.
    sys::process::set_not_dumpable();
    // Nothing the daemon creates for itself (session markers, journals, logs, locks,
    // sockets) is open to others unless it says so; files created through the mount get
    // the mode the caller asked for, set explicitly (fs::CmkFs restores the bits this
    // umask takes away).
    sys::process::set_umask(0o077);
    // One O_PATH descriptor per inode the kernel references: a volume with many files
    // needs many. Root may raise the hard limit up to fs.nr_open; others get their hard
    // limit.
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    sys::process::raise_nofile_limit(nr_open.filter(|_| util::is_root()));
}

/// Reports readiness or failure to the parent (when daemonized), then detaches stdout.
struct Ready {
    child: bool,
}

impl Ready {
    fn send(&self, msg: &str) {
        if self.child {
            let mut so = std::io::stdout();
            let _ = writeln!(so, "{}", msg.replace('\n', " "));
            let _ = so.flush();
            let _ = sys::process::stdout_to_dev_null();
        }
    }
}

fn run_foreground(o: MountOptions) -> Result<()> {
    let ready = Ready { child: o.daemon_child };
    match mount_and_serve(&o, &ready) {
        Ok(()) => Ok(()),
        Err(e) => {
            ready.send(&format!("ERROR: {e:#}"));
            Err(e)
        }
    }
}

struct DaemonHandler {
    checker: Arc<Checker>,
    caches: crate::fs::CacheControl,
    audit: AuditLog,
    access: Arc<Access>,
    volume_id: String,
    format_version: u32,
    cipher_dir: String,
    mountpoint: String,
    mounted_at: String,
    log_file: Option<String>,
    audit_log: String,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl control::Handler for DaemonHandler {
    fn metrics(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let snap = self.access.snapshot();
        let cs = self.checker.status();
        let io = self.caches.io_stats();
        let unix = |t: SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()
        };
        metrics::render(&metrics::Metrics {
            volume_id: self.volume_id.clone(),
            mountpoint: self.mountpoint.clone(),
            format_version: self.format_version,
            available: snap.state == crate::access::State::Available,
            state_since: unix(snap.since),
            state_changes: snap.changes,
            refused_total: snap.refused_total,
            last_check_ok: cs.last_ok.map(unix),
            checks_ok: cs.checks_ok,
            checks_failed: cs.checks_failed,
            check_latency: cs.latency.clone(),
            grace_remaining: self.checker.grace_remaining(&cs),
            bytes_read: io.bytes_read.load(Relaxed),
            bytes_written: io.bytes_written.load(Relaxed),
            eio: vec![
                ("block_auth", io.eio_block_auth.load(Relaxed)),
                ("truncated", io.eio_truncated.load(Relaxed)),
                ("file_header", io.eio_file_header.load(Relaxed)),
            ],
            open_files: io.open_files.load(Relaxed),
            rss_bytes: metrics::rss_bytes(),
        })
    }

    fn status(&self) -> control::Status {
        let snap = self.access.snapshot();
        let cs = self.checker.status();
        let cfg = self.checker.config();
        let (slot, key, generation) = self.checker.in_use();
        let grace_remaining_secs = self.checker.grace_remaining(&cs);
        control::Status {
            state: format!("{:?}", snap.state),
            reason: snap.reason,
            state_since: rfc3339(snap.since),
            refused_ops: snap.refused,
            locked_by_uid: snap.locked_by,
            last_check_ok: cs.last_ok.map(rfc3339),
            next_check: cs.next.map(rfc3339),
            last_check_latency_ms: cs.last_latency.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
            last_check_error: cs.last_error,
            grace_remaining_secs,
            check_interval: humantime::format_duration(cfg.interval).to_string(),
            unreachable_grace: humantime::format_duration(cfg.grace).to_string(),
            volume_id: self.volume_id.clone(),
            format_version: self.format_version,
            header_generation: generation,
            cipher_dir: self.cipher_dir.clone(),
            mountpoint: self.mountpoint.clone(),
            kek_uri: slot.kek_uri.clone(),
            provider: key.provider.clone(),
            key_id: key.key_id.clone(),
            key_version: key.version.clone(),
            keyslot: slot.id,
            pid: std::process::id(),
            mounted_at: self.mounted_at.clone(),
            log_file: self.log_file.clone(),
            audit_log: self.audit_log.clone(),
        }
    }

    fn lock(&self, uid: u32) -> Result<(), String> {
        self.checker.lock(uid);
        Ok(())
    }

    fn unlock(&self, uid: u32) -> Result<(), String> {
        self.checker.unlock(uid)
    }

    fn reload(&self) -> Result<(), String> {
        self.checker.reload_header_if_changed();
        Ok(())
    }

    fn rekey(&self, path: &str, uid: u32) -> Result<u64, String> {
        let keys = self
            .access
            .keys()
            .map_err(|_| "the volume is Inaccessible: rekey needs the key".to_string())?;
        let t0 = Instant::now();
        let r = self.caches.rekey(&keys, Path::new(path));
        let mut rec = serde_json::json!({"cipher_dir": self.cipher_dir, "mountpoint": self.mountpoint, "path": path, "requested_by_uid": uid, "ms": t0.elapsed().as_millis() as u64});
        match &r {
            Ok(b) => {
                rec["outcome"] = "ok".into();
                rec["bytes"] = (*b).into();
            }
            Err(e) => {
                rec["outcome"] = "failed".into();
                rec["error"] = e.clone().into();
            }
        }
        self.audit.record(Event::Rekey, rec);
        r
    }
}

fn mount_and_serve(o: &MountOptions, ready: &Ready) -> Result<()> {
    harden_process();
    // One daemon per volume per host: taken before the volume is touched, held until exit.
    let _mount_lock = {
        let root = volume::CipherRoot::open(&o.cipher_dir)
            .with_context(|| format!("cannot open cipher directory {}", o.cipher_dir.display()))?;
        volume::lock::acquire_mount(&root, &o.mountpoint)?
    };
    let audit = AuditLog::new(&o.audit_log);
    let base = serde_json::json!({"cipher_dir": o.cipher_dir.display().to_string(), "mountpoint": o.mountpoint.display().to_string()});
    let t0 = Instant::now();
    let vol = match volume::open(&o.cipher_dir, o.kek.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            let mut rec = base.clone();
            rec["outcome"] = "failed".into();
            rec["error"] = e.to_string().into();
            rec["kind"] = serde_json::to_value(e.provider_kind()).unwrap();
            audit.record(Event::Mount, rec);
            return Err(e.into());
        }
    };
    {
        let mut rec = base.clone();
        rec["outcome"] = "ok".into();
        rec["key_id"] = vol.key().key_id.clone().into();
        rec["key_version"] = vol.key().version.clone().into();
        rec["keyslot"] = vol.slot().id.into();
        rec["latency_ms"] = (t0.elapsed().as_secs_f64() * 1000.0).into();
        audit.record(Event::Unwrap, rec.clone());
        if vol.key().is_expired() {
            tracing::warn!(key = %vol.key().key_id, version = %vol.key().version, expiry = ?vol.key().expiry, "the KEK version in use has expired; it still unwraps, rotate to a new version");
            rec["expiry"] = vol.key().expiry.clone().into();
            audit.record(Event::KeyExpiredInUse, rec);
        }
    }
    // Finish rekeys a crash interrupted, before anything reads those files.
    let root = volume::CipherRoot::open(&o.cipher_dir)
        .with_context(|| format!("cannot open cipher directory {}", o.cipher_dir.display()))?;
    match crate::store::journal::recover(&root, vol.keys()) {
        Ok(r) => {
            if !r.completed.is_empty() {
                tracing::warn!(files = ?r.completed, "completed interrupted rekeys");
                let mut rec = base.clone();
                rec["files"] = r.completed.into();
                audit.record(Event::RekeyRecovered, rec);
            }
            if !r.ignored.is_empty() {
                let mut rec = base.clone();
                rec["journals"] = r.ignored.into();
                audit.record(Event::RekeyJournalIgnored, rec);
            }
        }
        Err(e) => return Err(anyhow::anyhow!("cannot complete an interrupted rekey: {e}")),
    }
    // Layout 2 stamps every entry it writes with this session (see store::session).
    let write_session = crate::store::session::begin(&o.cipher_dir)
        .with_context(|| format!("cannot create the session marker in {}", o.cipher_dir.display()))?;
    let access = Arc::new(Access::new(vol.keys().clone(), vol.volume_key().clone()));
    let fs = CmkFs::new(&o.cipher_dir, access.clone(), write_session.stamps().clone())
        .with_context(|| format!("cannot open cipher directory {}", o.cipher_dir.display()))?;
    let caches = fs.cache_control();
    use fuser::MountOption as M;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        M::FSName(o.cipher_dir.display().to_string()),
        M::Subtype("cmkfs".into()),
        M::DefaultPermissions,
        M::NoDev,
        M::NoSuid,
    ];
    if util::is_root() {
        // fuser mounts as root with mount(2) and type "fuse"; the kernel's own `subtype`
        // option makes /proc/self/mountinfo say "fuse.cmkfs", so that mount(8) recognises the
        // mount as the fstab entry's (a second `mount -a` is a no-op). Non-root mounts go
        // through fusermount3, which sets the subtype itself.
        config.mount_options.push(M::CUSTOM("subtype=cmkfs".into()));
    }
    config.acl = if o.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    config.n_threads = Some(o.threads.max(1));
    config.clone_fd = true;
    // Block termination signals in every thread; one thread waits for them and unmounts.
    let sigs = sys::process::TerminationSignals::block();
    let session = fuser::Session::new(fs, &o.mountpoint, &config)
        .with_context(|| format!("FUSE mount of {} failed", o.mountpoint.display()))?;
    let cfg = revalidation::Config {
        interval: o.check_interval,
        grace: o.unreachable_grace,
        timeout: o
            .provider_timeout
            .unwrap_or_else(|| o.check_interval.clamp(Duration::from_secs(2), Duration::from_secs(30))),
    };
    caches.set_notifier(session.notifier());
    let checker = Checker::new(
        access.clone(),
        &vol,
        cfg,
        caches.clone(),
        session.notifier(),
        audit.clone(),
        o.mountpoint.clone(),
        o.kek.clone(),
    )
    .context("cannot start key revalidation")?;
    let handler = Arc::new(DaemonHandler {
        checker: checker.clone(),
        caches,
        audit: audit.clone(),
        access: access.clone(),
        volume_id: vol.header().volume_id.clone(),
        format_version: vol.header().version,
        cipher_dir: o.cipher_dir.display().to_string(),
        mountpoint: o.mountpoint.display().to_string(),
        mounted_at: util::now_rfc3339(),
        log_file: o.log_file.as_ref().map(|l| l.display().to_string()),
        audit_log: o.audit_log.display().to_string(),
    });
    let sock = control::serve(&o.mountpoint, handler).context("cannot start the control socket")?;
    checker.spawn().context("cannot start the revalidation thread")?;
    let mp = o.mountpoint.clone();
    std::thread::Builder::new()
        .name("cmkfs-signals".into())
        .spawn(move || {
            let sig = sigs.wait();
            tracing::info!(signal = sig, "termination signal; unmounting");
            if let Err(e) = unmount(&mp, true) {
                tracing::error!(error = %e, "unmount on signal failed");
            }
        })?;
    tracing::info!(cipher = %o.cipher_dir.display(), mountpoint = %o.mountpoint.display(), volume = %vol.header().volume_id, interval = ?o.check_interval, "mounted");
    let mut rec = base.clone();
    rec["volume_id"] = vol.header().volume_id.clone().into();
    rec["check_interval"] = humantime::format_duration(o.check_interval).to_string().into();
    audit.record(Event::Mount, rec);
    drop(vol);
    ready.send("READY");
    let sd = notify::SdNotify::from_env().map(Arc::new);
    if let Some(sd) = &sd {
        notify_systemd(sd.clone(), access.clone(), checker.clone())?;
    }
    raise_readahead(o.mountpoint.clone());
    let r = session.run();
    if let Some(sd) = &sd {
        sd.send("STOPPING=1");
    }
    let _ = std::fs::remove_file(&sock);
    tracing::info!(mountpoint = %o.mountpoint.display(), "unmounted; daemon exiting");
    audit.record(Event::Unmount, base);
    r.context("FUSE session ended with an error")
}

/// Tells systemd the mount is ready, then keeps its STATUS in step with the volume's state
/// and pings its watchdog while the key check loop is alive (see [`notify`]).
fn notify_systemd(sd: Arc<notify::SdNotify>, access: Arc<Access>, checker: Arc<Checker>) -> Result<()> {
    let status = |a: &Access| {
        let s = a.snapshot();
        notify::status_line(&format!("{:?}", s.state), s.reason.as_deref())
    };
    let mut last = status(&access);
    sd.send(&format!("READY=1\nSTATUS={last}"));
    // Pings at half the watchdog interval; without a watchdog the state is still followed.
    let tick = sd
        .watchdog()
        .map(|w| (w / 2).clamp(Duration::from_millis(50), Duration::from_secs(1)))
        .unwrap_or(Duration::from_secs(1));
    std::thread::Builder::new()
        .name("cmkfs-sd-notify".into())
        .spawn(move || loop {
            std::thread::sleep(tick);
            let now = status(&access);
            if now != last {
                sd.send(&format!("STATUS={now}"));
                last = now;
            }
            if sd.watchdog().is_some() && checker.loop_alive() {
                sd.send("WATCHDOG=1");
            }
        })?;
    Ok(())
}

/// Sets the mount's readahead to the largest request (1 MiB) instead of the kernel's 128 KiB,
/// so sequential reads arrive as few large requests. The mount's backing-device info is named
/// after its device number; stat'ing the mountpoint needs the session running, hence a thread.
/// Needs root (sysfs); otherwise the kernel default stays.
fn raise_readahead(mp: PathBuf) {
    let _ = std::thread::Builder::new()
        .name("cmkfs-readahead".into())
        .spawn(move || {
            use std::os::unix::fs::MetadataExt;
            let Ok(md) = std::fs::metadata(&mp) else { return };
            let dev = md.dev();
            let path = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
            match std::fs::write(&path, "1024") {
                Ok(()) => tracing::info!(%path, "readahead set to 1 MiB"),
                Err(e) => tracing::info!(%path, error = %e, "readahead left at the kernel default"),
            }
        });
}

/// Unmounts `mp` (umount2 as root, `fusermount3 -u` otherwise); `lazy` detaches a busy mount.
pub fn unmount(mp: &Path, lazy: bool) -> Result<()> {
    if util::is_root() {
        if let Err(e) = sys::process::unmount(mp, lazy) {
            match e.raw_os_error() {
                Some(libc::EBUSY) => bail!(
                    "{} is busy: files on it are still in use (see 'fuser -vm {}'); close them, or use --lazy",
                    mp.display(),
                    mp.display()
                ),
                Some(libc::EINVAL) => bail!("{} is not mounted", mp.display()),
                _ => bail!("unmounting {} failed: {e}", mp.display()),
            }
        }
        return Ok(());
    }
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd
        .arg(mp)
        .output()
        .context("cannot run fusermount3 (install the fuse3 package)")?;
    if !out.status.success() {
        bail!(
            "fusermount3 -u {} failed: {}",
            mp.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `cmkfs umount`: unmounts and waits for the daemon to finish.
pub fn umount_and_wait(mp: &Path, lazy: bool, timeout: Duration) -> Result<()> {
    let mp = control::normalize_mountpoint(mp);
    if !control::is_cmkfs_mount(&mp) {
        bail!("{} is not a cmkfs mount", mp.display());
    }
    let pid = control::status(&mp).ok().map(|s| s.pid);
    unmount(&mp, lazy)?;
    if let Some(pid) = pid {
        let deadline = Instant::now() + timeout;
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            if Instant::now() > deadline {
                bail!("unmounted, but the daemon (pid {pid}) has not exited after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
        .unwrap_or(true)
}
