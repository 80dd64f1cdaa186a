//! Signed links: an expiring URL token bound to one canary, revision, gate and verdict, for
//! receivers without buttons. HMAC-SHA256 with Herald's link key, so only Herald makes them
//! and a changed byte, another revision or a late click is refused. A link only shows a
//! confirmation page on GET; the decision is a POST from that page, so link previews and
//! scanners that fetch URLs decide nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use herald_api::{GateType, Verdict};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::RevisionKey;

/// What a link decides, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClaims {
    #[serde(rename = "ns")]
    pub namespace: String,
    #[serde(rename = "c")]
    pub canary: String,
    #[serde(rename = "r")]
    pub revision: String,
    /// The gate that was asked (a rollback needs none, but says where it came from).
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateType>,
    #[serde(rename = "v")]
    pub verdict: Verdict,
    /// The policy whose approvers may use it (`namespace/name`, or `name` for a cluster
    /// policy).
    #[serde(rename = "p")]
    pub policy: String,
    /// Unix seconds after which the link is refused.
    #[serde(rename = "exp")]
    pub expires: i64,
}

impl LinkClaims {
    pub fn key(&self) -> RevisionKey {
        RevisionKey {
            namespace: self.namespace.clone(),
            canary: self.canary.clone(),
            revision: self.revision.clone(),
        }
    }
}

/// Why a link was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this is not a Herald link (it may have been cut short when it was copied)")]
    Malformed,
    #[error("this link's signature does not match: it was changed, or made with another key")]
    BadSignature,
    #[error("this link expired; ask for a new one")]
    Expired,
}

fn mac(key: &[u8], payload: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(b"herald-gate-link-v1:");
    mac.update(payload);
    mac
}

/// The token of a link: `<claims>.<signature>`, both URL-safe base64.
pub fn sign(claims: &LinkClaims, key: &[u8]) -> String {
    let payload = serde_json::to_vec(claims).expect("claims serialise");
    let signature = mac(key, &payload).finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// The claims of a token made by [`sign`] with `key`, if it has not expired at `now_s`.
pub fn verify(token: &str, key: &[u8], now_s: i64) -> Result<LinkClaims, LinkError> {
    let (payload, signature) = token.split_once('.').ok_or(LinkError::Malformed)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| LinkError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| LinkError::Malformed)?;
    // Constant time: the signature is checked before the claims are even read.
    mac(key, &payload)
        .verify_slice(&signature)
        .map_err(|_| LinkError::BadSignature)?;
    let claims: LinkClaims = serde_json::from_slice(&payload).map_err(|_| LinkError::Malformed)?;
    if now_s > claims.expires {
        return Err(LinkError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> LinkClaims {
        LinkClaims {
            namespace: "test".into(),
            canary: "podinfo".into(),
            revision: "7c4d1a2f9".into(),
            gate: Some(GateType::ConfirmPromotion),
            verdict: Verdict::Approve,
            policy: "test/gates".into(),
            expires: 1_000,
        }
    }

    #[test]
    fn a_signed_link_verifies_until_it_expires() {
        let token = sign(&claims(), b"key");
        assert_eq!(verify(&token, b"key", 1_000), Ok(claims()));
        assert_eq!(verify(&token, b"key", 1_001), Err(LinkError::Expired));
    }

    #[test]
    fn another_key_or_a_changed_byte_is_refused() {
        let token = sign(&claims(), b"key");
        assert_eq!(verify(&token, b"other", 0), Err(LinkError::BadSignature));
        // Another verdict in the claims, the signature kept: refused.
        let (_, signature) = token.split_once('.').unwrap();
        let forged = LinkClaims {
            verdict: Verdict::Rollback,
            ..claims()
        };
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            verify(&format!("{forged_payload}.{signature}"), b"key", 0),
            Err(LinkError::BadSignature)
        );
        assert_eq!(verify("nonsense", b"key", 0), Err(LinkError::Malformed));
        assert_eq!(
            verify(&token[..token.len() - 3], b"key", 0),
            Err(LinkError::BadSignature)
        );
    }
}
