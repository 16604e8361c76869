//! `cmkfs rotate`: rewrap a keyslot under a new KEK (the flow is
//! [`cmkfs::volume::keyslots::rotate`]).

use std::path::Path;

use anyhow::{Context, Result};

use cmkfs::audit::AuditLog;
use cmkfs::volume::{self, keyslots};

pub(crate) fn run(kek: &str, slot: Option<u32>, target: &Path, audit: &AuditLog) -> Result<()> {
    crate::init_logging("warn");
    let (dir, mp) = crate::target::resolve(target)?;
    let vol = volume::open(&dir, None).context("rotation needs the current key to unwrap the volume key")?;
    let r = keyslots::rotate(&vol, slot, kek, mp.is_some(), audit)?;
    crate::target::reload(mp.as_deref());
    let (old, s) = (&r.old, &r.new);
    println!(
        "keyslot {} rewrapped: {} {} version {} -> {} version {} (header generation {}, {:.1} ms)",
        s.id,
        old.provider,
        old.key_id,
        old.key_version,
        s.key_id,
        s.key_version,
        r.generation,
        r.took.as_secs_f64() * 1000.0
    );
    Ok(())
}
