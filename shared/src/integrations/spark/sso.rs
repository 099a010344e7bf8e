//! Spark's SSO token: an HS256 JWT signed with the shared secret, as Spark's Node code makes it with
//! `jsonwebtoken`: `{sub, email, given_name?, family_name?, role?, iat, exp}`.
//!
//! Accepted only when: the algorithm is HS256 (the header cannot choose), the signature verifies
//! with the current or the previous version of the secret (rotation without downtime), `exp` is
//! present, not past and at most 10 minutes ahead, `iat` (when present) is before `exp` and not in
//! the future, and `sub` and a valid `email` are present. Each token logs in once: its fingerprint
//! is recorded until it expires.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::domain::auth::Role;
use crate::domain::auth::provisioning::ExternalProfile;
use crate::support::secrets::key_bytes;
use crate::{ApiError, Context, support::crypto};

/// The identity provider name of Spark users.
pub const PROVIDER: &str = crate::domain::tenancy::SPARK;
/// Spark tokens may live at most this long.
const MAX_LIFETIME_SECS: i64 = 600;
/// Clock skew tolerated between Spark and us.
const LEEWAY_SECS: i64 = 30;

/// A verified SSO token.
#[derive(Debug)]
pub struct SsoLogin {
    pub profile: ExternalProfile,
    pub expires_at: i64,
    /// SHA-256 of the token, to make it single-use without storing it.
    pub fingerprint: String,
}

pub async fn verify(ctx: &Context, token: &str) -> Result<SsoLogin, ApiError> {
    let invalid = |why: &str| ApiError::unauthorized("invalid_token", format!("The SSO token is invalid: {why}"));
    let keys = ctx.spark_sso_keys.as_ref().ok_or_else(|| ApiError::unavailable("Spark SSO secret not configured"))?;
    if token.len() > 8192 {
        return Err(invalid("too long"));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed"))?;
    if header.alg != Algorithm::HS256 {
        return Err(invalid("only HS256 is accepted"));
    }
    let ring = keys.get(ctx.secrets()).await.map_err(ApiError::unavailable)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = std::iter::once(&ring.current)
        .chain(ring.previous.as_ref())
        .find_map(|key| {
            jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(key_bytes(key)), &validation).ok()
        })
        .ok_or_else(|| invalid("the signature does not verify"))?
        .claims;

    let now = ctx.clock.now();
    let exp = claims["exp"].as_i64().ok_or_else(|| invalid("exp is required"))?;
    // Saturating: a signed claim at the edge of i64 is judged by the same rules, never an overflow.
    if exp.saturating_add(LEEWAY_SECS) <= now {
        return Err(ApiError::unauthorized("token_expired", "The SSO token has expired; sign in from Spark again"));
    }
    if exp.saturating_sub(now) > MAX_LIFETIME_SECS + LEEWAY_SECS {
        return Err(invalid("exp is more than 10 minutes ahead"));
    }
    if let Some(iat) = claims.get("iat") {
        let iat = iat.as_i64().ok_or_else(|| invalid("iat must be a number"))?;
        if iat >= exp || iat.saturating_sub(LEEWAY_SECS) > now {
            return Err(invalid("iat is not before exp, or in the future"));
        }
    }
    let text = |name: &str| claims[name].as_str().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    let sub = text("sub").filter(|s| s.len() <= 255).ok_or_else(|| invalid("sub is required (at most 255 bytes)"))?;
    let email = text("email").ok_or_else(|| invalid("email is required"))?;
    Ok(SsoLogin {
        profile: ExternalProfile {
            provider: PROVIDER.into(),
            external_id: sub,
            // Asserted: Spark's word, used only inside its organization (DESIGN.md §3a).
            email: Some(email),
            email_proven: false,
            // Spark keeps its users' addresses (they cannot change them): its organization's records.
            email_is_school_record: true,
            given_name: text("given_name"),
            family_name: text("family_name"),
            role: role(text("role").as_deref()),
            org_id: ctx.config.spark_organization_id.clone(),
        },
        expires_at: exp,
        fingerprint: crypto::sha256_hex(token.as_bytes()),
    })
}

/// Spark's roles mapped to ours; anything else (or none) is a student, the least privileged.
pub fn role(spark_role: Option<&str>) -> Role {
    match spark_role.map(str::to_ascii_lowercase).as_deref() {
        Some("teacher" | "instructor") => Role::Teacher,
        Some("admin" | "administrator" | "school_admin") => Role::OrgAdmin,
        Some("parent" | "observer" | "mentor") => Role::Observer,
        _ => Role::Student,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_map_to_the_least_privilege_that_fits() {
        assert_eq!(role(Some("student")), Role::Student);
        assert_eq!(role(Some("Teacher")), Role::Teacher);
        assert_eq!(role(Some("admin")), Role::OrgAdmin);
        assert_eq!(role(Some("parent")), Role::Observer);
        assert_eq!(role(Some("superuser")), Role::Student);
        assert_eq!(role(None), Role::Student);
    }
}
