//! The small blocking HTTP(S) client shared by the remote KMS providers (`vault:`, `awskms:`).
//!
//! `ureq` over rustls with the aws-lc-rs crypto provider cmkfs already links (no `ring`).
//! Every request has an overall timeout; connections are pooled and kept alive by the agent,
//! and a broken connection is simply replaced on the next request, so a daemon recovers by
//! itself when the server comes back. HTTP error statuses are returned as answers (the
//! providers classify them), only transport failures are errors.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};
use zeroize::Zeroizing;

/// Default overall timeout of one request (connect, TLS, send, answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer body read (KMS answers are a few KiB).
const MAX_BODY: usize = 1 << 20;

/// A server's answer, whatever its status.
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body. It may hold a volume key (a decrypt answer), so it lives in one zeroizing
    /// buffer; parse it with `serde_json::from_slice` into `Zeroizing` fields.
    pub body: Zeroizing<Vec<u8>>,
}

impl Response {
    /// The body as text, for error messages (lossy UTF-8). Never use it on a success answer
    /// that may hold a key: the text is not zeroized.
    pub fn error_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Response {{ status: {}, body: <{} bytes> }}",
            self.status,
            self.body.len()
        )
    }
}

/// A transport failure: no HTTP answer (connection refused, DNS, TLS, timeout).
#[derive(Debug)]
pub struct TransportError(pub String);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a service address or a CA file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No `scheme://`.
    #[error("'{0}' is not an http:// or https:// address")]
    NotUrl(String),
    /// A scheme other than http or https.
    #[error("'{0}': only http:// and https:// are supported")]
    Scheme(String),
    /// An empty host, or user info (credentials) in the address.
    #[error("'{0}': bad host (credentials never go in the address)")]
    Host(String),
    /// The CA file cannot be read.
    #[error("cannot read CA file {}: {source}", .path.display())]
    CaUnreadable {
        /// The CA file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file holds no certificate.
    #[error("CA file {} holds no PEM certificate", .0.display())]
    CaEmpty(std::path::PathBuf),
}

/// A pooled HTTP(S) client with a timeout and an optional private CA.
pub struct Http {
    agent: ureq::Agent,
}

impl Http {
    /// A client whose requests time out after `timeout`. `ca_file`: PEM file of the CA
    /// certificates to trust instead of the built-in public roots (a private CA).
    pub fn new(timeout: Duration, ca_file: Option<&Path>) -> Result<Http, ConfigError> {
        let roots = match ca_file {
            None => RootCerts::WebPki,
            Some(p) => {
                let pem = std::fs::read(p).map_err(|source| ConfigError::CaUnreadable {
                    path: p.to_path_buf(),
                    source,
                })?;
                let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Err(ConfigError::CaEmpty(p.to_path_buf()));
                }
                RootCerts::Specific(Arc::new(certs))
            }
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(roots)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent(concat!("cmkfs/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .into();
        Ok(Http { agent })
    }

    /// GET `url` with `headers`.
    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response, TransportError> {
        let mut req = self.agent.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::answer(req.call())
    }

    /// POST `body` to `url` with `headers`.
    pub fn post(&self, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response, TransportError> {
        let mut req = self.agent.post(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::answer(req.send(body))
    }

    fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Response, TransportError> {
        let mut resp = r.map_err(|e| TransportError(describe(&e)))?;
        let status = resp.status().as_u16();
        // Not `read_to_vec`: its reallocations would leave copies of a decrypted key in freed
        // memory. One zeroizing buffer, sized from Content-Length when there is one.
        let initial = resp
            .body()
            .content_length()
            .map_or(8192, |l| l.min(MAX_BODY as u64) as usize);
        let body = crate::crypto::read_zeroizing(resp.body_mut().as_reader(), initial, MAX_BODY)
            .map_err(|e| TransportError(format!("reading the answer failed: {e}")))?
            .ok_or_else(|| TransportError(format!("the answer is larger than {MAX_BODY} bytes")))?;
        Ok(Response { status, body })
    }
}

/// Serialises `v` as a JSON request body into one zeroizing buffer of the exact size (a
/// first pass counts the bytes), for bodies that carry a key or a credential: a growing
/// `Vec` would leave copies behind in freed memory.
pub fn json_body<T: serde::Serialize>(v: &T) -> Zeroizing<Vec<u8>> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    serde_json::to_writer(&mut n, v).expect("request bodies serialise");
    let mut out = Zeroizing::new(Vec::with_capacity(n.0));
    serde_json::to_writer(&mut *out, v).expect("request bodies serialise");
    debug_assert_eq!(out.capacity(), n.0, "no reallocation");
    out
}

fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::ConnectionFailed => "connection failed (refused or unreachable)".into(),
        ureq::Error::HostNotFound => "host not found (DNS)".into(),
        ureq::Error::Io(io) => format!("connection error: {io}"),
        other => other.to_string(),
    }
}

/// Splits `scheme://host[:port]/path` into the origin (`scheme://host[:port]`) and the path
/// (without its leading `/`). Only `http` and `https` are accepted.
pub fn split_url(url: &str) -> Result<(String, String), ConfigError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| ConfigError::NotUrl(url.to_string()))?;
    if scheme != "http" && scheme != "https" {
        return Err(ConfigError::Scheme(url.to_string()));
    }
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() || host.contains('@') {
        return Err(ConfigError::Host(url.to_string()));
    }
    Ok((format!("{scheme}://{host}"), path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("https://vault.example:8200/transit/kek").unwrap(),
            ("https://vault.example:8200".into(), "transit/kek".into())
        );
        assert_eq!(split_url("http://h").unwrap(), ("http://h".into(), "".into()));
        assert!(split_url("ftp://h/x").is_err());
        assert!(split_url("h/x").is_err());
        assert!(split_url("https://user:pw@h/x").is_err());
    }

    #[test]
    fn refused_connection_is_a_transport_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let h = Http::new(Duration::from_secs(2), None).unwrap();
        let e = h.get(&format!("http://127.0.0.1:{port}/"), &[]).unwrap_err();
        assert!(e.0.contains("connection"), "{e}");
    }

    #[test]
    fn json_bodies_are_exact() {
        #[derive(serde::Serialize)]
        struct B<'a> {
            k: &'a str,
        }
        let b = json_body(&B { k: "a\"\u{1}é" });
        assert_eq!(&b[..], r#"{"k":"a\"\u0001é"}"#.as_bytes());
        assert_eq!(b.capacity(), b.len());
    }

    /// A 200 answer is read whole into the zeroizing body, and a body over the limit is a
    /// transport error rather than a truncated answer.
    #[test]
    fn bodies_are_read_whole_and_bounded() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for size in [300usize, MAX_BODY + 1] {
                let (mut c, _) = l.accept().unwrap();
                let mut req = [0u8; 4096];
                let _ = c.read(&mut req).unwrap();
                let body = "x".repeat(size);
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let h = Http::new(Duration::from_secs(5), None).unwrap();
        let r = h.get(&format!("http://127.0.0.1:{port}/"), &[]).unwrap();
        assert_eq!((r.status, r.body.len()), (200, 300));
        let e = h.get(&format!("http://127.0.0.1:{port}/"), &[]).unwrap_err();
        assert!(e.0.contains("larger than"), "{e}");
        server.join().unwrap();
    }

    #[test]
    fn bad_ca_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ca.pem");
        std::fs::write(&f, "not a certificate").unwrap();
        assert!(Http::new(DEFAULT_TIMEOUT, Some(&f)).is_err());
        assert!(Http::new(DEFAULT_TIMEOUT, Some(&d.path().join("missing"))).is_err());
    }
}
