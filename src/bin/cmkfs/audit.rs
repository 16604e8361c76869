//! `cmkfs audit verify`: check the audit log's hash chain ([`cmkfs::audit::verify`]).

use std::path::Path;

use anyhow::{bail, Context, Result};

pub(crate) fn verify(path: &Path, json: bool) -> Result<()> {
    let v = cmkfs::audit::verify(path).with_context(|| format!("cannot read {}", path.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for p in &v.problems {
            println!("{}: {p}", path.display());
        }
        println!("{} records, head {}", v.records, v.head);
    }
    if !v.problems.is_empty() {
        bail!(
            "audit log {} fails verification ({} problems)",
            path.display(),
            v.problems.len()
        );
    }
    println!("chain intact");
    Ok(())
}
