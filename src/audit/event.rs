//! Every kind of audit record, in one closed list: a new event is added here, never made up
//! as a string at a call site, so the names readers of the log match on are all in one place.

use std::fmt;

/// The `event` field of an audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `cmkfs init` created a volume (or failed to).
    Init,
    /// A volume was mounted (or the mount failed).
    Mount,
    /// A volume was unmounted.
    Unmount,
    /// The volume key was unwrapped at mount.
    Unwrap,
    /// The KEK in use is past its expiry date.
    KeyExpiredInUse,
    /// A file's DEK was replaced (`cmkfs rekey`).
    Rekey,
    /// An interrupted rekey was completed at mount.
    RekeyRecovered,
    /// A rekey journal that does not authenticate was left alone.
    RekeyJournalIgnored,
    /// A key check succeeded after failures.
    CheckOk,
    /// A key check failed (first of a run).
    CheckFailed,
    /// Checks since the last summary.
    CheckSummary,
    /// Available <-> Inaccessible.
    StateChange,
    /// `cmkfs lock`.
    Lock,
    /// `cmkfs unlock`.
    Unlock,
    /// The daemon picked up a rewritten volume header.
    HeaderReloaded,
    /// An older volume header put in place of the current one was ignored.
    HeaderRollbackIgnored,
    /// A keyslot was rewrapped with a newer KEK version.
    Rotate,
    /// A keyslot was added.
    KeyslotAdd,
    /// A keyslot was removed.
    KeyslotRemove,
    /// `cmkfs fsck` ran.
    Fsck,
    /// A volume's local record was removed (`cmkfs volume forget`).
    VolumeForget,
    /// A key was created in the local key store.
    KeyCreate,
    /// A new version of a local key was made.
    KeyRotate,
    /// A local key's activation/expiry dates changed.
    KeySetDates,
    /// A local key was enabled.
    KeyEnable,
    /// A local key was disabled.
    KeyDisable,
    /// A local key was deleted (recoverable).
    KeyDelete,
    /// A deleted local key was recovered.
    KeyRecover,
    /// A deleted local key was purged for good.
    KeyPurge,
}

impl Event {
    /// The name stored in the record.
    pub fn as_str(self) -> &'static str {
        use Event::*;
        match self {
            Init => "init",
            Mount => "mount",
            Unmount => "unmount",
            Unwrap => "unwrap",
            KeyExpiredInUse => "key_expired_in_use",
            Rekey => "rekey",
            RekeyRecovered => "rekey_recovered",
            RekeyJournalIgnored => "rekey_journal_ignored",
            CheckOk => "check_ok",
            CheckFailed => "check_failed",
            CheckSummary => "check_summary",
            StateChange => "state_change",
            Lock => "lock",
            Unlock => "unlock",
            HeaderReloaded => "header_reloaded",
            HeaderRollbackIgnored => "header_rollback_ignored",
            Rotate => "rotate",
            KeyslotAdd => "keyslot_add",
            KeyslotRemove => "keyslot_remove",
            Fsck => "fsck",
            VolumeForget => "volume_forget",
            KeyCreate => "key_create",
            KeyRotate => "key_rotate",
            KeySetDates => "key_set_dates",
            KeyEnable => "key_enable",
            KeyDisable => "key_disable",
            KeyDelete => "key_delete",
            KeyRecover => "key_recover",
            KeyPurge => "key_purge",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
