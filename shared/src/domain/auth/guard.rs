//! Authentication of API requests and role guards.

use lambda_http::Request;

use super::Role;
use super::tokens::verify_access;
use crate::support::http::{bearer_token, cookie};
use crate::{ApiError, Context};

/// Cookie names. `__Host-` pins the access cookie to our host and path `/`; the refresh cookie is
/// only sent to the auth endpoints.
pub const ACCESS_COOKIE: &str = "__Host-hub_access";
pub const REFRESH_COOKIE: &str = "__Secure-hub_refresh";
pub const REFRESH_COOKIE_PATH: &str = "/api/auth";

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: String,
    pub email: Option<String>,
    pub role: Role,
    pub org_id: Option<String>,
    pub session_id: String,
}

impl Principal {
    /// Refuses callers whose role is not among `roles` (403).
    pub fn require_role(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) { Ok(()) } else { Err(ApiError::forbidden("Your role does not allow this")) }
    }

    /// Organization admins act within their own organization; platform admins anywhere.
    pub fn require_org_admin(&self, org_id: &str) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::OrgAdmin if self.org_id.as_deref() == Some(org_id) => Ok(()),
            _ => Err(ApiError::forbidden("You do not administer this organization")),
        }
    }

    /// The organization an admin acts on: their own, or (platform admins) the one they name.
    pub fn administered_organization(&self, requested: Option<&str>) -> Result<String, ApiError> {
        self.require_role(&[Role::OrgAdmin, Role::Admin])?;
        let org = match (requested, self.org_id.as_deref()) {
            (Some(org), _) => org.to_string(),
            (None, Some(own)) => own.to_string(),
            (None, None) => return Err(ApiError::bad_request("missing_organization", "Name the organization_id")),
        };
        self.require_org_admin(&org)?;
        Ok(org)
    }
}

/// Authenticates a session by `Authorization: Bearer` or, failing that, the access cookie. Partner
/// (OAuth) tokens are refused: only routes that name a scope accept them (`oauth::token::authenticate_for`).
pub async fn authenticate(ctx: &Context, req: &Request) -> Result<Principal, ApiError> {
    let token = presented_token(req)?;
    if super::tokens::is_partner_token(&token) {
        return Err(ApiError::new(
            http::StatusCode::FORBIDDEN,
            "insufficient_scope",
            "This route does not accept partner (OAuth) tokens",
        ));
    }
    session_principal(ctx, &token).await
}

/// The token a request presents: its bearer token, else its access cookie.
pub fn presented_token(req: &Request) -> Result<String, ApiError> {
    match bearer_token(req) {
        Some(t) => Ok(t.to_string()),
        None => cookie(req, ACCESS_COOKIE)
            .ok_or_else(|| ApiError::unauthorized("missing_token", "Authentication is required")),
    }
}

/// The caller of an internal (session) access token.
pub async fn session_principal(ctx: &Context, token: &str) -> Result<Principal, ApiError> {
    let claims = verify_access(ctx, token).await?;
    tracing::Span::current().record("user_id", claims.sub.as_str());
    Ok(Principal {
        user_id: claims.sub,
        email: claims.email,
        role: claims.role,
        org_id: claims.org,
        session_id: claims.sid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, org: Option<&str>) -> Principal {
        Principal { user_id: "u".into(), email: None, role, org_id: org.map(str::to_string), session_id: "s".into() }
    }

    #[test]
    fn role_guard_accepts_only_listed_roles() {
        assert!(principal(Role::Teacher, None).require_role(&[Role::Teacher, Role::Admin]).is_ok());
        let err = principal(Role::Student, None).require_role(&[Role::Teacher]).unwrap_err();
        assert_eq!(err.status, 403);
    }

    #[test]
    fn org_admins_are_confined_to_their_organization() {
        assert!(principal(Role::OrgAdmin, Some("o1")).require_org_admin("o1").is_ok());
        assert!(principal(Role::OrgAdmin, Some("o1")).require_org_admin("o2").is_err());
        assert!(principal(Role::Admin, None).require_org_admin("o2").is_ok());
        assert!(principal(Role::Teacher, Some("o1")).require_org_admin("o1").is_err());
    }
}
