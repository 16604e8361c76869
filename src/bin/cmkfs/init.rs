//! `cmkfs init`: create a volume.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use cmkfs::audit::{AuditLog, Event};
use cmkfs::volume;

pub(crate) fn run(kek: &str, name: Option<&str>, dir: &Path, audit: &AuditLog) -> Result<()> {
    crate::init_logging("warn");
    let r = volume::init(dir, kek, name);
    match &r {
        Ok(volume::Created { header: h, .. }) => audit.record(Event::Init, json!({"cipher_dir": dir.display().to_string(), "volume_id": h.volume_id, "kek_uri": h.keyslots[0].kek_uri, "key_id": h.keyslots[0].key_id, "key_version": h.keyslots[0].key_version, "outcome": "ok"})),
        // A URI that failed may hold a pasted secret: only its scheme is recorded.
        Err(e) => audit.record(Event::Init, json!({"cipher_dir": dir.display().to_string(), "kek_scheme": kek.split(':').next().unwrap_or(""), "outcome": "failed", "error": e.to_string()})),
    }
    let c = r?;
    let (h, rec) = (&c.header, &c.record);
    if let Some(w) = &c.warning {
        eprintln!("cmkfs: warning: {w}");
    }
    let s = &h.keyslots[0];
    println!("created volume {} in {}", h.volume_id, dir.display());
    println!("keyslot 0: {} (key {} version {})", s.kek_uri, s.key_id, s.key_version);
    println!(
        "recorded as '{}' in {} (allowed KEKs, pinned volume key)",
        rec.name,
        rec.path.display()
    );
    Ok(())
}
