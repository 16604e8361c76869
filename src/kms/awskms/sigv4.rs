//! AWS Signature Version 4 (the parts KMS needs: one POST with signed headers).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::credentials::Credentials;
use crate::crypto::hex;

/// What is signed. `headers` are lowercase names; `query` is already canonical.
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Canonical URI path.
    pub path: &'a str,
    /// Canonical query string.
    pub query: &'a str,
    /// Headers to sign, lowercase names (host included).
    pub headers: &'a [(String, String)],
    /// The body.
    pub payload: &'a [u8],
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// `YYYYMMDDTHHMMSSZ` of `t`.
pub fn amz_date(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect()
}

/// The canonical request.
pub fn canonical_request(r: &Request<'_>) -> (String, String) {
    let mut h: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    h.sort();
    let signed = h.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let canon_headers: String = h.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let c = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        r.method,
        r.path,
        r.query,
        canon_headers,
        signed,
        hex(&Sha256::digest(r.payload))
    );
    (c, signed)
}

/// The signing key for `date` (YYYYMMDD), region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// The signature and signed-header list of `r` at `amz_date`.
pub fn signature(secret: &str, r: &Request<'_>, amz_date: &str, region: &str, service: &str) -> (String, String) {
    let (canonical, signed) = canonical_request(r);
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = zeroize::Zeroizing::new(signing_key(secret, date, region, service));
    (hex(&hmac(&key, to_sign.as_bytes())), signed)
}

/// The `Authorization` header value.
pub fn authorization(c: &Credentials, r: &Request<'_>, amz_date: &str, region: &str, service: &str) -> String {
    let (sig, signed) = signature(&c.secret_access_key, r, amz_date, region, service);
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{}/{region}/{service}/aws4_request, SignedHeaders={signed}, Signature={sig}",
        c.access_key_id,
        &amz_date[..8]
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use zeroize::Zeroizing;

    use super::*;

    /// The worked example of AWS's SigV4 documentation (IAM ListUsers, 2015-08-30).
    #[test]
    fn sigv4_published_example() {
        let headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("host".to_string(), "iam.amazonaws.com".to_string()),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
        ];
        let r = Request {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: &headers,
            payload: b"",
        };
        let (canonical, signed) = canonical_request(&r);
        assert_eq!(signed, "content-type;host;x-amz-date");
        let h = hex(&Sha256::digest(canonical.as_bytes()));
        assert_eq!(h, "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59");
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let k = hex(&signing_key(secret, "20150830", "us-east-1", "iam"));
        assert_eq!(k, "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
        let (sig, _) = signature(secret, &r, "20150830T123600Z", "us-east-1", "iam");
        assert_eq!(sig, "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
        let c = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Zeroizing::new(secret.into()),
            session_token: None,
        };
        assert_eq!(
            authorization(&c, &r, "20150830T123600Z", "us-east-1", "iam"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
        assert_eq!(
            amz_date(std::time::UNIX_EPOCH + Duration::from_secs(1440938160)),
            "20150830T123600Z"
        );
    }
}
