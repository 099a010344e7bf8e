//! Subscription secrets and the signature headers of a delivery.
//!
//! Two schemes sign every delivery, so receivers can use either:
//! - `X-Optio-Signature: sha256=<hex>`: HMAC-SHA256 of the raw body, keyed with the secret string
//!   as given (`whsec_...`), as the earlier system did;
//! - Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`): HMAC-SHA256
//!   of `id.timestamp.body`, keyed with the base64-decoded part of the secret, so the `standardwebhooks`
//!   and `svix` libraries verify it unchanged.
//!
//! While a rotated-out secret is still valid, it signs too: `X-Optio-Signature-Previous` carries its
//! signature, and `webhook-signature` lists both (space-separated, as the standard allows).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;

use crate::support::crypto::hmac_sha256;

const PREFIX: &str = "whsec_";

/// A new secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", STANDARD.encode(bytes))
}

/// The secrets that sign a delivery now: the current one, and the previous one during its overlap.
pub struct SigningSecrets<'a> {
    pub current: &'a str,
    pub previous: Option<&'a str>,
}

/// The headers of one delivery attempt (`timestamp`: unix seconds of this attempt).
pub fn headers(
    delivery_id: &str,
    event_type: &str,
    timestamp: i64,
    body: &str,
    secrets: &SigningSecrets,
) -> Vec<(&'static str, String)> {
    let optio = |secret: &str| format!("sha256={}", hex::encode(hmac_sha256(secret.as_bytes(), body.as_bytes())));
    let standard = |secret: &str| {
        let signed = format!("{delivery_id}.{timestamp}.{body}");
        format!("v1,{}", STANDARD.encode(hmac_sha256(&standard_key(secret), signed.as_bytes())))
    };
    let mut out = vec![
        ("x-optio-event", event_type.to_string()),
        ("x-optio-delivery", delivery_id.to_string()),
        ("x-optio-signature", optio(secrets.current)),
        ("webhook-id", delivery_id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
    ];
    let mut standard_signatures = standard(secrets.current);
    if let Some(previous) = secrets.previous {
        out.push(("x-optio-signature-previous", optio(previous)));
        standard_signatures = format!("{standard_signatures} {}", standard(previous));
    }
    out.push(("webhook-signature", standard_signatures));
    out
}

/// The Standard Webhooks key of a secret: the bytes its base64 part encodes.
fn standard_key(secret: &str) -> Vec<u8> {
    let encoded = secret.strip_prefix(PREFIX).unwrap_or(secret);
    STANDARD.decode(encoded).unwrap_or_else(|_| encoded.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(headers: &'a [(&str, String)], name: &str) -> &'a str {
        headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()).unwrap()
    }

    #[test]
    fn standard_signature_matches_the_specification_example() {
        // The example of the Standard Webhooks specification (and of svix's libraries).
        let secrets = SigningSecrets { current: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", previous: None };
        let h = headers("msg_p5jXN8AQM9LWM0D4loKWxJek", "x", 1614265330, r#"{"test": 2432232314}"#, &secrets);
        assert_eq!(header(&h, "webhook-signature"), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(header(&h, "webhook-id"), "msg_p5jXN8AQM9LWM0D4loKWxJek");
    }

    #[test]
    fn optio_signature_is_the_hmac_of_the_raw_body_under_the_secret_string() {
        let secrets = SigningSecrets { current: "whsec_abc", previous: None };
        let h = headers("d1", "task.completed", 1, "{}", &secrets);
        let expected = hex::encode(hmac_sha256(b"whsec_abc", b"{}"));
        assert_eq!(header(&h, "x-optio-signature"), format!("sha256={expected}"));
        assert_eq!(header(&h, "x-optio-event"), "task.completed");
        assert!(!h.iter().any(|(n, _)| *n == "x-optio-signature-previous"));
    }

    #[test]
    fn a_previous_secret_signs_alongside_the_current_one() {
        let (new, old) = (new_secret(), new_secret());
        let both = headers("d1", "e", 7, "body", &SigningSecrets { current: &new, previous: Some(&old) });
        let only_new = headers("d1", "e", 7, "body", &SigningSecrets { current: &new, previous: None });
        let only_old = headers("d1", "e", 7, "body", &SigningSecrets { current: &old, previous: None });
        assert_eq!(
            header(&both, "webhook-signature"),
            format!("{} {}", header(&only_new, "webhook-signature"), header(&only_old, "webhook-signature"))
        );
        assert_eq!(header(&both, "x-optio-signature"), header(&only_new, "x-optio-signature"));
        assert_eq!(header(&both, "x-optio-signature-previous"), header(&only_old, "x-optio-signature"));
    }

    #[test]
    fn secrets_are_prefixed_base64_of_32_bytes() {
        let secret = new_secret();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(STANDARD.decode(&secret[6..]).unwrap().len(), 32);
        assert_ne!(secret, new_secret());
    }
}
