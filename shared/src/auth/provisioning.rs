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

/// What the asserted role does to an account that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExistingRole {
    /// A sign-in: the account follows it between unprivileged roles.
    Follow,
    /// A roster of one course: the role is for new accounts only.
    Keep,
}

/// A person signing in through a provider: found, linked or created, and updated.
pub async fn provision_user(ctx: &Context, profile: &ExternalProfile) -> Result<(User, Provisioned), ApiError> {
    provision(ctx, profile, ExistingRole::Follow).await
}

/// A person listed in a course's roster: as [`provision_user`], but an existing account keeps its role
/// (a roster speaks for one course; the person's own sign-ins decide their role).
pub async fn provision_roster_member(
    ctx: &Context,
    profile: &ExternalProfile,
) -> Result<(User, Provisioned), ApiError> {
    provision(ctx, profile, ExistingRole::Keep).await
}

async fn provision(
    ctx: &Context,
    profile: &ExternalProfile,
    existing_role: ExistingRole,
) -> Result<(User, Provisioned), ApiError> {
    validate(profile)?;
    let store = ctx.store();
    for _ in 0..ATTEMPTS {
        if let Some(user_id) = store.user_id_by_identity(&profile.provider, &profile.external_id).await? {
            let Some(user) = store.get_user(&user_id).await? else {
                return Err(ApiError::internal(format!("identity points at missing user {user_id}")));
            };
            may_sign_in(&user, profile)?;
            match apply_profile(ctx, user, profile, existing_role).await? {
                Some(user) => return Ok((user, Provisioned::Existing)),
                None => continue,
            }
        }
        if profile.email_verified
            && let Some(email) = &profile.email
            && let Some(user_id) = store.user_id_by_email(email).await?
        {
            let Some(existing) = store.get_user(&user_id).await? else { continue };
            may_link_by_email(&existing, profile)?;
            // Conditional on the account being as checked, and on it having no other identity of this
            // provider (one Spark account per person: a look-alike address cannot add a second).
            match store.link_identity(&existing, &profile.provider, &profile.external_id).await {
                Ok(()) => {
                    tracing::info!(user_id, provider = profile.provider, "external identity linked by verified email");
                    match apply_profile(ctx, existing, profile, existing_role).await? {
                        Some(user) => return Ok((user, Provisioned::Linked)),
                        None => continue,
                    }
                }
                Err(WriteError::Conflict) => {
                    if store.user_id_by_identity(&profile.provider, &profile.external_id).await?.is_none()
                        && store.user_has_identity_of(&user_id, &profile.provider).await?
                    {
                        return Err(link_refused(
                            &existing,
                            profile,
                            "the account has another identity of this provider",
                        ));
                    }
                    continue;
                }
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

/// A provider login may take over an existing account by email only within the provider's own
/// organization, and never a privileged one: otherwise a partner asserting an administrator's address
/// would sign in as that administrator (DESIGN.md §3a). Accounts of no organization (parents and mentors
/// invited by email) are never linked: an LMS asserting a parent's address would otherwise take over the
/// parent's account and, through it, the portfolios of children in other organizations.
fn may_link_by_email(existing: &User, profile: &ExternalProfile) -> Result<(), ApiError> {
    let same_tenant = existing.org_id.is_some() && existing.org_id == profile.org_id;
    if same_tenant && !existing.role.is_privileged() {
        return Ok(());
    }
    Err(link_refused(existing, profile, "its email belongs to an account it may not link to"))
}

/// A login through an identity already linked: refused when it points at a platform admin (providers
/// never create one: such a link predates the rules) or at an account of another organization.
fn may_sign_in(user: &User, profile: &ExternalProfile) -> Result<(), ApiError> {
    let foreign = user.org_id.is_some() && user.org_id != profile.org_id;
    if user.role == Role::Admin || foreign {
        return Err(link_refused(user, profile, "its identity points at an account it may not sign into"));
    }
    Ok(())
}

/// Refuses a provider login, with an alert line for the administrators.
fn link_refused(existing: &User, profile: &ExternalProfile, why: &str) -> ApiError {
    tracing::warn!(
        alert = "account_link_refused",
        user_id = existing.id,
        provider = profile.provider,
        existing_org = existing.org_id.as_deref().unwrap_or("-"),
        provider_org = profile.org_id.as_deref().unwrap_or("-"),
        existing_role = existing.role.as_str(),
        why,
        "provider login refused"
    );
    ApiError::new(
        http::StatusCode::FORBIDDEN,
        "account_link_refused",
        "This email belongs to an account that cannot be signed into this way; ask an administrator",
    )
}

/// Writes what the provider now says (names, email, role) when it differs. `None` asks the caller
/// to start over because the user changed concurrently.
async fn apply_profile(
    ctx: &Context,
    user: User,
    profile: &ExternalProfile,
    existing_role: ExistingRole,
) -> Result<Option<User>, ApiError> {
    let mut wanted = user.clone();
    if profile.given_name.is_some() {
        wanted.given_name = profile.given_name.clone();
    }
    if profile.family_name.is_some() {
        wanted.family_name = profile.family_name.clone();
    }
    // Only a verified address may replace the account's (and take its uniqueness key), never an
    // administrator's: an unverified one would squat someone else's address.
    if let Some(email) = &profile.email
        && profile.email_verified
        && !user.role.is_privileged()
        && user.email.as_deref().map(email_key) != Some(email_key(email))
    {
        wanted.email = Some(email.trim().to_string());
    }
    // A provider moves people between unprivileged roles only; it never grants or takes away an
    // administrator's role, and never moves an account to another organization.
    let asserted = provider_role(profile.role);
    if existing_role == ExistingRole::Keep {
        // The account's role stands.
    } else if !user.role.is_privileged() && !asserted.is_privileged() {
        wanted.role = asserted;
    } else if asserted != user.role {
        tracing::warn!(user_id = user.id, provider = profile.provider, "role change from a provider ignored");
    }
    if user.org_id.is_none() {
        wanted.org_id = profile.org_id.clone();
    } else if profile.org_id.is_some() && profile.org_id != user.org_id {
        tracing::warn!(user_id = user.id, provider = profile.provider, "organization change from a provider ignored");
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
            || email_key(e).len() > 320
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
