//! `cmkfs keyslot list|add|remove` (the rules are [`cmkfs::volume::keyslots`]).

use anyhow::{bail, Context, Result};

use crate::args::KeyslotCommand;
use cmkfs::audit::AuditLog;
use cmkfs::volume::{self, keyslots, SlotRole};

pub(crate) fn run(k: KeyslotCommand, audit: &AuditLog) -> Result<()> {
    crate::init_logging("warn");
    match k {
        KeyslotCommand::List { json, target } => {
            let (dir, _) = crate::target::resolve(&target)?;
            let parsed = volume::read_header(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&parsed.header.keyslots)?);
            } else {
                println!("(not yet authenticated: listing does not need the key)");
                println!("{:>4} {:<9} {:<8} {:<8} KEK URI", "SLOT", "ROLE", "PROVIDER", "VERSION");
                for s in &parsed.header.keyslots {
                    println!(
                        "{:>4} {:<9} {:<8} {:<8} {}",
                        s.id,
                        format!("{:?}", s.role).to_lowercase(),
                        s.provider,
                        s.key_version,
                        s.kek_uri
                    );
                }
            }
        }
        KeyslotCommand::Add { kek, role, target } => {
            let role = match role.as_str() {
                "recovery" => SlotRole::Recovery,
                "primary" => SlotRole::Primary,
                r => bail!("--role '{r}': use recovery or primary"),
            };
            let (dir, mp) = crate::target::resolve(&target)?;
            let vol =
                volume::open(&dir, None).context("adding a keyslot needs the current key to unwrap the volume key")?;
            let (s, _) = keyslots::add(&dir, vol.volume_key(), &kek, role, audit)?;
            crate::target::reload(mp.as_deref());
            println!(
                "added keyslot {} ({:?}) for {} version {}",
                s.id, s.role, s.key_id, s.key_version
            );
        }
        KeyslotCommand::Remove { slot, target } => {
            let (dir, mp) = crate::target::resolve(&target)?;
            let vol = volume::open(&dir, None).context("removing a keyslot needs the current key")?;
            keyslots::remove(&dir, vol.volume_key(), slot, audit)?;
            crate::target::reload(mp.as_deref());
            println!("removed keyslot {slot}");
        }
    }
    Ok(())
}
