//! `cmkfs key ...`: the local key store (the `local:` provider's keys), with an audit
//! record for every change.

use anyhow::{Context, Result};
use serde_json::json;

use crate::args::{check_time, name_version, KeyCommand, StoreArg};
use cmkfs::audit::{AuditLog, Event};
use cmkfs::kms::local::store::KeyStore;

fn key_fields(store: &KeyStore, name: &str) -> serde_json::Value {
    json!({"store": store.root().display().to_string(), "key": name})
}

pub(crate) fn run(k: KeyCommand, audit: &AuditLog) -> Result<()> {
    crate::init_logging("warn");
    match k {
        KeyCommand::Create {
            store,
            bits,
            activation,
            expiry,
            no_purge_protection,
            name,
        } => {
            check_time(&activation, "activation")?;
            check_time(&expiry, "expiry")?;
            let ks = store.open();
            let mut meta = ks.create(&name, bits, activation, expiry)?;
            if no_purge_protection {
                meta = ks.set_purge_protection(&name, false)?;
            }
            let v = &meta.versions[0];
            let mut rec = key_fields(&ks, &name);
            rec["version"] = v.version.into();
            rec["bits"] = v.bits.into();
            rec["fingerprint"] = v.fingerprint.clone().into();
            audit.record(Event::KeyCreate, rec);
            println!(
                "created key '{}' version {} (RSA-{}) in {}",
                meta.name,
                v.version,
                v.bits,
                ks.root().display()
            );
            println!("fingerprint {}", v.fingerprint);
            println!("{}", ks.uri(&name));
        }
        KeyCommand::List { store, json } => {
            let ks = store.open();
            let keys = ks.list()?;
            if json {
                let v: Vec<_> = keys.iter().map(|k| json!({"name": k.name, "uri": ks.uri(&k.name), "state": k.state(), "created": k.created, "deleted": k.deleted, "versions": k.versions})).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if keys.is_empty() {
                println!("no keys in {}", ks.root().display());
            } else {
                println!(
                    "{:<24} {:>4} {:>6} {:<9} {:<21} URI",
                    "NAME", "VER", "BITS", "STATE", "CREATED"
                );
                for k in &keys {
                    let v = k.versions.last().unwrap();
                    println!(
                        "{:<24} {:>4} {:>6} {:<9} {:<21} {}",
                        k.name,
                        v.version,
                        v.bits,
                        k.state(),
                        k.created,
                        ks.uri(&k.name)
                    );
                }
            }
        }
        KeyCommand::Show { store, json, name } => {
            let ks = store.open();
            let m = ks.meta(&name)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"uri": ks.uri(&name), "state": m.state(), "meta": m}))?
                );
            } else {
                println!("key:              {}", m.name);
                println!("uri:              {}", ks.uri(&name));
                println!("state:            {}", m.state());
                println!("created:          {}", m.created);
                println!("purge protection: {}", if m.purge_protection { "on" } else { "off" });
                if let Some(d) = &m.deleted {
                    println!("deleted:          {} (recoverable until {})", d.at, d.purge_after);
                }
                println!(
                    "{:>4} {:>6} {:<9} {:<21} {:<21} {:<21} FINGERPRINT",
                    "VER", "BITS", "STATE", "CREATED", "ACTIVATION", "EXPIRY"
                );
                for v in &m.versions {
                    println!(
                        "{:>4} {:>6} {:<9} {:<21} {:<21} {:<21} {}",
                        v.version,
                        v.bits,
                        if v.enabled { "enabled" } else { "disabled" },
                        v.created,
                        v.activation.as_deref().unwrap_or("-"),
                        v.expiry.as_deref().unwrap_or("-"),
                        &v.fingerprint[..16]
                    );
                }
            }
        }
        KeyCommand::Rotate {
            store,
            bits,
            activation,
            expiry,
            name,
        } => {
            check_time(&activation, "activation")?;
            check_time(&expiry, "expiry")?;
            let ks = store.open();
            let m = ks.rotate(&name, bits, activation, expiry)?;
            let v = m.versions.last().unwrap();
            let mut rec = key_fields(&ks, &name);
            rec["new_version"] = v.version.into();
            rec["bits"] = v.bits.into();
            rec["fingerprint"] = v.fingerprint.clone().into();
            audit.record(Event::KeyRotate, rec);
            println!(
                "key '{}' now has version {} (RSA-{}); volumes using {} rewrap to it automatically",
                name,
                v.version,
                v.bits,
                ks.uri(&name)
            );
        }
        KeyCommand::Disable { store, key } => set_enabled(&store, &key, false, audit)?,
        KeyCommand::Enable { store, key } => set_enabled(&store, &key, true, audit)?,
        KeyCommand::SetDates {
            store,
            activation,
            expiry,
            key,
        } => {
            let (name, version) = name_version(&key)?;
            let version = version.context("set-dates needs NAME@VERSION")?;
            let opt = |s: Option<String>, what: &str| -> Result<Option<Option<String>>> {
                match s.as_deref() {
                    None => Ok(None),
                    Some("none") => Ok(Some(None)),
                    Some(t) => {
                        check_time(&Some(t.to_string()), what)?;
                        Ok(Some(Some(t.to_string())))
                    }
                }
            };
            let ks = store.open();
            ks.set_dates(
                name,
                version,
                opt(activation.clone(), "activation")?,
                opt(expiry.clone(), "expiry")?,
            )?;
            let mut rec = key_fields(&ks, name);
            rec["version"] = version.into();
            rec["activation"] = activation.into();
            rec["expiry"] = expiry.into();
            audit.record(Event::KeySetDates, rec);
            println!("key '{name}' version {version}: dates updated");
        }
        KeyCommand::Delete { store, retention, name } => {
            let r = humantime::parse_duration(&retention)
                .with_context(|| format!("--retention '{retention}' is not a duration such as 90d"))?;
            let ks = store.open();
            let m = ks.delete(&name, r)?;
            let d = m.deleted.unwrap();
            let mut rec = key_fields(&ks, &name);
            rec["purge_after"] = d.purge_after.clone().into();
            audit.record(Event::KeyDelete, rec);
            println!(
                "key '{name}' deleted: unwraps are refused now; 'cmkfs key recover {name}' restores it until {}",
                d.purge_after
            );
        }
        KeyCommand::Recover { store, name } => {
            let ks = store.open();
            ks.recover(&name)?;
            audit.record(Event::KeyRecover, key_fields(&ks, &name));
            println!("key '{name}' recovered");
        }
        KeyCommand::Purge { store, name } => {
            let ks = store.open();
            ks.purge(&name)?;
            audit.record(Event::KeyPurge, key_fields(&ks, &name));
            println!("key '{name}' purged; volumes wrapped only by it cannot be opened again");
        }
    }
    Ok(())
}

fn set_enabled(store: &StoreArg, key: &str, enabled: bool, audit: &AuditLog) -> Result<()> {
    let (name, version) = name_version(key)?;
    let ks = store.open();
    ks.set_enabled(name, version, enabled)?;
    let mut rec = key_fields(&ks, name);
    rec["version"] = version.into();
    audit.record(if enabled { Event::KeyEnable } else { Event::KeyDisable }, rec);
    let what = version
        .map(|v| format!("key '{name}' version {v}"))
        .unwrap_or(format!("key '{name}'"));
    println!(
        "{what} {}",
        if enabled {
            "enabled"
        } else {
            "disabled: unwraps are refused; mounted volumes using it become Inaccessible at their next check"
        }
    );
    Ok(())
}
