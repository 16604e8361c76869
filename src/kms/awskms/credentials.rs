//! AWS credentials and region: the standard chain minus instance metadata (environment,
//! shared credentials file, config file), read again for every request.

use std::collections::BTreeMap;
use std::path::PathBuf;

use zeroize::Zeroizing;

/// AWS credentials (zeroized on drop).
pub struct Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Zeroizing<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<Zeroizing<String>>,
}

/// No credentials were found anywhere the chain looks.
#[derive(Debug, thiserror::Error)]
#[error(
    "no AWS credentials: {}looked in {}",
    if *.env_checked { "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set; " } else { "" },
    .looked.join(", ")
)]
pub struct NoCredentials {
    /// Whether the environment was consulted (it is not when the URI names a profile).
    pub env_checked: bool,
    /// The files (and sections) looked in.
    pub looked: Vec<String>,
}

pub(super) fn default_region(profile: Option<&str>) -> Option<String> {
    for v in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Ok(r) = std::env::var(v) {
            if !r.is_empty() {
                return Some(r);
            }
        }
    }
    let profile = profile_name(profile);
    let config = shared_file("AWS_CONFIG_FILE", "config")?;
    let section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    ini_section(&std::fs::read_to_string(config).ok()?, &section)
        .remove("region")
        .map(|r| r.to_string())
}

fn profile_name(profile: Option<&str>) -> String {
    profile
        .map(str::to_string)
        .or_else(|| std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()))
        .unwrap_or_else(|| "default".into())
}

fn shared_file(var: &str, name: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws").join(name)),
    }
}

/// `name = value` pairs of one `[section]` of an AWS ini file.
fn ini_section(text: &str, section: &str) -> BTreeMap<String, Zeroizing<String>> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('#') || l.starts_with(';') || l.is_empty() {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            inside = s.trim() == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = l.split_once('=') {
                out.insert(k.trim().to_ascii_lowercase(), Zeroizing::new(v.trim().to_string()));
            }
        }
    }
    out
}

/// The standard credential chain, minus instance metadata: environment, then the shared
/// credentials file, then the config file.
pub fn chain(profile: Option<&str>) -> Result<Credentials, NoCredentials> {
    if profile.is_none() {
        if let (Ok(id), Ok(secret)) = (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            if !id.is_empty() && !secret.is_empty() {
                return Ok(Credentials {
                    access_key_id: id,
                    secret_access_key: Zeroizing::new(secret),
                    session_token: std::env::var("AWS_SESSION_TOKEN")
                        .ok()
                        .filter(|t| !t.is_empty())
                        .map(Zeroizing::new),
                });
            }
        }
    }
    let name = profile_name(profile);
    let mut looked = vec![];
    for (var, file, section) in [
        ("AWS_SHARED_CREDENTIALS_FILE", "credentials", name.clone()),
        (
            "AWS_CONFIG_FILE",
            "config",
            if name == "default" {
                name.clone()
            } else {
                format!("profile {name}")
            },
        ),
    ] {
        let Some(path) = shared_file(var, file) else { continue };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => Zeroizing::new(t),
            Err(_) => {
                looked.push(format!("{} (absent)", path.display()));
                continue;
            }
        };
        let mut s = ini_section(&text, &section);
        if let (Some(id), Some(secret)) = (s.remove("aws_access_key_id"), s.remove("aws_secret_access_key")) {
            return Ok(Credentials {
                access_key_id: id.to_string(),
                secret_access_key: secret,
                session_token: s.remove("aws_session_token"),
            });
        }
        looked.push(format!("{} [{section}]", path.display()));
    }
    Err(NoCredentials {
        env_checked: profile.is_none(),
        looked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini() {
        let t = "[default]\naws_access_key_id = A\n# c\n[profile p]\nregion=eu-north-1\n[p]\naws_access_key_id=B\n";
        assert_eq!(&*ini_section(t, "default")["aws_access_key_id"], "A");
        assert_eq!(&*ini_section(t, "profile p")["region"], "eu-north-1");
        assert_eq!(&*ini_section(t, "p")["aws_access_key_id"], "B");
        assert!(ini_section(t, "q").is_empty());
    }
}
