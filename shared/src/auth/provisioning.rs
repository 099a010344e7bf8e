//! Find-or-create-or-update of a user from a trusted external identity (Spark SSO, Clever, LTI).
//!
//! Order: the external identity decides first; then a verified email links the identity to an
//! existing account; otherwise a new user is created. Uniqueness items make concurrent first
//! logins of one person safe: exactly one transaction creates the user, the others lose on a
//! condition and retry, finding the winner's user.

use serde::Serialize;
use serde_json::json;

use super::{Role, User, email_key};
use crate::events::{self, DomainEvent};
use crate::store::WriteError;
use crate::{ApiError, Context, crypto};

/// What a trusted provider asserts about a person.
#[derive(Clone, Debug)]
pub struct ExternalProfile {
    /// `spark`, `clever`, `lti:<issuer>`...
    pub provider: String,
    pub external_id: String,
    pub email: Option<String>,
    /// Only a verified email may attach this identity to an account that already exists.
    pub email_verified: bool,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub role: Role,
    pub org_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provisioned {
    Created,
    Linked,
    Existing,
}

/// Concurrent writers can each cost one retry; more than this means something is wrong.
const ATTEMPTS: usize = 5;

pub async fn provision_user(ctx: &Context, profile: &ExternalProfile) -> Result<(User, Provisioned), ApiError> {
    validate(profile)?;
    let store = ctx.store();
    for _ in 0..ATTEMPTS {
        if let Some(user_id) = store.user_id_by_identity(&profile.provider, &profile.external_id).await? {
            let Some(user) = store.get_user(&user_id).await? else {
                return Err(ApiError::internal(format!("identity points at missing user {user_id}")));
            };
            match apply_profile(ctx, user, profile).await? {
                Some(user) => return Ok((user, Provisioned::Existing)),
                None => continue,
            }
        }
        if profile.email_verified
            && let Some(email) = &profile.email
            && let Some(user_id) = store.user_id_by_email(email).await?
        {
            match store.link_identity(&user_id, &profile.provider, &profile.external_id).await {
                Ok(()) => {
                    tracing::info!(user_id, provider = profile.provider, "external identity linked by verified email");
                    let user =
                        store.get_user(&user_id).await?.ok_or_else(|| ApiError::internal("linked user vanished"))?;
                    match apply_profile(ctx, user, profile).await? {
                        Some(user) => return Ok((user, Provisioned::Linked)),
                        None => continue,
                    }
                }
                Err(WriteError::Conflict) => continue,
                Err(WriteError::Store(e)) => return Err(e.into()),
            }
        }
        let now = ctx.clock.now();
        let user = User {
            id: crypto::new_id(),
            email: profile.email.as_deref().map(|e| e.trim().to_string()),
            given_name: profile.given_name.clone(),
            family_name: profile.family_name.clone(),
            role: provider_role(profile.role),
            org_id: profile.org_id.clone(),
            created_at: now,
            updated_at: now,
        };
        let registered = DomainEvent::new(
            events::USER_REGISTERED,
            user.org_id.clone(),
            json!({ "user_id": user.id, "email": user.email, "role": user.role, "provider": profile.provider }),
            now,
        );
        match store.create_user(&user, &profile.provider, &profile.external_id, &registered).await {
            Ok(()) => {
                tracing::info!(user_id = user.id, provider = profile.provider, "user created");
                events::publish(ctx, &[registered]).await;
                return Ok((user, Provisioned::Created));
            }
            Err(WriteError::Conflict) => {
                // Either a concurrent login created this identity (the next round finds it), or the
                // email belongs to another account and was not verified: that one cannot be merged.
                if !profile.email_verified
                    && let Some(email) = &profile.email
                    && store.user_id_by_identity(&profile.provider, &profile.external_id).await?.is_none()
                    && store.user_id_by_email(email).await?.is_some()
                {
                    return Err(ApiError::conflict(
                        "email_in_use",
                        "This email belongs to another account; verify it with the provider to link them",
                    ));
                }
            }
            Err(WriteError::Store(e)) => return Err(e.into()),
        }
    }
    Err(ApiError::unavailable("user provisioning kept conflicting"))
}

/// Writes what the provider now says (names, email, role) when it differs. `None` asks the caller
/// to start over because the user changed concurrently.
async fn apply_profile(ctx: &Context, user: User, profile: &ExternalProfile) -> Result<Option<User>, ApiError> {
    let mut wanted = user.clone();
    if profile.given_name.is_some() {
        wanted.given_name = profile.given_name.clone();
    }
    if profile.family_name.is_some() {
        wanted.family_name = profile.family_name.clone();
    }
    if let Some(email) = &profile.email
        && user.email.as_deref().map(email_key) != Some(email_key(email))
    {
        wanted.email = Some(email.trim().to_string());
    }
    if user.role != Role::Admin {
        wanted.role = provider_role(profile.role);
    }
    if profile.org_id.is_some() {
        wanted.org_id = profile.org_id.clone();
    }
    if wanted == user {
        return Ok(Some(user));
    }
    wanted.updated_at = ctx.clock.now().max(user.updated_at + 1);
    let store = ctx.store();
    match store.update_user(&user, &wanted).await {
        Ok(()) => Ok(Some(wanted)),
        Err(WriteError::Store(e)) => Err(e.into()),
        Err(WriteError::Conflict) => {
            // The new email may belong to someone else: keep the old one, apply the rest.
            let fresh = store.get_user(&user.id).await?;
            if fresh.as_ref() != Some(&user) {
                return Ok(None);
            }
            tracing::warn!(user_id = user.id, "email change refused: the address belongs to another account");
            wanted.email = user.email.clone();
            if wanted.given_name == user.given_name
                && wanted.family_name == user.family_name
                && wanted.role == user.role
                && wanted.org_id == user.org_id
            {
                return Ok(Some(user));
            }
            match store.update_user(&user, &wanted).await {
                Ok(()) => Ok(Some(wanted)),
                Err(WriteError::Conflict) => Ok(None),
                Err(WriteError::Store(e)) => Err(e.into()),
            }
        }
    }
}

/// Providers never grant platform-wide `admin`; the most they assert is an organization admin.
fn provider_role(role: Role) -> Role {
    if role == Role::Admin { Role::OrgAdmin } else { role }
}

fn validate(p: &ExternalProfile) -> Result<(), ApiError> {
    let bad = |m: &str| Err(ApiError::bad_request("invalid_identity", m));
    if p.provider.is_empty() || p.provider.len() > 200 || p.provider.contains('#') {
        return bad("provider is empty or invalid");
    }
    if p.external_id.is_empty() || p.external_id.len() > 255 {
        return bad("external id is empty or longer than 255 characters");
    }
    if let Some(email) = &p.email {
        let e = email.trim();
        if e.len() > 254
            || !e.contains('@')
            || e.starts_with('@')
            || e.ends_with('@')
            || e.chars().any(char::is_whitespace)
        {
            return bad("email is not a valid address");
        }
    }
    Ok(())
}
