//! Revalidation: the customer's key decides, continuously, whether the volume is usable.
//!
//! A thread of the mount daemon really unwraps the volume's keyslot through the provider every
//! `check_interval` (not a metadata read: a disabled or deleted key, or a removed permission,
//! shows up as a refusal of the unwrap itself).
//!
//! - *Denied* (and any other refusal): the volume becomes Inaccessible at once.
//! - *Unreachable*: it keeps serving for `unreachable_grace`, then becomes Inaccessible.
//! - A successful unwrap on an Inaccessible volume makes it Available again, with no remount.
//! - `cmkfs lock` makes it Inaccessible at once and keeps it so until `cmkfs unlock`.
//!
//! Making it Inaccessible ([`Checker::revoke`]): the gate first refuses reads and name
//! operations while still letting writes through; every inode's kernel page cache is
//! invalidated, which makes the kernel write back dirty (mmap) pages first; then everything is
//! refused, every cached DEK and the volume key are dropped (zeroized), and the page caches are
//! invalidated once more. Plaintext is then neither in our memory nor in the kernel's page
//! cache, and mapped pages fault (SIGBUS) instead of showing plaintext.
//!
//! The thread also picks up header changes (rotation, keyslots) and, for a versionless KEK
//! URI, a second thread rewraps the volume key when the key gets a newer version (through
//! [`volume::keyslots::rewrap`], as `cmkfs rotate` does).
//!
//! It fails closed: every provider call has a deadline ([`crate::kms::call`]); the header
//! is read without blocking (a FIFO or a huge file planted in its place is refused); nothing on
//! the check path takes a lock another process could hold; the rewrap, which does take the
//! header lock and talks to the provider, runs on its own thread; and a watchdog makes the
//! volume Inaccessible when no check has completed within interval + provider timeout + 1 s,
//! whatever the reason (a hung call, a stalled disk, a dead thread).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};
use serde_json::json;

use crate::access::Access;
use crate::audit::{AuditLog, Event};
use crate::format::{Keyslot, VolumeKeys};
use crate::fs::CacheControl;
use crate::kms::{call, ErrorKind, KeyInfo, KeyProvider, Unwrapped};
use crate::volume::{self, CipherRoot, SlotRole};
use subtle::ConstantTimeEq;

pub mod policy;

use policy::{Decision, Outcome, Why};

/// Timing of revalidation.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Time between checks.
    pub interval: Duration,
    /// How long an unreachable provider is tolerated.
    pub grace: Duration,
    /// Longest a single provider call may take before it counts as unreachable.
    pub timeout: Duration,
}

/// What status shows about checks.
#[derive(Debug, Clone, Default)]
pub struct CheckStatus {
    /// Last successful unwrap.
    pub last_ok: Option<SystemTime>,
    /// When the next check is due.
    pub next: Option<SystemTime>,
    /// Since when the provider has been unreachable.
    pub unreachable_since: Option<SystemTime>,
    /// The last check failure.
    pub last_error: Option<String>,
    /// Latency of the last unwrap.
    pub last_latency: Option<Duration>,
    /// Latency of every check since the mount.
    pub latency: crate::daemon::metrics::Histogram,
    /// Checks that unwrapped since the mount.
    pub checks_ok: u64,
    /// Checks that failed since the mount.
    pub checks_failed: u64,
}

struct SlotInUse {
    slot: Keyslot,
    provider: Arc<dyn KeyProvider>,
    key: KeyInfo,
    generation: u64,
}

/// The revalidation thread's state, shared with the control socket.
pub struct Checker {
    access: Arc<Access>,
    dir: PathBuf,
    root: CipherRoot,
    /// The KEK given with `mount --kek`: allowed besides the local configuration's.
    kek_override: Option<String>,
    /// When the last check finished (successfully or not); the watchdog's clock.
    last_done: Mutex<Instant>,
    /// Wakes the rewrap thread.
    rewrap_wake: (Mutex<bool>, Condvar),
    /// Set once a rolled-back header has been reported, so the log is not flooded.
    rollback_reported: AtomicBool,
    cfg: Config,
    caches: CacheControl,
    notifier: fuser::Notifier,
    audit: AuditLog,
    mountpoint: PathBuf,
    slot: Mutex<SlotInUse>,
    status: Mutex<CheckStatus>,
    wake: (Mutex<bool>, Condvar),
    call_in_flight: Arc<AtomicBool>,
    check_lock: Mutex<()>,
    expired_reported: AtomicBool,
}

/// Outcome of one check, for `unlock`.
pub type CheckResult = Result<(), String>;

impl Checker {
    /// Builds the checker for an unlocked volume.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        access: Arc<Access>,
        vol: &volume::Volume,
        cfg: Config,
        caches: CacheControl,
        notifier: fuser::Notifier,
        audit: AuditLog,
        mountpoint: PathBuf,
        kek_override: Option<String>,
    ) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Checker {
            access,
            dir: vol.dir().to_path_buf(),
            root: CipherRoot::open(vol.dir())?,
            kek_override,
            last_done: Mutex::new(Instant::now()),
            rewrap_wake: (Mutex::new(false), Condvar::new()),
            rollback_reported: AtomicBool::new(false),
            cfg,
            caches,
            notifier,
            audit,
            mountpoint,
            slot: Mutex::new(SlotInUse {
                slot: vol.slot().clone(),
                provider: vol.provider().clone(),
                key: vol.key().clone(),
                generation: vol.header().generation,
            }),
            status: Mutex::new(CheckStatus {
                last_ok: Some(SystemTime::now()),
                ..Default::default()
            }),
            wake: (Mutex::new(false), Condvar::new()),
            call_in_flight: Arc::new(AtomicBool::new(false)),
            check_lock: Mutex::new(()),
            expired_reported: AtomicBool::new(vol.key().is_expired()),
        }))
    }

    /// Timing configuration.
    pub fn config(&self) -> Config {
        self.cfg
    }

    /// Check status for `status`.
    pub fn status(&self) -> CheckStatus {
        self.status.lock().clone()
    }

    /// The keyslot, key and generation in use.
    pub fn in_use(&self) -> (Keyslot, KeyInfo, u64) {
        let s = self.slot.lock();
        (s.slot.clone(), s.key.clone(), s.generation)
    }

    fn audit_base(&self) -> serde_json::Value {
        json!({"mountpoint": self.mountpoint.display().to_string(), "cipher_dir": self.dir.display().to_string()})
    }

    fn audit(&self, event: Event, extra: serde_json::Value) {
        let mut v = self.audit_base();
        if let (Some(m), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            m.extend(e);
        }
        self.audit.record(event, v);
    }

    /// Starts the revalidation thread, the rewrap thread and the watchdog.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        *self.last_done.lock() = Instant::now();
        let me = self.clone();
        std::thread::Builder::new()
            .name("cmkfs-revalidate".into())
            .spawn(move || me.run())?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("cmkfs-rewrap".into())
            .spawn(move || me.rewrap_loop())?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("cmkfs-watchdog".into())
            .spawn(move || me.watchdog())?;
        Ok(())
    }

    /// Seconds of unreachable-provider grace left in `cs`, while the provider is unreachable.
    pub fn grace_remaining(&self, cs: &CheckStatus) -> Option<u64> {
        cs.unreachable_since.map(|since| {
            self.cfg
                .grace
                .saturating_sub(since.elapsed().unwrap_or_default())
                .as_secs()
        })
    }

    /// True while the check loop is alive: a check (or, while locked, a scheduled skip)
    /// completed within [`Checker::watchdog_limit`]. What systemd's watchdog pings follow.
    pub fn loop_alive(&self) -> bool {
        self.last_done.lock().elapsed() <= self.watchdog_limit()
    }

    /// The longest time between two completed checks before the watchdog steps in.
    pub fn watchdog_limit(&self) -> Duration {
        policy::watchdog_limit(self.cfg.interval, self.cfg.timeout)
    }

    /// Makes the volume Inaccessible when no check has completed in time. Checks run with
    /// deadlines, so this fires only when something without one stalls (a disk, a kernel
    /// call) or the revalidation thread died; a later check that succeeds restores access.
    fn watchdog(self: Arc<Self>) {
        let limit = self.watchdog_limit();
        let tick = (self.cfg.interval / 4).clamp(Duration::from_millis(50), Duration::from_millis(250));
        loop {
            std::thread::sleep(tick);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let since = self.last_done.lock().elapsed();
                if policy::watchdog_fires(self.access.is_available(), since, limit) {
                    let reason = format!(
                        "no key check completed for {:.1}s (limit: interval + provider timeout + 1s = {:.1}s): failing closed",
                        since.as_secs_f64(),
                        limit.as_secs_f64()
                    );
                    self.revoke(&reason);
                }
            }));
            if r.is_err() {
                tracing::error!("the watchdog check panicked; it keeps running");
            }
        }
    }

    /// Wakes the thread for an immediate check.
    pub fn wake(&self) {
        let (m, c) = &self.wake;
        *m.lock() = true;
        c.notify_all();
    }

    fn run(self: Arc<Self>) {
        let mut last_summary = Instant::now();
        let (mut ok_count, mut fail_count) = (0u64, 0u64);
        loop {
            let next = Instant::now() + self.cfg.interval;
            self.status.lock().next = Some(SystemTime::now() + self.cfg.interval);
            {
                let (m, c) = &self.wake;
                let mut woken = m.lock();
                while !*woken && Instant::now() < next {
                    c.wait_until(&mut woken, next);
                }
                *woken = false;
            }
            if self.access.is_locked() {
                *self.last_done.lock() = Instant::now();
                continue;
            }
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.check_once()));
            match r {
                Ok(Ok(())) => ok_count += 1,
                Ok(Err(_)) => fail_count += 1,
                Err(_) => {
                    // No check result: the watchdog revokes if this keeps happening.
                    tracing::error!("a key check panicked; the next one runs on schedule");
                    fail_count += 1;
                }
            }
            // Checks are summarised in the audit log, not written one per interval.
            if last_summary.elapsed() >= Duration::from_secs(600) {
                let snap = self.access.snapshot();
                self.audit(Event::CheckSummary, json!({"checks_ok": ok_count, "checks_failed": fail_count, "state": snap.state, "refused_ops_since_state_change": snap.refused}));
                last_summary = Instant::now();
                ok_count = 0;
                fail_count = 0;
            }
        }
    }

    /// One revalidation. Serialised: the thread, `unlock` and `reload` may all call it.
    pub fn check_once(&self) -> CheckResult {
        let _g = self.check_lock.lock();
        let r = self.check_locked();
        *self.last_done.lock() = Instant::now();
        r
    }

    fn check_locked(&self) -> CheckResult {
        // Test hook, debug builds only: while the file named by CMKFS_TEST_STALL_CHECK_WHILE
        // exists, a check hangs here, as one stuck in an uninterruptible disk read would; the
        // watchdog must make the volume Inaccessible anyway (tests/it/attacks.rs).
        #[cfg(debug_assertions)]
        if let Some(f) = &crate::config::env().test.stall_check_while {
            while f.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.reload_header_if_changed();
        let (provider, slot) = {
            let s = self.slot.lock();
            (s.provider.clone(), s.slot.clone())
        };
        let t0 = Instant::now();
        // A call still hanging from an earlier check makes this one fail fast as unreachable,
        // rather than piling up threads.
        let r = volume::unwrap_slot(&provider, &slot, self.cfg.timeout, Some(&self.call_in_flight));
        let latency = t0.elapsed();
        {
            let mut st = self.status.lock();
            st.last_latency = Some(latency);
            st.latency.observe(latency.as_secs_f64());
            if r.is_ok() {
                st.checks_ok += 1;
            } else {
                st.checks_failed += 1;
            }
        }
        match r {
            Ok(u) => {
                let was_failing = self.status.lock().last_error.take().is_some();
                {
                    let mut st = self.status.lock();
                    st.last_ok = Some(SystemTime::now());
                    st.unreachable_since = None;
                }
                if was_failing {
                    self.audit(Event::CheckOk, json!({"key_id": u.key.key_id, "key_version": u.key.version, "latency_ms": latency.as_secs_f64() * 1000.0}));
                }
                let available = self.access.is_available();
                let other_key = available
                    && !self
                        .access
                        .with_volume_key(|vk, _| bool::from(vk.expose().ct_eq(u.secret.expose())))
                        .unwrap_or(false);
                match policy::decide(available, Outcome::Unwrapped { other_key }, self.cfg.grace) {
                    Decision::Revoke(_) => {
                        let reason = "the KEK unwrapped a different volume key than the mounted one".to_string();
                        self.revoke(&reason);
                        Err(reason)
                    }
                    Decision::Restore => self.restore(u),
                    Decision::Keep | Decision::InGrace { .. } => {
                        self.key_in_use(u);
                        Ok(())
                    }
                }
            }
            Err(e) => {
                // The error and the start of the grace period change together, so that status
                // never shows one without the other.
                let (first, since) = {
                    let mut st = self.status.lock();
                    let first = st.last_error.is_none();
                    st.last_error = Some(e.to_string());
                    let since = (e.kind == ErrorKind::Unreachable)
                        .then(|| *st.unreachable_since.get_or_insert_with(SystemTime::now));
                    (first, since)
                };
                let outcome = match since {
                    Some(since) => Outcome::Unreachable {
                        for_how_long: since.elapsed().unwrap_or_default(),
                    },
                    None => Outcome::Refused,
                };
                // Revoke first, audit after: writing the audit log must never delay revocation.
                match policy::decide(self.access.is_available(), outcome, self.cfg.grace) {
                    Decision::Revoke(Why::GraceOver) => self.revoke(&format!(
                        "key provider unreachable for more than {}: {e}",
                        humantime::format_duration(self.cfg.grace)
                    )),
                    Decision::Revoke(_) => self.revoke(&e.to_string()),
                    Decision::InGrace { left } => self.access.set_note(Some(format!(
                        "key provider unreachable ({e}); still serving for {}",
                        humantime::format_duration(Duration::from_secs(left.as_secs()))
                    ))),
                    Decision::Keep | Decision::Restore => {}
                }
                tracing::warn!(error = %e, "key revalidation failed");
                if first {
                    self.audit(Event::CheckFailed, json!({"provider": e.provider, "key": e.key, "kind": e.kind, "error": e.message, "latency_ms": latency.as_secs_f64() * 1000.0}));
                }
                Err(e.to_string())
            }
        }
    }

    /// After a check that unwrapped the mounted volume key: notes an expired KEK (audited
    /// once) and asks the rewrap thread to look for a newer key version.
    fn key_in_use(&self, u: Unwrapped) {
        if u.key.is_expired() && !self.expired_reported.swap(true, Ordering::SeqCst) {
            self.audit(
                Event::KeyExpiredInUse,
                json!({"key_id": u.key.key_id, "key_version": u.key.version, "expiry": u.key.expiry}),
            );
        }
        self.access.set_note(u.key.is_expired().then(|| {
            format!(
                "KEK {} version {} expired at {}; rotate it",
                u.key.key_id,
                u.key.version,
                u.key.expiry.as_deref().unwrap_or("?")
            )
        }));
        self.slot.lock().key = u.key;
        self.request_rewrap();
    }

    /// Makes the volume Inaccessible (see the module documentation for the order of steps).
    pub fn revoke(&self, reason: &str) {
        if !self.access.begin_drain(reason) {
            return;
        }
        let t0 = Instant::now();
        let ids = self.caches.inode_ids();
        for &id in &ids {
            // Dirty pages are written back (writes still pass) and cached pages dropped.
            let _ = self.notifier.inval_inode(fuser::INodeNo(id), 0, 0);
        }
        self.access.finish_revoke();
        self.caches.drop_keys();
        for &id in &ids {
            let _ = self.notifier.inval_inode(fuser::INodeNo(id), 0, 0);
        }
        tracing::warn!(
            reason,
            inodes = ids.len(),
            took_ms = t0.elapsed().as_millis() as u64,
            "volume is Inaccessible; keys dropped"
        );
        self.audit(
            Event::StateChange,
            json!({"state": "Inaccessible", "reason": reason, "inodes_invalidated": ids.len()}),
        );
    }

    fn restore(&self, u: Unwrapped) -> CheckResult {
        match volume::read_verified_at(&self.root, &u.secret) {
            Ok((header, keys)) => {
                let refused = self.access.restore(Arc::new(keys), u.secret);
                self.slot.lock().generation = header.generation;
                tracing::info!(refused, "key access restored; volume is Available");
                self.audit(Event::StateChange, json!({"state": "Available", "reason": "revalidation succeeded", "key_id": u.key.key_id, "key_version": u.key.version, "refused_ops_while_inaccessible": refused}));
                self.slot.lock().key = u.key;
                Ok(())
            }
            Err(e) => {
                let reason = format!("key unwrapped but the volume header does not authenticate with it: {e}");
                tracing::error!(%reason);
                Err(reason)
            }
        }
    }

    /// `cmkfs lock`: Inaccessible now, and until `unlock`.
    pub fn lock(&self, uid: u32) {
        self.access.set_locked(Some(uid));
        self.audit(Event::Lock, json!({"requested_by_uid": uid}));
        self.revoke(&format!(
            "locked by uid {uid} ('cmkfs unlock' revalidates with the key provider)"
        ));
        // set_locked is kept through revoke; restore clears it only after unlock.
        self.access.set_locked(Some(uid));
    }

    /// `cmkfs unlock`: revalidates with the provider now.
    pub fn unlock(&self, uid: u32) -> CheckResult {
        self.access.set_locked(None);
        let r = self.check_once();
        self.audit(Event::Unlock, json!({"requested_by_uid": uid, "outcome": match &r { Ok(()) => "Available".to_string(), Err(e) => format!("still Inaccessible: {e}") }}));
        r
    }

    /// True when this mount may use `uri`: the `--kek` it was mounted with, or a URI the
    /// volume's local configuration allows (re-read, so an administrator's edit applies).
    fn allowed(&self, uri: &str) -> bool {
        if self.kek_override.as_deref() == Some(uri) {
            return true;
        }
        matches!(volume::trust::find_by_dir(&self.dir), Ok(Some(r)) if r.allows(uri))
    }

    /// Re-reads the header if another process rewrote it (rotation, keyslot changes) and
    /// switches to the slot now in use. The header is believed only if it authenticates with
    /// the mounted volume key and is newer than the one in use (an older one is a rollback and
    /// is ignored), and the new slot is used only if its KEK is allowed on this host. Needs the
    /// volume key, so only while Available. Never blocks: the header is read with O_NONBLOCK
    /// and a size cap, and the provider is opened with a deadline.
    pub fn reload_header_if_changed(&self) {
        let parsed = match volume::read_header_at(&self.root) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "volume header unreadable; keeping the keyslot in use");
                return;
            }
        };
        let known = self.slot.lock().generation;
        if parsed.header.generation == known {
            return;
        }
        let verified = self.access.with_volume_key(|vk, _| {
            let keys = VolumeKeys::derive(vk, parsed.header.volume_id_bytes()).for_format(parsed.header.version);
            parsed.verify(&keys).is_ok()
        });
        if verified != Some(true) {
            return;
        }
        if parsed.header.generation < known {
            if !self.rollback_reported.swap(true, Ordering::SeqCst) {
                tracing::error!(
                    generation = parsed.header.generation,
                    known,
                    "the volume header was replaced by an older one (rollback); ignored"
                );
                self.audit(
                    Event::HeaderRollbackIgnored,
                    json!({"generation": parsed.header.generation, "in_use": known}),
                );
            }
            return;
        }
        let current_id = self.slot.lock().slot.id;
        let slot = parsed
            .header
            .keyslots
            .iter()
            .find(|s| s.id == current_id && s.role == SlotRole::Primary && self.allowed(&s.kek_uri))
            .or_else(|| {
                parsed
                    .header
                    .keyslots
                    .iter()
                    .find(|s| s.role == SlotRole::Primary && self.allowed(&s.kek_uri))
            })
            .cloned();
        let Some(slot) = slot else {
            tracing::error!(
                generation = parsed.header.generation,
                "the new header has no primary keyslot with a KEK this host allows; keeping the one in use"
            );
            return;
        };
        match volume::open_provider(&slot.kek_uri, self.cfg.timeout) {
            Ok(p) => {
                let mut s = self.slot.lock();
                let old = (s.slot.key_id.clone(), s.slot.key_version.clone());
                s.provider = p;
                s.generation = parsed.header.generation;
                s.slot = slot.clone();
                drop(s);
                tracing::info!(generation = parsed.header.generation, key = %slot.key_id, version = %slot.key_version, "volume header changed; now checking keyslot {}", slot.id);
                self.audit(Event::HeaderReloaded, json!({"generation": parsed.header.generation, "old_key": old.0, "old_version": old.1, "key_id": slot.key_id, "key_version": slot.key_version, "keyslot": slot.id}));
                self.raise_pinned_generation(parsed.header.generation);
            }
            Err(e) => {
                tracing::error!(error = %e, "new keyslot's provider cannot be opened; keeping the old one")
            }
        }
    }

    /// Records a newer header generation in the local configuration, off the check path (it
    /// takes the configuration's lock).
    fn raise_pinned_generation(&self, generation: u64) {
        let dir = self.dir.clone();
        let _ = std::thread::Builder::new().name("cmkfs-pin".into()).spawn(move || {
            if let Ok(Some(mut r)) = volume::trust::find_by_dir(&dir) {
                if let Err(e) = volume::trust::raise_generation(&mut r, generation) {
                    tracing::warn!(error = %e, "cannot record the header generation in the local configuration");
                }
            }
        });
    }

    /// Asks the rewrap thread to look for a newer key version.
    fn request_rewrap(&self) {
        let (m, c) = &self.rewrap_wake;
        *m.lock() = true;
        c.notify_all();
    }

    fn rewrap_loop(self: Arc<Self>) {
        loop {
            {
                let (m, c) = &self.rewrap_wake;
                let mut w = m.lock();
                while !*w {
                    c.wait(&mut w);
                }
                *w = false;
            }
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.rewrap_if_newer_version())).is_err() {
                tracing::error!("the automatic rewrap panicked; it is retried after the next check");
            }
        }
    }

    /// For a versionless URI: rewrap to the key's newest version when one appears. Runs on
    /// the rewrap thread: provider calls have deadlines and the header lock a timeout, but
    /// none of it can hold up a check.
    fn rewrap_if_newer_version(&self) {
        let (slot, provider) = {
            let s = self.slot.lock();
            (s.slot.clone(), s.provider.clone())
        };
        if !volume::uri_is_versionless(&slot.kek_uri) {
            return;
        }
        let p = provider.clone();
        let Ok(cur) = call::with_deadline(&slot.provider, &slot.key_id, self.cfg.timeout, None, move || {
            p.current()
        }) else {
            return;
        };
        if cur.version == slot.key_version {
            return;
        }
        let Some(vk) = self.access.with_volume_key(|vk, _| vk.clone()) else {
            return;
        };
        match volume::keyslots::rewrap(&self.dir, &vk, slot.id, &slot.kek_uri) {
            Ok((new_slot, generation)) => {
                tracing::info!(old = %slot.key_version, new = %new_slot.key_version, "KEK has a newer version; volume key rewrapped");
                {
                    let mut s = self.slot.lock();
                    s.slot = new_slot.clone();
                    s.generation = generation;
                }
                self.audit(Event::Rotate, json!({"auto": true, "key_id": new_slot.key_id, "old_version": slot.key_version, "new_version": new_slot.key_version, "generation": generation}));
            }
            Err(e) => {
                tracing::error!(error = %e, "automatic rewrap to the newer key version failed")
            }
        }
    }
}
