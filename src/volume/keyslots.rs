//! Keyslots: adding, removing and rewrapping the wrapped copies of the volume key, and the
//! invariants that keep a volume openable.
//!
//! A volume has one or more keyslots, each the volume key wrapped by one KEK. The rules:
//!
//! - **The last keyslot cannot be removed**: without one, nobody could ever unwrap the
//!   volume key again, and every file would be lost.
//! - **The only primary keyslot cannot be removed**: a plain mount uses primary slots only
//!   (recovery slots are for an administrator's explicit `--kek`), so removing the last
//!   primary one would leave a volume that mounts only in recovery.
//! - **A new slot gets a fresh id** (one more than the highest): ids are never reused, so an
//!   audit record or a mount that names slot N never silently means another KEK later.
//! - **Every KEK a slot is wrapped by becomes allowed on this host** ([`trust::allow`]) when
//!   the slot is written, and stops being allowed when its last slot is removed: the local
//!   configuration, not the header, decides which KEKs may unlock ([`super::trust`]).
//!
//! Every change goes through [`update_header`]: under the header lock, on a header that
//! authenticates and is not older than this host has seen, with the generation bumped. A
//! wrap is checked by unwrapping once before anything is written ([`super::wrap_slot`]).
//!
//! The checks themselves ([`next_id`], [`find`], [`check_remove`]) are pure functions on the
//! slot list, so they are unit-tested without a provider or a disk. `cmkfs rotate`,
//! `cmkfs keyslot` and the mount daemon's automatic rewrap (in `revalidation`) all go
//! through this module.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{trust, update_header, wrap_slot, Volume, VolumeError};
use crate::audit::{AuditLog, Event};
use crate::crypto::SecretKey;
use crate::format::volume_header::SlotRole;
use crate::format::Keyslot;

/// Why a keyslot change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyslotError {
    /// The header has no slot with this id.
    #[error("no keyslot {0}")]
    NoSuchSlot(u32),
    /// Removing it would leave no keyslot at all.
    #[error("refusing to remove the last keyslot: the volume could never be opened again")]
    LastSlot,
    /// Removing it would leave no primary keyslot.
    #[error("refusing to remove the only primary keyslot: add another primary slot first")]
    OnlyPrimary,
}

/// The id a new keyslot gets: one more than the highest in use (ids are never reused).
pub fn next_id(slots: &[Keyslot]) -> u32 {
    slots.iter().map(|s| s.id).max().unwrap_or(0) + 1
}

/// The position of slot `id` in `slots`.
pub fn find(slots: &[Keyslot], id: u32) -> Result<usize, KeyslotError> {
    slots
        .iter()
        .position(|s| s.id == id)
        .ok_or(KeyslotError::NoSuchSlot(id))
}

/// Checks that slot `id` may be removed from `slots` (see the module documentation) and
/// returns its position.
pub fn check_remove(slots: &[Keyslot], id: u32) -> Result<usize, KeyslotError> {
    let pos = find(slots, id)?;
    if slots.len() == 1 {
        return Err(KeyslotError::LastSlot);
    }
    if slots[pos].role == SlotRole::Primary && !slots.iter().any(|s| s.id != id && s.role == SlotRole::Primary) {
        return Err(KeyslotError::OnlyPrimary);
    }
    Ok(pos)
}

/// Adds a keyslot with `role` wrapping `volume_key` under the KEK at `kek_uri`, allows that
/// KEK on this host, and records `keyslot_add`. Returns the new slot and header generation.
pub fn add(
    dir: &Path,
    volume_key: &SecretKey,
    kek_uri: &str,
    role: SlotRole,
    audit: &AuditLog,
) -> Result<(Keyslot, u64), VolumeError> {
    let mut added = None;
    let h = update_header(dir, volume_key, |h| {
        let slot = wrap_slot(kek_uri, volume_key, next_id(&h.keyslots), role)?;
        trust::allow(dir, &slot.kek_uri)?;
        h.keyslots.push(slot.clone());
        added = Some(slot);
        Ok(())
    })?;
    let s = added.expect("set by update_header");
    audit.record(Event::KeyslotAdd, json!({"cipher_dir": dir.display().to_string(), "keyslot": s.id, "role": s.role, "kek_uri": s.kek_uri, "key_id": s.key_id, "key_version": s.key_version, "generation": h.generation}));
    Ok((s, h.generation))
}

/// Removes keyslot `id` (refused by [`check_remove`]), drops its KEK from this host's allowed
/// KEKs unless another slot still uses it, and records `keyslot_remove`. Returns the new
/// header generation.
pub fn remove(dir: &Path, volume_key: &SecretKey, id: u32, audit: &AuditLog) -> Result<u64, VolumeError> {
    let mut removed_uri = None;
    let h = update_header(dir, volume_key, |h| {
        let pos = check_remove(&h.keyslots, id).map_err(VolumeError::Keyslot)?;
        removed_uri = Some(h.keyslots.remove(pos).kek_uri);
        Ok(())
    })?;
    // A removed keyslot's KEK is no longer allowed here (unless another slot uses it).
    if let (Some(uri), Some(mut r)) = (removed_uri, trust::find_by_dir(dir)?) {
        if !h.keyslots.iter().any(|s| s.kek_uri == uri) {
            r.update(|c| c.allowed_keks.retain(|k| *k != uri))?;
        }
    }
    audit.record(
        Event::KeyslotRemove,
        json!({"cipher_dir": dir.display().to_string(), "keyslot": id, "generation": h.generation}),
    );
    Ok(h.generation)
}

/// Rewraps keyslot `id` with the KEK at `uri`, keeping its id and role, and allows that KEK
/// on this host. Returns the new slot and header generation. O(1): only the header changes;
/// the volume key, and so every file, stays as it is.
pub fn rewrap(dir: &Path, vk: &SecretKey, id: u32, uri: &str) -> Result<(Keyslot, u64), VolumeError> {
    let mut out = None;
    let h = update_header(dir, vk, |h| {
        let pos = find(&h.keyslots, id).map_err(VolumeError::Keyslot)?;
        let role = h.keyslots[pos].role;
        let slot = wrap_slot(uri, vk, id, role)?;
        trust::allow(dir, &slot.kek_uri)?;
        h.keyslots[pos] = slot.clone();
        out = Some(slot);
        Ok(())
    })?;
    Ok((out.expect("set by update_header"), h.generation))
}

/// Why a rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The slot to rotate does not exist.
    #[error(transparent)]
    Slot(#[from] KeyslotError),
    /// Wrapping or writing the header failed.
    #[error(transparent)]
    Volume(#[from] VolumeError),
}

/// A completed rotation.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The slot as it was.
    pub old: Keyslot,
    /// The slot as it is now.
    pub new: Keyslot,
    /// The header generation written.
    pub generation: u64,
    /// How long the rewrap took.
    pub took: Duration,
}

/// `cmkfs rotate`: rewraps keyslot `slot` (default: the one that unlocked `vol`) under the
/// KEK at `kek_uri`, and records `rotate` in the audit log whatever the outcome. `online`
/// says whether the volume is mounted (the daemon then picks the new slot up on reload).
pub fn rotate(
    vol: &Volume,
    slot: Option<u32>,
    kek_uri: &str,
    online: bool,
    audit: &AuditLog,
) -> Result<Rotated, RotateError> {
    let dir = vol.dir();
    let slot_id = slot.unwrap_or(vol.slot().id);
    let old = vol.header().keyslots[find(&vol.header().keyslots, slot_id)?].clone();
    let t0 = Instant::now();
    let r = rewrap(dir, vol.volume_key(), slot_id, kek_uri);
    let took = t0.elapsed();
    let mut rec = json!({"cipher_dir": dir.display().to_string(), "keyslot": slot_id, "old_kek_uri": old.kek_uri, "old_key_id": old.key_id, "old_version": old.key_version, "new_kek_uri": kek_uri, "online": online});
    match &r {
        Ok((s, g)) => {
            rec["outcome"] = "ok".into();
            rec["new_key_id"] = s.key_id.clone().into();
            rec["new_version"] = s.key_version.clone().into();
            rec["generation"] = (*g).into();
        }
        Err(e) => {
            rec["outcome"] = "failed".into();
            rec["error"] = e.to_string().into();
        }
    }
    audit.record(Event::Rotate, rec);
    let (new, generation) = r?;
    Ok(Rotated {
        old,
        new,
        generation,
        took,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: u32, role: SlotRole) -> Keyslot {
        Keyslot {
            id,
            role,
            kek_uri: format!("local:/keys/k{id}"),
            provider: "local".into(),
            key_id: format!("k{id}"),
            key_version: "1".into(),
            kek_fingerprint: String::new(),
            algorithm: String::new(),
            wrapped_key: String::new(),
            created: String::new(),
        }
    }

    #[test]
    fn ids_are_never_reused() {
        assert_eq!(next_id(&[]), 1);
        assert_eq!(next_id(&[slot(0, SlotRole::Primary)]), 1);
        // Slot 1 was removed: the next one is 3, not 1.
        assert_eq!(next_id(&[slot(0, SlotRole::Primary), slot(2, SlotRole::Recovery)]), 3);
    }

    #[test]
    fn the_last_slot_stays() {
        assert_eq!(
            check_remove(&[slot(0, SlotRole::Primary)], 0),
            Err(KeyslotError::LastSlot)
        );
        assert_eq!(
            check_remove(&[slot(0, SlotRole::Recovery)], 0),
            Err(KeyslotError::LastSlot)
        );
    }

    #[test]
    fn the_only_primary_slot_stays() {
        let slots = [slot(0, SlotRole::Primary), slot(1, SlotRole::Recovery)];
        assert_eq!(check_remove(&slots, 0), Err(KeyslotError::OnlyPrimary));
        assert_eq!(check_remove(&slots, 1), Ok(1));
        let two = [slot(0, SlotRole::Primary), slot(3, SlotRole::Primary)];
        assert_eq!(check_remove(&two, 0), Ok(0));
        assert_eq!(check_remove(&two, 3), Ok(1));
    }

    #[test]
    fn unknown_slots_are_named() {
        let slots = [slot(0, SlotRole::Primary), slot(1, SlotRole::Recovery)];
        assert_eq!(check_remove(&slots, 7), Err(KeyslotError::NoSuchSlot(7)));
        assert_eq!(find(&slots, 7).unwrap_err().to_string(), "no keyslot 7");
    }

    #[test]
    fn refusals_say_why_without_posing_as_a_header_error() {
        let e = VolumeError::from(KeyslotError::LastSlot);
        assert_eq!(
            e.to_string(),
            "refusing to remove the last keyslot: the volume could never be opened again"
        );
    }
}
