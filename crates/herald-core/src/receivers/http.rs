//! How a receiver's HTTP request is made beyond its body: method, headers, credentials and
//! the body's signature. Pure: the delivery engine sends what this describes.

use herald_api::HttpMethod;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Redacted;

/// Everything about a receiver's request except the URL and the body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestSpec {
    pub method: HttpMethod,
    /// Headers from the policy, sent as they are (validated at load time).
    pub headers: Vec<(String, String)>,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<Redacted>,
    /// Sent as `Authorization: <value>` for a scheme other than `Bearer` (Opsgenie's
    /// `GenieKey <key>`): the whole value is the credential.
    pub authorization: Option<Redacted>,
    /// Signs every body with HMAC-SHA256.
    pub signature: Option<Signature>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub header: String,
    pub key: Redacted,
}

/// A short, stable name for a credential that reveals nothing of it.
pub fn fingerprint(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(&Sha256::digest(secret.as_bytes())[..8])
}

/// A header to send; `sensitive` ones are credentials (never logged, marked sensitive for
/// the HTTP stack).
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub name: String,
    pub value: Redacted,
    pub sensitive: bool,
}

impl RequestSpec {
    /// The extra headers for one request carrying `body`: the policy's headers, then the
    /// bearer token and the body's signature.
    pub fn headers_for(&self, body: &[u8]) -> Vec<Header> {
        let mut out: Vec<Header> = self
            .headers
            .iter()
            .map(|(name, value)| Header {
                name: name.clone(),
                value: Redacted::new(value.clone()),
                sensitive: false,
            })
            .collect();
        if let Some(token) = &self.bearer_token {
            out.push(Header {
                name: "Authorization".to_owned(),
                value: Redacted::new(format!("Bearer {}", token.expose())),
                sensitive: true,
            });
        }
        if let Some(value) = &self.authorization {
            out.push(Header {
                name: "Authorization".to_owned(),
                value: value.clone(),
                sensitive: true,
            });
        }
        if let Some(signature) = &self.signature {
            out.push(Header {
                name: signature.header.clone(),
                value: Redacted::new(sign(signature.key.expose().as_bytes(), body)),
                sensitive: false,
            });
        }
        out
    }
}

/// `sha256=<lower-case hex HMAC-SHA256 of body>`, the signature format of GitHub's and Flux's
/// signed webhooks.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A header name as HTTP defines it (a token): letters, digits and ``!#$%&'*+-.^_`|~``.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// A header value HTTP can carry: visible ASCII, spaces and tabs, no line breaks.
pub fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn headers_carry_the_token_and_the_signature() {
        let spec = RequestSpec {
            headers: vec![("X-Team".into(), "payments".into())],
            bearer_token: Some(Redacted::new("t0k3n")),
            signature: Some(Signature {
                header: "X-Signature".into(),
                key: Redacted::new("Jefe"),
            }),
            ..RequestSpec::default()
        };
        let headers = spec.headers_for(b"what do ya want for nothing?");
        let plain: Vec<(&str, &str, bool)> = headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.expose(), h.sensitive))
            .collect();
        assert_eq!(
            plain,
            [
                ("X-Team", "payments", false),
                ("Authorization", "Bearer t0k3n", true),
                (
                    "X-Signature",
                    "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                    false
                ),
            ]
        );
    }

    #[test]
    fn header_syntax() {
        assert!(is_header_name("X-Signature"));
        assert!(!is_header_name("X Signature"));
        assert!(!is_header_name(""));
        assert!(is_header_value("Bearer abc"));
        assert!(!is_header_value("a\r\nInjected: 1"));
    }
}
