//! The tool's own RSA key pair: it signs what the tool sends platforms (client assertions for grade and
//! roster services, deep-linking responses), and platforms verify with the JWKS at `/api/lti/jwks`.
//!
//! The private key is a Secrets Manager secret (`LtiToolKey`), a PKCS#8 PEM made by AWS-LC, and it is
//! rotated the Secrets Manager way: `lti-key-rotate` is the secret's rotation function (every 90 days,
//! and at once when the stack is created, replacing the placeholder CloudFormation generates). Each
//! version's id is its `kid`; the JWKS publishes the current and the previous key, so what was signed
//! just before a rotation still verifies.

use std::sync::Arc;

use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::support::secrets::{SigningKey, key_bytes};
use crate::{ApiError, Context};

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// A new 2048-bit RSA key as a PKCS#8 PEM.
pub fn generate_pem() -> Result<String, ApiError> {
    use aws_lc_rs::encoding::AsDer;
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| ApiError::internal("RSA key generation failed"))?;
    let der = pair.as_der().map_err(|_| ApiError::internal("RSA key encoding failed"))?;
    let body = STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64")).collect();
    Ok(format!("{PEM_BEGIN}\n{}\n{PEM_END}\n", lines.join("\n")))
}

/// One version of the tool's key.
pub struct ToolKey {
    pub kid: String,
    pair: KeyPair,
}

impl ToolKey {
    /// The key of a secret version; `None` when the version holds no RSA PEM (the placeholder before the
    /// first rotation).
    pub fn from_pem(kid: &str, pem: &str) -> Option<Self> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(body.trim()).ok()?;
        let pair = KeyPair::from_pkcs8(&der).ok()?;
        Some(Self { kid: kid.to_string(), pair })
    }

    fn from_version(version: &SigningKey) -> Option<Self> {
        Self::from_pem(&version.kid, std::str::from_utf8(key_bytes(version)).ok()?)
    }

    /// A JWT of `claims`, RS256, naming this key.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0; self.pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut signature).expect("RSA signing");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let public = self.pair.public_key();
        json!({
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        })
    }
}

fn not_ready() -> ApiError {
    ApiError::unavailable("The LTI tool key is not set up yet (its first rotation has not run)")
}

async fn ring(ctx: &Context) -> Result<Arc<crate::support::secrets::KeyRing>, ApiError> {
    let keys = ctx.lti_tool_keys.as_ref().ok_or_else(|| ApiError::internal("LTI_TOOL_KEY_SECRET_ID is not set"))?;
    keys.get(ctx.secrets()).await.map_err(ApiError::internal)
}

/// The key that signs now.
pub async fn current(ctx: &Context) -> Result<ToolKey, ApiError> {
    ToolKey::from_version(&ring(ctx).await?.current).ok_or_else(not_ready)
}

/// The tool's public keys: the current one and the previous one. No key at all (the first rotation
/// has not run) is an outage, not an empty set a platform would cache.
pub async fn jwks(ctx: &Context) -> Result<Value, ApiError> {
    let ring = ring(ctx).await?;
    let keys: Vec<Value> = std::iter::once(&ring.current)
        .chain(ring.previous.as_ref())
        .filter_map(ToolKey::from_version)
        .map(|k| k.jwk())
        .collect();
    if keys.is_empty() {
        return Err(not_ready());
    }
    Ok(json!({"keys": keys}))
}

/// One step of Secrets Manager's rotation of the tool key (the `lti-key-rotate` function's event:
/// `SecretId`, `ClientRequestToken`, `Step`). Refuses any secret but the one it is configured for.
pub async fn rotation_step(ctx: Arc<Context>, event: Value) -> Result<Value, ApiError> {
    let (Some(secret_id), Some(token), Some(step)) =
        (event["SecretId"].as_str(), event["ClientRequestToken"].as_str(), event["Step"].as_str())
    else {
        return Err(ApiError::bad_request(
            "invalid_event",
            "A rotation event names SecretId, ClientRequestToken and Step",
        ));
    };
    let ours = ctx.config.lti_tool_key_secret_id.as_deref();
    if ours != Some(secret_id) {
        return Err(ApiError::forbidden("This function rotates only the LTI tool key"));
    }
    rotate_step(ctx.secrets(), secret_id, token, step).await.map_err(ApiError::internal)?;
    tracing::info!(step, "LTI tool key rotation step done");
    Ok(json!({"step": step, "status": "done"}))
}

async fn rotate_step(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
    token: &str,
    step: &str,
) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("{step}: {e}");
    let pending =
        || client.get_secret_value().secret_id(secret_id).version_id(token).version_stage("AWSPENDING").send();
    // As Secrets Manager's own rotation functions do: the token must be a version of this secret being
    // rotated, and a version already current is done (a replayed or stray call changes nothing).
    let described = client
        .describe_secret()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| failed(&aws_sdk_secretsmanager::error::DisplayErrorContext(e)))?;
    let stages = described.version_ids_to_stages().and_then(|v| v.get(token)).cloned().unwrap_or_default();
    if step != "createSecret" || !stages.is_empty() {
        if stages.iter().any(|s| s == "AWSCURRENT") {
            return Ok(());
        }
        if !stages.iter().any(|s| s == "AWSPENDING") {
            return Err(failed(&"the token is not a pending version of this secret"));
        }
    }
    match step {
        // A new key as the pending version, once (Secrets Manager may call a step again).
        "createSecret" => {
            let exists = match pending().await {
                Ok(_) => true,
                Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => false,
                Err(e) => return Err(failed(&aws_sdk_secretsmanager::error::DisplayErrorContext(e))),
            };
            if !exists {
                let pem = generate_pem().map_err(|e| failed(&e.message))?;
                client
                    .put_secret_value()
                    .secret_id(secret_id)
                    .client_request_token(token)
                    .secret_string(pem)
                    .version_stages("AWSPENDING")
                    .send()
                    .await
                    .map_err(|e| failed(&aws_sdk_secretsmanager::error::DisplayErrorContext(e)))?;
            }
        }
        // The key is ours alone: nothing else to tell.
        "setSecret" => {}
        "testSecret" => {
            let version =
                pending().await.map_err(|e| failed(&aws_sdk_secretsmanager::error::DisplayErrorContext(e)))?;
            if ToolKey::from_pem(token, version.secret_string().unwrap_or_default()).is_none() {
                return Err(failed(&"the pending version is not an RSA key"));
            }
        }
        "finishSecret" => {
            let current = described
                .version_ids_to_stages()
                .into_iter()
                .flatten()
                .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
                .map(|(id, _)| id.clone());
            if current.as_deref() != Some(token) {
                client
                    .update_secret_version_stage()
                    .secret_id(secret_id)
                    .version_stage("AWSCURRENT")
                    .move_to_version_id(token)
                    .set_remove_from_version_id(current)
                    .send()
                    .await
                    .map_err(|e| failed(&aws_sdk_secretsmanager::error::DisplayErrorContext(e)))?;
                // The rotation is over: the version is current, no longer pending.
                client
                    .update_secret_version_stage()
                    .secret_id(secret_id)
                    .version_stage("AWSPENDING")
                    .remove_from_version_id(token)
                    .send()
                    .await
                    .map_err(|e| failed(&aws_sdk_secretsmanager::error::DisplayErrorContext(e)))?;
            }
        }
        other => return Err(format!("unknown rotation step {other}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_what_its_jwk_verifies() {
        let pem = generate_pem().unwrap();
        assert!(pem.starts_with(PEM_BEGIN) && pem.trim_end().ends_with(PEM_END));
        let key = ToolKey::from_pem("v1", &pem).unwrap();
        let token = key.sign(&json!({"iss": "tool", "exp": 4_000_000_000u64}));
        let jwk = key.jwk();
        let decoding =
            jsonwebtoken::DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
                .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap().claims;
        assert_eq!(claims["iss"], "tool");
        assert!(ToolKey::from_pem("v0", "a-random-placeholder-string-of-sixty-four-characters-xxxxxxxxxxx").is_none());
    }
}
