//! `cmkfs kek test`: check a KEK end to end and time its unwrap.

use anyhow::{bail, Result};
use serde_json::json;

pub(crate) fn test(uri: &str, iterations: usize, json: bool) -> Result<()> {
    use cmkfs::crypto::SecretKey;
    let t_open = std::time::Instant::now();
    let p = cmkfs::kms::open(uri)?;
    let info = p.current()?;
    let open_ms = t_open.elapsed().as_secs_f64() * 1000.0;
    let secret = SecretKey::random();
    let t_wrap = std::time::Instant::now();
    let wrapped = p.wrap(&secret)?;
    let wrap_ms = t_wrap.elapsed().as_secs_f64() * 1000.0;
    let mut ms = Vec::with_capacity(iterations.max(1));
    for _ in 0..iterations.max(1) {
        let t = std::time::Instant::now();
        let u = p.unwrap(&wrapped.key.version, &wrapped.ciphertext)?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if !u.secret.ct_eq(&secret) {
            bail!("{uri}: the provider unwrapped to a different key: the provider is broken");
        }
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let median = ms[ms.len() / 2];
    if json {
        println!(
            "{}",
            json!({"uri": p.uri(), "provider": info.provider, "key_id": info.key_id, "version": wrapped.key.version,
                   "bits": info.bits, "fingerprint": info.fingerprint, "open_ms": open_ms, "wrap_ms": wrap_ms,
                   "unwrap_ms_median": median, "unwrap_ms_min": ms[0], "unwrap_ms_max": ms[ms.len() - 1],
                   "iterations": ms.len()})
        );
    } else {
        println!(
            "KEK {} ({} key {} version {}, {}) works",
            p.uri(),
            info.provider,
            info.key_id,
            wrapped.key.version,
            info.bits_text()
        );
        println!("fingerprint  {}", info.fingerprint_text());
        println!("open+lookup  {open_ms:.2} ms, wrap {wrap_ms:.2} ms");
        println!(
            "unwrap       median {median:.2} ms, min {:.2} ms, max {:.2} ms over {}",
            ms[0],
            ms[ms.len() - 1],
            ms.len()
        );
    }
    Ok(())
}
