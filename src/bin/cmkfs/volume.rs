//! `cmkfs volume list|forget`: this host's configuration of volumes.

use anyhow::Result;
use serde_json::json;

use crate::args::VolumeCommand;
use cmkfs::audit::{AuditLog, Event};

pub(crate) fn run(v: VolumeCommand, audit: &AuditLog) -> Result<()> {
    use cmkfs::volume::trust;
    crate::init_logging("warn");
    match v {
        VolumeCommand::List { json } => {
            let recs = trust::list()?;
            if json {
                let v: Vec<_> = recs
                    .iter()
                    .map(|r| json!({"name": r.name, "file": r.path.display().to_string(), "config": r.config}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if recs.is_empty() {
                println!(
                    "no volumes configured in {}",
                    trust::config_dir().join("volumes").display()
                );
            } else {
                for r in &recs {
                    println!("{}: {}", r.name, r.config.cipher_dir.display());
                    for k in &r.config.allowed_keks {
                        println!("  allowed KEK  {k}");
                    }
                    if let Some(p) = &r.config.pin {
                        println!("  pinned       volume {} generation {}", p.volume_id, p.generation);
                    }
                }
            }
        }
        VolumeCommand::Forget { volume } => {
            let r = trust::forget(&volume)?;
            audit.record(
                Event::VolumeForget,
                json!({"name": r.name, "cipher_dir": r.config.cipher_dir.display().to_string(), "pin": r.config.pin}),
            );
            println!(
                "forgot volume '{}' ({}); mount it with --kek URI to pin it again",
                r.name,
                r.config.cipher_dir.display()
            );
        }
    }
    Ok(())
}
