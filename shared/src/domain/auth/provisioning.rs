//! Find-or-create of a user from an external identity (Spark SSO, LTI launches and rosters, Clever).
//!
//! The rules (DESIGN.md §3a), in one place:
//! - The external identity decides first. An identity that points at a platform admin or at an
//!   account of another organization is refused.
//! - What a provider says about an address is *asserted*: it is used only inside the provider's
//!   organization, and only when it is the organization's record of the person (Spark's; an LMS
//!   registered as one whose users cannot change their address). A login may link by it only to an
//!   account of that organization that holds that organization's key for the address (never one
//!   whose address is proven), is not privileged, has the role the provider asserts (a learner's
//!   claim never opens a teacher's or a parent's account), and has no identity of this provider yet.
//!   Otherwise a new account is made, which keeps the address for display only: the answer is the
//!   same whether or not the address is known anywhere.
//! - No login changes an account's role or organization; names, and an asserted address that was
//!   never proven, follow the provider.
//!
//! Uniqueness items make concurrent first logins of one person safe: exactly one transaction creates
//! the user, the others lose on a condition and retry, finding the winner's user.

use serde::Serialize;
use serde_json::json;

use super::{Role, User, email_key, matchable};
use crate::runtime::events::{self, DomainEvent};
use crate::store::WriteError;
use crate::{ApiError, Context, support::crypto};

/// What a provider asserts about a person, or what an operator's tool vouches for.
#[derive(Clone, Debug)]
pub struct ExternalProfile {
    /// `spark`, `clever`, `lti:<registration>`...
    pub provider: String,
    pub external_id: String,
    pub email: Option<String>,
    /// True only where the address is proven: an operator's tool (`devstack token`) vouching for it.
    /// A provider's claim (an id_token's `email`, Spark's, a roster's) is never proven.
    pub email_proven: bool,
    /// Whether the provider's address is its organization's record of the person (its users cannot
    /// change it: Spark's, an LMS registered so): only then may it match, or hold, the organization's
    /// key. An LMS whose learners type their own address asserts it for display only.
    pub email_is_school_record: bool,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// The role of a new account; an existing account keeps its own.
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

/// A person signing in through a provider, or listed in a course roster: found, linked or created.
pub async fn provision_user(ctx: &Context, profile: &ExternalProfile) -> Result<(User, Provisioned), ApiError> {
    validate(profile)?;
    let store = ctx.store();
    for _ in 0..ATTEMPTS {
        if let Some(user_id) = store.user_id_by_identity(&profile.provider, &profile.external_id).await? {
            let Some(user) = store.get_user(&user_id).await? else {
                return Err(ApiError::internal(format!("identity points at missing user {user_id}")));
            };
            may_sign_in(&user, profile)?;
            match apply_profile(ctx, user, profile).await? {
                Some(user) => return Ok((user, Provisioned::Existing)),
                None => continue,
            }
        }
        let key = key_of(profile);
        let holder = match key {
            Some(EmailKey::Proven(email)) => store.user_id_by_proven_email(email).await?,
            // Only the organization's own key is looked at: an account of anywhere else, or one whose
            // address is proven, is never reached (the answer, and its timing, tell nothing of them).
            Some(EmailKey::Org(org, email)) => store.user_id_by_org_email(org, email).await?,
            None => None,
        };
        let claim_key = match holder {
            None => key.is_some(),
            Some(holder_id) => {
                let Some(existing) = store.get_user(&holder_id).await? else { continue };
                if let Err(why) = may_link(&existing, profile) {
                    if profile.email_proven {
                        return Err(ApiError::conflict("email_in_use", "This address belongs to another account"));
                    }
                    link_refused(&existing, profile, why);
                    false
                } else {
                    // Conditional on the account being as checked, and on it having no identity of
                    // this provider (one account per provider and person).
                    match store.link_identity(&existing, &profile.provider, &profile.external_id).await {
                        Ok(()) => {
                            tracing::info!(
                                user_id = existing.id,
                                provider = profile.provider,
                                "identity linked by email"
                            );
                            match apply_profile(ctx, existing, profile).await? {
                                Some(user) => return Ok((user, Provisioned::Linked)),
                                None => continue,
                            }
                        }
                        Err(WriteError::Conflict) => {
                            if store.user_id_by_identity(&profile.provider, &profile.external_id).await?.is_some()
                                || !store.user_has_identity_of(&existing.id, &profile.provider).await?
                            {
                                continue;
                            }
                            link_refused(&existing, profile, "the account has another identity of this provider");
                            false
                        }
                        Err(WriteError::Store(e)) => return Err(e.into()),
                    }
                }
            }
        };
        let now = ctx.clock.now();
        let user = User {
            id: crypto::new_id(),
            email: profile.email.as_deref().map(|e| e.trim().to_string()),
            email_proven: profile.email_proven,
            email_indexed: claim_key,
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
            // A concurrent login created this identity, or took the address's key: the next round
            // finds either.
            Err(WriteError::Conflict) => continue,
            Err(WriteError::Store(e)) => return Err(e.into()),
        }
    }
    Err(ApiError::unavailable("user provisioning kept conflicting"))
}

/// The local stack's operator door (`make token`, the contract run, test set-ups): vouches for the
/// address (proven), sets the role as asked, and re-opens the account of an identity it made before,
/// whatever its role. Only on the local stage: a deployed stack has no such door.
pub async fn provision_as_operator(ctx: &Context, profile: &ExternalProfile) -> Result<User, ApiError> {
    if ctx.config.stage != crate::support::config::Stage::Local {
        return Err(ApiError::new(
            http::StatusCode::FORBIDDEN,
            "operator_door_closed",
            "Only the local stack makes accounts for an operator",
        ));
    }
    let profile = ExternalProfile { email_proven: true, ..profile.clone() };
    let store = ctx.store();
    let user = match store.user_id_by_identity(&profile.provider, &profile.external_id).await? {
        Some(id) => {
            store.get_user(&id).await?.ok_or_else(|| ApiError::internal("identity points at a missing user"))?
        }
        None => provision_user(ctx, &profile).await?.0,
    };
    if user.role == profile.role {
        return Ok(user);
    }
    let promoted = User { role: profile.role, updated_at: user.updated_at + 1, ..user.clone() };
    match store.update_user(&user, &promoted).await {
        Ok(()) => Ok(promoted),
        Err(WriteError::Conflict) => Err(ApiError::conflict("conflict", "The account changed meanwhile; retry")),
        Err(WriteError::Store(e)) => Err(e.into()),
    }
}

/// The key a profile's address may be matched by: the global one for a proven address, the
/// organization's for an asserted one that folds to itself, none otherwise.
enum EmailKey<'a> {
    Proven(&'a str),
    Org(&'a str, &'a str),
}

fn key_of(profile: &ExternalProfile) -> Option<EmailKey<'_>> {
    let email = profile.email.as_deref()?;
    match (profile.email_proven, profile.org_id.as_deref()) {
        (true, _) => Some(EmailKey::Proven(email)),
        (false, Some(org)) if vouched(profile, email) => Some(EmailKey::Org(org, email)),
        _ => None,
    }
}

/// Whether the provider vouches for an asserted address as its school's record, in a form that may be
/// matched at all: only then may the address hold its organization's key.
fn vouched(profile: &ExternalProfile, email: &str) -> bool {
    profile.email_is_school_record && matchable(email)
}

/// Whether a login may take over the account that holds its address's key (DESIGN.md §3a): only an
/// unprivileged account of the provider's own organization with the role the provider asserts.
/// Otherwise a Moodle learner who typed a teacher's address into their profile would open the
/// teacher's account, or a parent's, and through it the portfolios the parent follows.
fn may_link(existing: &User, profile: &ExternalProfile) -> Result<(), &'static str> {
    if existing.org_id != profile.org_id {
        return Err("the account belongs to another organization");
    }
    if existing.role.is_privileged() {
        return Err("the account is an administrator's");
    }
    if existing.email_proven && !profile.email_proven {
        return Err("the account's address is proven: an assertion never reaches it");
    }
    if existing.role != provider_role(profile.role) {
        return Err("the account has another role than the provider asserts");
    }
    Ok(())
}

/// A login through an identity already linked: refused when it points at a platform admin (providers
/// never create one: such a link predates the rules) or at an account of another organization.
fn may_sign_in(user: &User, profile: &ExternalProfile) -> Result<(), ApiError> {
    if user.role == Role::Admin || user.org_id != profile.org_id {
        link_refused(user, profile, "its identity points at an account it may not sign into");
        return Err(ApiError::new(
            http::StatusCode::FORBIDDEN,
            "account_link_refused",
            "This sign-in cannot open its account; ask an administrator",
        ));
    }
    Ok(())
}

/// An alert line for the administrators: a provider's login was kept out of an account. The person
/// gets an account of their own (or, for an identity linked before the rules, a refusal).
fn link_refused(existing: &User, profile: &ExternalProfile, why: &str) {
    tracing::warn!(
        alert = "account_link_refused",
        user_id = existing.id,
        provider = profile.provider,
        existing_org = existing.org_id.as_deref().unwrap_or("-"),
        provider_org = profile.org_id.as_deref().unwrap_or("-"),
        existing_role = existing.role.as_str(),
        why,
        "provider login kept out of an existing account"
    );
}

/// Writes what the provider now says (names; the address while it is not proven) when it differs.
/// Never the role or the organization. `None` asks the caller to start over because the user
/// changed concurrently.
async fn apply_profile(ctx: &Context, user: User, profile: &ExternalProfile) -> Result<Option<User>, ApiError> {
    let mut wanted = user.clone();
    if profile.given_name.is_some() {
        wanted.given_name = profile.given_name.clone();
    }
    if profile.family_name.is_some() {
        wanted.family_name = profile.family_name.clone();
    }
    // A proven address stands (an assertion never replaces it). An asserted one follows its provider;
    // it holds the organization's key only as its provider vouches for it when it is set: a key is
    // claimed by a new address, never later for one written while the provider did not vouch (an LMS
    // whose registration changed), and dropped once the provider no longer vouches for it.
    if let Some(email) = &profile.email
        && !user.email_proven
        && !user.role.is_privileged()
    {
        let email = email.trim();
        if user.email.as_deref().map(email_key) != Some(email_key(email)) {
            wanted.email = Some(email.to_string());
            wanted.email_indexed = user.org_id.is_some() && vouched(profile, email);
        } else if user.email_indexed && !profile.email_is_school_record {
            wanted.email_indexed = false;
        }
    }
    let asserted = provider_role(profile.role);
    if asserted != user.role {
        tracing::info!(user_id = user.id, provider = profile.provider, "role asserted by a login ignored");
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
            let fresh = store.get_user(&user.id).await?;
            if fresh.as_ref() != Some(&user) {
                return Ok(None);
            }
            // Another account of the organization holds the address: keep it for display only.
            wanted.email_indexed = false;
            if wanted == user {
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
