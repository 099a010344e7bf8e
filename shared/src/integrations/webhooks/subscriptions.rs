//! Managing subscriptions (organization admins for their organization, platform admins for any):
//! target and event-type validation, secrets generated here and returned once, rotation with overlap.

use serde::Deserialize;

use super::sealing::{self, Sealed, SealingError};
use super::signing::new_secret;
use super::{ALL_EVENTS, EVENT_TYPES, SecretSet, Subscription};
use crate::domain::auth::Role;
use crate::domain::auth::guard::Principal;
use crate::store::webhooks::SubscriptionChanges;
use crate::{ApiError, Context, support::crypto};

/// Subscriptions one organization may have.
pub const MAX_PER_ORGANIZATION: usize = 25;
/// How long a rotated-out secret keeps signing next to the new one.
pub const SECRET_OVERLAP_SECS: i64 = 24 * 3600;
const MAX_URL_LEN: usize = 2048;
const MAX_DESCRIPTION_LEN: usize = 500;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    pub url: String,
    /// Event types, or `["*"]` for all.
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// Platform admins name the organization; organization admins subscribe their own.
    pub organization_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionUpdate {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    pub active: Option<bool>,
    /// Issues a new secret (returned once); the previous one keeps signing for 24 hours.
    #[serde(default)]
    pub rotate_secret: bool,
}

/// Creates a subscription; returns it with its secret, which is never shown again.
pub async fn create(
    ctx: &Context,
    principal: &Principal,
    new: NewSubscription,
) -> Result<(Subscription, String), ApiError> {
    let organization_id = principal.administered_organization(new.organization_id.as_deref())?;
    let event_types = check_event_types(new.event_types)?;
    let description = check_description(new.description)?;
    let url = check_target(ctx, &new.url).await?;
    let existing = ctx.store().subscriptions_of_organization(&organization_id, MAX_PER_ORGANIZATION as i32 + 1).await?;
    if existing.len() >= MAX_PER_ORGANIZATION {
        return Err(ApiError::conflict(
            "too_many_subscriptions",
            format!("An organization has at most {MAX_PER_ORGANIZATION} subscriptions"),
        ));
    }
    let id = format!("whsub_{}", crypto::random_token(12));
    let secret = new_secret();
    let set = SecretSet { current: secret.clone(), previous: None, previous_until: None };
    let now = ctx.clock.now();
    let subscription = Subscription {
        secrets: seal_set(ctx, &id, &set).await?,
        id,
        organization_id,
        url,
        event_types,
        description,
        active: true,
        disabled_reason: None,
        disabled_at: None,
        failing_since: None,
        secret_rotated_at: None,
        created_at: now,
        updated_at: now,
    };
    ctx.store().put_subscription(&subscription).await?;
    tracing::info!(
        subscription_id = subscription.id,
        organization_id = subscription.organization_id,
        "webhook subscription created"
    );
    Ok((subscription, secret))
}

/// The subscription, if the caller administers its organization. Others get 404, as for a
/// subscription that does not exist: ids of other organizations reveal nothing.
pub async fn visible(ctx: &Context, principal: &Principal, id: &str) -> Result<Subscription, ApiError> {
    principal.require_role(&[Role::OrgAdmin, Role::Admin])?;
    match ctx.store().subscription(id).await? {
        Some(s) if principal.require_org_admin(&s.organization_id).is_ok() => Ok(s),
        _ => Err(not_found()),
    }
}

/// Applies an update; returns the subscription and, when rotated, the new secret (shown once).
pub async fn update(
    ctx: &Context,
    principal: &Principal,
    id: &str,
    update: SubscriptionUpdate,
) -> Result<(Subscription, Option<String>), ApiError> {
    let current = visible(ctx, principal, id).await?;
    let mut changes = SubscriptionChanges {
        event_types: update.event_types.map(check_event_types).transpose()?,
        description: update.description.map(check_description).transpose()?,
        active: update.active,
        ..Default::default()
    };
    if let Some(url) = update.url {
        changes.url = Some(check_target(ctx, &url).await?);
    }
    let now = ctx.clock.now();
    let mut new_secret_value = None;
    if update.rotate_secret {
        let old = open_set(ctx, &current).await?;
        let secret = new_secret();
        let set = SecretSet {
            current: secret.clone(),
            previous: Some(old.current),
            previous_until: Some(now + SECRET_OVERLAP_SECS),
        };
        changes.secrets = Some((current.secrets.clone(), seal_set(ctx, id, &set).await?));
        new_secret_value = Some(secret);
    }
    match ctx.store().update_subscription(id, changes, now).await? {
        Some(updated) => {
            tracing::info!(subscription_id = id, rotated = new_secret_value.is_some(), "webhook subscription updated");
            Ok((updated, new_secret_value))
        }
        None if ctx.store().subscription(id).await?.is_some() => {
            Err(ApiError::conflict("concurrent_rotation", "The secret was rotated meanwhile; read it again and retry"))
        }
        None => Err(not_found()),
    }
}

pub async fn delete(ctx: &Context, principal: &Principal, id: &str) -> Result<(), ApiError> {
    visible(ctx, principal, id).await?;
    if !ctx.store().delete_subscription(id).await? {
        return Err(not_found());
    }
    tracing::info!(subscription_id = id, "webhook subscription deleted");
    Ok(())
}

/// The subscription's signing secrets, unsealed.
pub async fn open_set(ctx: &Context, subscription: &Subscription) -> Result<SecretSet, ApiError> {
    let plain = sealing::open(ctx, &subscription.id, &subscription.secrets).await.map_err(sealing_error)?;
    serde_json::from_slice(&plain).map_err(ApiError::internal)
}

async fn seal_set(ctx: &Context, id: &str, set: &SecretSet) -> Result<Sealed, ApiError> {
    let plain = serde_json::to_vec(set).map_err(ApiError::internal)?;
    sealing::seal(ctx, id, &plain).await.map_err(sealing_error)
}

fn sealing_error(e: SealingError) -> ApiError {
    match e {
        SealingError::Key(e) => ApiError::unavailable(e),
        other => ApiError::internal(other),
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("subscription_not_found", "No such webhook subscription")
}

/// A target must be a URL our outbound guard accepts (https outside the local stage, no
/// credentials, no private, loopback, link-local or metadata address, now or through DNS).
async fn check_target(ctx: &Context, url: &str) -> Result<String, ApiError> {
    let invalid = |m: String| ApiError::bad_request("invalid_url", m);
    let url = url.trim();
    if url.is_empty() || url.len() > MAX_URL_LEN {
        return Err(invalid(format!("url must be 1 to {MAX_URL_LEN} characters")));
    }
    let client = ctx.webhook_client().map_err(ApiError::internal)?;
    let parsed = client.check_target(url).await.map_err(|e| invalid(format!("url refused: {e}")))?;
    if parsed.fragment().is_some() {
        return Err(invalid("url must not have a fragment".into()));
    }
    Ok(parsed.to_string())
}

/// Known types, each once; `*` stands alone.
fn check_event_types(types: Vec<String>) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for t in types {
        let t = t.trim().to_string();
        if t != ALL_EVENTS && !EVENT_TYPES.contains(&t.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_event_type",
                format!("Unknown event type {t:?}; use \"*\" or any of {}", EVENT_TYPES.join(", ")),
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.is_empty() {
        return Err(ApiError::bad_request("invalid_event_type", "Name at least one event type, or \"*\""));
    }
    if out.iter().any(|t| t == ALL_EVENTS) {
        out = vec![ALL_EVENTS.to_string()];
    }
    Ok(out)
}

fn check_description(description: String) -> Result<String, ApiError> {
    let description = description.trim().to_string();
    if description.chars().count() > MAX_DESCRIPTION_LEN || description.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_description",
            format!("description is at most {MAX_DESCRIPTION_LEN} characters, without control characters"),
        ));
    }
    Ok(description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_are_known_deduplicated_and_star_stands_alone() {
        let types = |v: &[&str]| check_event_types(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(types(&["task.completed", "task.completed"]).unwrap(), ["task.completed"]);
        assert_eq!(types(&["quest.completed", "*"]).unwrap(), ["*"]);
        assert_eq!(types(&["task.exploded"]).unwrap_err().code, "invalid_event_type");
        assert_eq!(types(&[]).unwrap_err().code, "invalid_event_type");
    }

    #[test]
    fn descriptions_are_bounded_and_printable() {
        assert_eq!(check_description("  LMS sync ".into()).unwrap(), "LMS sync");
        assert!(check_description("x".repeat(501)).is_err());
        assert!(check_description("bell\u{7}".into()).is_err());
    }
}
