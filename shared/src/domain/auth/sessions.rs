//! Sessions: a login opens one; each refresh consumes the presented refresh token and issues the
//! next one (rotation). Presenting a consumed refresh token again means it leaked, so the whole
//! session (every token of that family) is revoked.

use serde::Serialize;

use super::User;
use super::guard::{ACCESS_COOKIE, REFRESH_COOKIE, REFRESH_COOKIE_PATH};
use super::tokens::{self, AccessClaims, RefreshClaims};
use crate::store::sessions::RotateError;
use crate::support::http::secure_cookie;
use crate::{ApiError, Context, support::crypto};

#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub refresh_expires_in: i64,
}

/// Tokens are credentials: `Debug` shows their lifetimes only, so a stray `{:?}` cannot leak them.
impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("refresh_expires_in", &self.refresh_expires_in)
            .finish()
    }
}

/// Opens a session for a user who has just proven who they are (SSO, LTI launch...).
pub async fn start_session(ctx: &Context, user: &User) -> Result<TokenPair, ApiError> {
    let session_id = crypto::random_token(16);
    let jti = crypto::random_token(16);
    let now = ctx.clock.now();
    let expires_at = now + ctx.config.refresh_token_ttl.as_secs() as i64;
    ctx.store().create_session(&session_id, &user.id, &jti, now, expires_at).await?;
    tracing::info!(user_id = user.id, session_id, "session started");
    issue(ctx, user, &session_id, jti, now, expires_at).await
}

/// Exchanges a refresh token for a new pair; the user's current profile goes into the new access token.
pub async fn refresh(ctx: &Context, refresh_token: &str) -> Result<(TokenPair, User), ApiError> {
    let claims = tokens::verify_refresh(ctx, refresh_token).await?;
    let store = ctx.store();
    let Some(user) = store.get_user(&claims.sub).await? else {
        store.revoke_session(&claims.sid, ctx.clock.now()).await?;
        return Err(ApiError::unauthorized("invalid_token", "The account no longer exists"));
    };
    let new_jti = crypto::random_token(16);
    let now = ctx.clock.now();
    let expires_at = now + ctx.config.refresh_token_ttl.as_secs() as i64;
    match store.rotate_refresh_token(&claims.sid, &user.id, &claims.jti, &new_jti, now, expires_at).await {
        Ok(()) => {}
        Err(RotateError::Reused) => {
            store.revoke_session(&claims.sid, now).await?;
            tracing::warn!(user_id = user.id, session_id = claims.sid, "refresh token reused: session revoked");
            return Err(ApiError::unauthorized(
                "refresh_token_reused",
                "This refresh token was already used; the session has been revoked",
            ));
        }
        Err(RotateError::Unknown) => {
            return Err(ApiError::unauthorized("invalid_token", "The token is invalid"));
        }
        Err(RotateError::SessionEnded) => {
            return Err(ApiError::unauthorized("session_revoked", "The session has ended; sign in again"));
        }
        Err(RotateError::Store(e)) => return Err(e.into()),
    }
    let pair = issue(ctx, &user, &claims.sid, new_jti, now, expires_at).await?;
    Ok((pair, user))
}

/// Ends a session (logout). Idempotent.
pub async fn end_session(ctx: &Context, session_id: &str) -> Result<(), ApiError> {
    ctx.store().revoke_session(session_id, ctx.clock.now()).await?;
    tracing::info!(session_id, "session ended");
    Ok(())
}

async fn issue(
    ctx: &Context,
    user: &User,
    session_id: &str,
    refresh_jti: String,
    now: i64,
    refresh_expires_at: i64,
) -> Result<TokenPair, ApiError> {
    let access_ttl = ctx.config.access_token_ttl.as_secs() as i64;
    let access = AccessClaims {
        sub: user.id.clone(),
        email: user.email.clone(),
        role: user.role,
        org: user.org_id.clone(),
        token_type: tokens::ACCESS.into(),
        sid: session_id.into(),
        iat: now,
        nbf: now,
        exp: now + access_ttl,
        jti: crypto::random_token(16),
    };
    let refresh = RefreshClaims {
        sub: user.id.clone(),
        token_type: tokens::REFRESH.into(),
        sid: session_id.into(),
        iat: now,
        nbf: now,
        exp: refresh_expires_at,
        jti: refresh_jti,
    };
    Ok(TokenPair {
        access_token: tokens::sign_access(ctx, &access).await?,
        refresh_token: tokens::sign_refresh(ctx, &refresh).await?,
        token_type: "Bearer",
        expires_in: access_ttl,
        refresh_expires_in: refresh_expires_at - now,
    })
}

/// The cookies that carry a session in a browser: the access token for every path, the refresh
/// token only for the auth endpoints.
pub fn session_cookies(pair: &TokenPair) -> [String; 2] {
    [
        secure_cookie(ACCESS_COOKIE, &pair.access_token, "/", pair.expires_in, "Lax"),
        secure_cookie(REFRESH_COOKIE, &pair.refresh_token, REFRESH_COOKIE_PATH, pair.refresh_expires_in, "Strict"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_tokens() {
        let pair = TokenPair {
            access_token: "eyJ.access.secret".into(),
            refresh_token: "eyJ.refresh.secret".into(),
            token_type: "Bearer",
            expires_in: 900,
            refresh_expires_in: 60,
        };
        let printed = format!("{pair:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("900"));
    }
}
