//! Internal tokens: HS256 JWTs signed with keys from Secrets Manager.
//!
//! Access tokens (15 min) and refresh tokens (30 days) use separate keys and carry a `type` claim
//! that is checked, so neither can stand in for the other. The algorithm is fixed here, never read
//! from the token; `kid` only selects which version of our own key verifies it.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Role;
use crate::support::secrets::{CachedKeyRing, key_bytes};
use crate::{ApiError, Context};

/// Tolerated clock skew between our instances, in seconds.
const LEEWAY: i64 = 30;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccessClaims {
    pub sub: String,
    pub email: Option<String>,
    pub role: Role,
    pub org: Option<String>,
    #[serde(rename = "type")]
    pub token_type: String,
    /// The session (refresh-token family) this token was issued in; logout revokes it.
    pub sid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RefreshClaims {
    pub sub: String,
    #[serde(rename = "type")]
    pub token_type: String,
    pub sid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

pub const ACCESS: &str = "access";
pub const REFRESH: &str = "refresh";

/// The claims every internal token has, whatever its type.
trait Timed {
    fn token_type(&self) -> &str;
    fn window(&self) -> (i64, i64, i64);
}
impl Timed for AccessClaims {
    fn token_type(&self) -> &str {
        &self.token_type
    }
    fn window(&self) -> (i64, i64, i64) {
        (self.iat, self.nbf, self.exp)
    }
}
impl Timed for RefreshClaims {
    fn token_type(&self) -> &str {
        &self.token_type
    }
    fn window(&self) -> (i64, i64, i64) {
        (self.iat, self.nbf, self.exp)
    }
}

pub async fn sign_access(ctx: &Context, claims: &AccessClaims) -> Result<String, ApiError> {
    sign(ctx, &ctx.access_keys, claims).await
}

pub async fn sign_refresh(ctx: &Context, claims: &RefreshClaims) -> Result<String, ApiError> {
    sign(ctx, &ctx.refresh_keys, claims).await
}

pub async fn verify_access(ctx: &Context, token: &str) -> Result<AccessClaims, ApiError> {
    verify(ctx, &ctx.access_keys, token, ACCESS).await
}

pub async fn verify_refresh(ctx: &Context, token: &str) -> Result<RefreshClaims, ApiError> {
    verify(ctx, &ctx.refresh_keys, token, REFRESH).await
}

async fn sign<T: Serialize>(ctx: &Context, keys: &CachedKeyRing, claims: &T) -> Result<String, ApiError> {
    let ring = keys.get(ctx.secrets()).await.map_err(ApiError::unavailable)?;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(ring.current.kid.clone());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key_bytes(&ring.current)))
        .map_err(ApiError::internal)
}

async fn verify<T: DeserializeOwned + Timed>(
    ctx: &Context,
    keys: &CachedKeyRing,
    token: &str,
    expected_type: &str,
) -> Result<T, ApiError> {
    let invalid = || ApiError::unauthorized("invalid_token", "The token is invalid");
    if token.len() > 4096 {
        return Err(invalid());
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
    if header.alg != Algorithm::HS256 {
        return Err(invalid());
    }
    let kid = header.kid.ok_or_else(invalid)?;
    let mut ring = keys.get(ctx.secrets()).await.map_err(ApiError::unavailable)?;
    if ring.find(&kid).is_none() {
        ring = keys.refresh_for_unknown_kid(ctx.secrets()).await.map_err(ApiError::unavailable)?;
    }
    let key = ring.find(&kid).ok_or_else(invalid)?;

    // Time claims are checked below against our clock; the library checks signature and algorithm.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<T>(token, &DecodingKey::from_secret(key_bytes(key)), &validation)
        .map_err(|_| invalid())?;
    let claims = data.claims;
    if claims.token_type() != expected_type {
        return Err(ApiError::unauthorized("wrong_token_type", format!("An {expected_type} token is required")));
    }
    let now = ctx.clock.now();
    let (iat, nbf, exp) = claims.window();
    // Saturating: a signed claim at the edge of i64 is judged by the same rules, never an overflow.
    if exp.saturating_add(LEEWAY) <= now {
        return Err(ApiError::unauthorized("token_expired", "The token has expired"));
    }
    if nbf.saturating_sub(LEEWAY) > now || iat.saturating_sub(LEEWAY) > now {
        return Err(invalid());
    }
    Ok(claims)
}

/// RFC 9068's media type of JWT access tokens (partner tokens, issued by the OAuth server): no other JWT of ours (internal tokens, LMS tokens)
/// can pass for one.
pub const PARTNER_TOKEN_TYPE: &str = "at+jwt";

/// Whether a bearer token looks like a partner access token (by its header alone: the caller then
/// verifies it as one, or as an internal token).
pub fn is_partner_token(token: &str) -> bool {
    jsonwebtoken::decode_header(token)
        .is_ok_and(|h| h.alg == Algorithm::EdDSA && h.typ.as_deref() == Some(PARTNER_TOKEN_TYPE))
}
