//! The signing keys of partner access tokens: Ed25519, each derived from a Secrets Manager version
//! (SHA-256 of the secret string is the key's seed), so CloudFormation's generated secret is a key
//! and a rotation is one `put-secret-value`. The key id (`kid`) is the version id; the JWKS publishes
//! the current and the previous key, so tokens signed before a rotation verify until they expire.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AUDIENCE, issuer};
use crate::domain::auth::Role;
use crate::support::secrets::{CachedKeyRing, SigningKey, key_bytes};
use crate::{ApiError, Context};

pub use crate::domain::auth::tokens::{PARTNER_TOKEN_TYPE as TOKEN_TYPE, is_partner_token};
const LEEWAY: i64 = 30;

/// The claims of a partner access token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub aud: String,
    /// The user, or `client:<client_id>` for a client acting for its own organization.
    pub sub: String,
    pub client_id: String,
    /// Space-separated, as RFC 6749 writes scopes.
    pub scope: String,
    /// The grant the token was issued under: revoking the grant revokes the token.
    pub grant: String,
    /// The organization the token acts in (the user's, or the client's).
    pub org: Option<String>,
    /// The user's role when the token was issued (absent for client tokens).
    pub role: Option<Role>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

fn ring(ctx: &Context) -> Result<&CachedKeyRing, ApiError> {
    ctx.oauth_keys.as_ref().ok_or_else(|| ApiError::internal("OAUTH_SIGNING_KEY_SECRET_ID is not set"))
}

fn key_pair(key: &SigningKey) -> Result<Ed25519KeyPair, ApiError> {
    Ed25519KeyPair::from_seed_unchecked(&Sha256::digest(key_bytes(key))).map_err(ApiError::internal)
}

/// Signs a partner access token with the current key.
pub async fn sign(ctx: &Context, claims: &AccessTokenClaims) -> Result<String, ApiError> {
    let keys = ring(ctx)?.get(ctx.secrets()).await.map_err(ApiError::unavailable)?;
    let pkcs8 = key_pair(&keys.current)?.to_pkcs8().map_err(ApiError::internal)?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(keys.current.kid.clone());
    header.typ = Some(TOKEN_TYPE.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(pkcs8.as_ref())).map_err(ApiError::internal)
}

/// Verifies a partner access token's signature (EdDSA only, whatever the header says), type, issuer,
/// audience and lifetime. Whether its grant still stands is the caller's check.
pub async fn verify(ctx: &Context, token: &str) -> Result<AccessTokenClaims, ApiError> {
    let invalid = || ApiError::unauthorized("invalid_token", "The token is invalid");
    if token.len() > 4096 {
        return Err(invalid());
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
    if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(TOKEN_TYPE) {
        return Err(invalid());
    }
    let kid = header.kid.ok_or_else(invalid)?;
    let keys = ring(ctx)?;
    let mut found = keys.get(ctx.secrets()).await.map_err(ApiError::unavailable)?;
    if found.find(&kid).is_none() {
        found = keys.refresh_for_unknown_kid(ctx.secrets()).await.map_err(ApiError::unavailable)?;
    }
    let key = found.find(&kid).ok_or_else(invalid)?;
    let public = key_pair(key)?.public_key().as_ref().to_vec();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[issuer(ctx)?]);
    validation.required_spec_claims = ["iss", "aud", "exp"].into_iter().map(String::from).collect();
    let claims = jsonwebtoken::decode::<AccessTokenClaims>(token, &DecodingKey::from_ed_der(&public), &validation)
        .map_err(|_| invalid())?
        .claims;
    let now = ctx.clock.now();
    if claims.exp.saturating_add(LEEWAY) <= now {
        return Err(ApiError::unauthorized("token_expired", "The token has expired"));
    }
    if claims.iat.saturating_sub(LEEWAY) > now {
        return Err(invalid());
    }
    Ok(claims)
}

/// The JSON Web Key Set of the token-signing keys (current, then previous).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One public key (RFC 8037: `OKP`, `Ed25519`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub key_use: String,
}

pub async fn jwks(ctx: &Context) -> Result<Jwks, ApiError> {
    let ring = ring(ctx)?.get(ctx.secrets()).await.map_err(ApiError::unavailable)?;
    let mut keys = Vec::new();
    for key in std::iter::once(&ring.current).chain(ring.previous.as_ref()) {
        keys.push(Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(key_pair(key)?.public_key().as_ref()),
            kid: key.kid.clone(),
            alg: "EdDSA".into(),
            key_use: "sig".into(),
        });
    }
    Ok(Jwks { keys })
}
