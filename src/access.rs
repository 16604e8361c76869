//! The access gate of a mounted volume: *Available* or *Inaccessible*.
//!
//! Every filesystem operation that reads or changes data or names passes through
//! [`Access::keys`] or [`Access::check`], which answer EACCES while the volume is
//! Inaccessible and count the refusals. The gate holds the only copy of the volume key and
//! the keys derived from it; making the volume Inaccessible drops (zeroizes) them.
//!
//! Going Inaccessible happens in two steps (see [`crate::daemon::revalidation`]): first *draining*,
//! where new reads and name operations are already refused but writes still pass, so that
//! the kernel can write back dirty pages we are invalidating; then *inaccessible*, where
//! everything is refused and the keys are gone. No acknowledged write is lost that way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::Errno;
use parking_lot::RwLock;

use crate::crypto::SecretKey;
use crate::format::VolumeKeys;

/// The externally visible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum State {
    /// Serving I/O.
    Available,
    /// Refusing every operation on data and names with EACCES.
    Inaccessible,
}

enum Phase {
    Available {
        keys: Arc<VolumeKeys>,
        volume_key: SecretKey,
    },
    Draining {
        keys: Arc<VolumeKeys>,
    },
    Inaccessible,
}

struct Inner {
    phase: Phase,
    reason: Option<String>,
    since: SystemTime,
    locked_by: Option<u32>,
}

/// The gate. Shared by the filesystem, the revalidation thread and the control socket.
pub struct Access {
    inner: RwLock<Inner>,
    refused: AtomicU64,
    /// Refused operations since the mount, never reset (for metrics).
    refused_total: AtomicU64,
    /// State changes since the mount (for metrics).
    changes: AtomicU64,
}

/// A snapshot for `status`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// State.
    pub state: State,
    /// Why Inaccessible (or the last notable event).
    pub reason: Option<String>,
    /// When the state last changed.
    pub since: SystemTime,
    /// Operations refused since then.
    pub refused: u64,
    /// The uid that locked the volume, if locked.
    pub locked_by: Option<u32>,
    /// Operations refused since the mount.
    pub refused_total: u64,
    /// State changes (Available to Inaccessible and back) since the mount.
    pub changes: u64,
}

impl Access {
    /// An available volume.
    pub fn new(keys: Arc<VolumeKeys>, volume_key: SecretKey) -> Self {
        Access {
            inner: RwLock::new(Inner {
                phase: Phase::Available { keys, volume_key },
                reason: None,
                since: SystemTime::now(),
                locked_by: None,
            }),
            refused: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
            changes: AtomicU64::new(0),
        }
    }

    fn refuse(&self) -> Errno {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.refused_total.fetch_add(1, Ordering::Relaxed);
        Errno::EACCES
    }

    /// The volume keys, for an operation on file data. EACCES unless Available.
    pub fn keys(&self) -> Result<Arc<VolumeKeys>, Errno> {
        match &self.inner.read().phase {
            Phase::Available { keys, .. } => Ok(keys.clone()),
            _ => Err(self.refuse()),
        }
    }

    /// The volume keys for a write: also allowed while draining, so that the kernel's
    /// write-back of dirty pages during the transition still lands.
    pub fn keys_for_write(&self) -> Result<Arc<VolumeKeys>, Errno> {
        match &self.inner.read().phase {
            Phase::Available { keys, .. } | Phase::Draining { keys } => Ok(keys.clone()),
            Phase::Inaccessible => Err(self.refuse()),
        }
    }

    /// For operations on names and metadata: EACCES unless Available.
    pub fn check(&self) -> Result<(), Errno> {
        match self.inner.read().phase {
            Phase::Available { .. } => Ok(()),
            _ => Err(self.refuse()),
        }
    }

    /// The volume key, for rewrapping (rotation). `None` unless Available.
    pub fn with_volume_key<T>(&self, f: impl FnOnce(&SecretKey, &VolumeKeys) -> T) -> Option<T> {
        match &self.inner.read().phase {
            Phase::Available { volume_key, keys } => Some(f(volume_key, keys)),
            _ => None,
        }
    }

    /// True while Available.
    pub fn is_available(&self) -> bool {
        matches!(self.inner.read().phase, Phase::Available { .. })
    }

    /// True while the volume is locked by an administrator.
    pub fn is_locked(&self) -> bool {
        self.inner.read().locked_by.is_some()
    }

    /// Step 1 of revocation: refuse new reads and name operations, let writes through.
    /// Returns false if the volume was not Available.
    pub fn begin_drain(&self, reason: &str) -> bool {
        let mut i = self.inner.write();
        let keys = match &i.phase {
            Phase::Available { keys, .. } => keys.clone(),
            _ => return false,
        };
        // The raw volume key goes first; it is not needed to finish writes.
        i.phase = Phase::Draining { keys };
        i.reason = Some(reason.to_string());
        i.since = SystemTime::now();
        self.refused.store(0, Ordering::Relaxed);
        self.changes.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Step 2: refuse everything and drop the keys.
    pub fn finish_revoke(&self) {
        let mut i = self.inner.write();
        i.phase = Phase::Inaccessible;
    }

    /// Marks the volume locked by `uid` (the revocation itself is done by the caller).
    pub fn set_locked(&self, uid: Option<u32>) {
        self.inner.write().locked_by = uid;
    }

    /// Back to Available with a freshly unwrapped volume key. Returns the number of
    /// operations refused while Inaccessible.
    pub fn restore(&self, keys: Arc<VolumeKeys>, volume_key: SecretKey) -> u64 {
        let mut i = self.inner.write();
        i.reason = None;
        i.since = SystemTime::now();
        i.locked_by = None;
        if !matches!(i.phase, Phase::Available { .. }) {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        i.phase = Phase::Available { keys, volume_key };
        self.refused.swap(0, Ordering::Relaxed)
    }

    /// Replaces the reason shown in status (e.g. provider unreachable, within grace).
    pub fn set_note(&self, note: Option<String>) {
        let mut i = self.inner.write();
        if matches!(i.phase, Phase::Available { .. }) {
            i.reason = note;
        }
    }

    /// Current state for status.
    pub fn snapshot(&self) -> Snapshot {
        let i = self.inner.read();
        Snapshot {
            state: if matches!(i.phase, Phase::Available { .. }) {
                State::Available
            } else {
                State::Inaccessible
            },
            reason: i.reason.clone(),
            since: i.since,
            refused: self.refused.load(Ordering::Relaxed),
            locked_by: i.locked_by,
            refused_total: self.refused_total.load(Ordering::Relaxed),
            changes: self.changes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_transitions() {
        let vk = SecretKey::random();
        let a = Access::new(Arc::new(VolumeKeys::derive(&vk, [0; 16])), vk.clone());
        assert!(a.keys().is_ok() && a.check().is_ok());
        assert!(a.begin_drain("test"));
        assert_eq!(a.keys().err(), Some(Errno::EACCES));
        assert!(a.keys_for_write().is_ok(), "writes drain");
        a.finish_revoke();
        assert!(a.keys_for_write().is_err());
        assert!(a.with_volume_key(|_, _| ()).is_none());
        assert_eq!(a.check().err(), Some(Errno::EACCES));
        let s = a.snapshot();
        assert_eq!(s.state, State::Inaccessible);
        assert_eq!(s.refused, 3, "keys, keys_for_write and check were refused");
        assert_eq!(a.restore(Arc::new(VolumeKeys::derive(&vk, [0; 16])), vk), 3);
        assert!(a.keys().is_ok() && a.check().is_ok());
        assert_eq!(a.snapshot().refused, 0, "counter restarts with the state");
        assert_eq!(
            (a.snapshot().refused_total, a.snapshot().changes),
            (3, 2),
            "totals do not"
        );
        assert!(a.begin_drain("again"), "an available volume can be revoked again");
    }
}
