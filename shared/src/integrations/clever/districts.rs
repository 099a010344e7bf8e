//! Districts and their Clever credentials.
//!
//! Each district's credentials are one Secrets Manager secret, `<CLEVER_SECRET_PREFIX><district id>`
//! (the template sets the prefix to `<stack name>/clever/districts/`), holding
//! `{"client_id", "client_secret"}`. They are written by the district admin API, read by the sync
//! functions, and never returned or logged. A warm instance keeps one client per district (and with it
//! the district token) for [`CLIENT_TTL`], then reads the secret again, so changed credentials apply.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::client::{CleverClient, CleverError, Credentials};
use crate::store::clever::CleverDistrict;
use crate::{ApiError, Context};

/// How long a warm instance trusts credentials it read.
pub const CLIENT_TTL: Duration = Duration::from_secs(15 * 60);

/// The warm instance's clients, by district.
#[derive(Default)]
pub struct ClientCache {
    clients: tokio::sync::Mutex<HashMap<String, (Arc<CleverClient>, Instant)>>,
}

impl ClientCache {
    async fn keep(&self, district_id: &str, client: Arc<CleverClient>) {
        self.clients.lock().await.insert(district_id.to_string(), (client, Instant::now()));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("CLEVER_SECRET_PREFIX is not configured")]
    NotConfigured,
    #[error("credentials of district {0} could not be read: {1}")]
    Secret(String, String),
    #[error("credentials of district {0} are not {{\"client_id\", \"client_secret\"}} JSON")]
    Malformed(String),
    #[error(transparent)]
    Clever(#[from] CleverError),
}

/// `PUT /api/clever/districts/{id}`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DistrictCredentials {
    pub name: String,
    pub client_id: String,
    pub client_secret: String,
}

#[derive(Deserialize)]
struct StoredCredentials {
    client_id: String,
    client_secret: String,
}

fn secret_id(ctx: &Context, district_id: &str) -> Result<String, SetupError> {
    let prefix = ctx.config.clever_secret_prefix.as_deref().ok_or(SetupError::NotConfigured)?;
    Ok(format!("{prefix}{district_id}"))
}

/// The client of a district, from the warm cache or built from its secret.
pub async fn client(ctx: &Context, district: &CleverDistrict) -> Result<Arc<CleverClient>, SetupError> {
    if let Some((client, at)) = ctx.kept::<ClientCache>().clients.lock().await.get(&district.id)
        && at.elapsed() < CLIENT_TTL
    {
        return Ok(client.clone());
    }
    // The cache is not locked while the secret is read: other districts' clients are not held up.
    let out = ctx.secrets().get_secret_value().secret_id(&district.secret_id).send().await.map_err(|e| {
        SetupError::Secret(district.id.clone(), aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())
    })?;
    let stored: StoredCredentials = out
        .secret_string
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| SetupError::Malformed(district.id.clone()))?;
    let credentials = Credentials { client_id: stored.client_id, client_secret: stored.client_secret.into() };
    let client = Arc::new(CleverClient::new(ctx.config.clever.clone(), &district.id, credentials)?);
    ctx.kept::<ClientCache>().keep(&district.id, client.clone()).await;
    Ok(client)
}

/// Adds or updates a district: the credentials are checked with Clever (a district token is
/// obtained), stored in Secrets Manager, and the district's schools are listed.
pub async fn register(
    ctx: &Context,
    district_id: &str,
    body: DistrictCredentials,
) -> Result<(CleverDistrict, usize), ApiError> {
    let bad = |m: &str| ApiError::bad_request("invalid_district", m);
    if district_id.is_empty()
        || district_id.len() > 64
        || !district_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad("the district id is Clever's id: letters, digits, - and _"));
    }
    let name = body.name.trim().to_string();
    if name.is_empty() || name.len() > 200 || body.client_id.trim().is_empty() || body.client_secret.is_empty() {
        return Err(bad("name, client_id and client_secret are required"));
    }
    let secret_value =
        serde_json::json!({"client_id": body.client_id.trim(), "client_secret": body.client_secret}).to_string();
    let credentials =
        Credentials { client_id: body.client_id.trim().to_string(), client_secret: body.client_secret.into() };
    let client =
        Arc::new(CleverClient::new(ctx.config.clever.clone(), district_id, credentials).map_err(ApiError::internal)?);
    client.check_token().await.map_err(|e| match e {
        CleverError::Unauthorized(_) => {
            ApiError::bad_request("clever_refused_credentials", "Clever refused these credentials for this district")
        }
        CleverError::Malformed(_) => ApiError::bad_request(
            "clever_no_district_token",
            "Clever issued no token for this district with these credentials",
        ),
        other => ApiError::new(
            http::StatusCode::BAD_GATEWAY,
            "clever_unavailable",
            format!("Clever could not be reached: {other}"),
        ),
    })?;
    let secret_id = secret_id(ctx, district_id).map_err(ApiError::internal)?;
    store_secret(ctx, &secret_id, secret_value).await?;
    let now = ctx.clock.now();
    let created_at = ctx.store().clever_district(district_id).await?.map_or(now, |d| d.created_at);
    let district = CleverDistrict { id: district_id.to_string(), name, secret_id, created_at, updated_at: now };
    ctx.store().put_clever_district(&district).await?;
    ctx.kept::<ClientCache>().keep(&district.id, client.clone()).await;
    let schools = discover_schools(ctx, &client, district_id).await.map_err(|e| {
        ApiError::new(http::StatusCode::BAD_GATEWAY, "clever_unavailable", format!("Schools could not be listed: {e}"))
    })?;
    tracing::info!(district_id, schools, "Clever district registered");
    Ok((district, schools))
}

/// Records every school Clever lists for the district (new ones need a full sync); returns how many.
pub async fn discover_schools(ctx: &Context, client: &CleverClient, district_id: &str) -> Result<usize, CleverError> {
    let (schools, _) = client
        .list("/v3.0/schools", |s| {
            Some((s["id"].as_str()?.to_string(), s["name"].as_str().unwrap_or_default().to_string()))
        })
        .await?;
    let store = ctx.store();
    let recorded = |e: crate::store::StoreError| CleverError::Malformed(format!("school not recorded: {e}"));
    for (id, name) in &schools {
        store.upsert_clever_school(district_id, id, name).await.map_err(recorded)?;
    }
    // The whole list arrived (a failed listing returned above): a known school missing from it is no
    // longer the district's, and is not synced every night into a 404; one listed again comes back.
    let now = ctx.clock.now();
    let known = store.clever_schools(district_id).await.map_err(recorded)?;
    let missing =
        known.iter().filter(|k| k.delisted_at.is_none() && !schools.iter().any(|(id, _)| *id == k.id)).count();
    let active = known.iter().filter(|k| k.delisted_at.is_none()).count();
    // A listing that drops most of a district at once (the app's access withdrawn for a moment, a
    // Clever incident) is confirmed school by school before anything is deactivated.
    let confirm = missing > 0 && missing * 2 > active;
    for known in known {
        let listed = schools.iter().any(|(id, _)| *id == known.id);
        match (listed, known.delisted_at) {
            (false, None) if confirm && !gone(client, &known.id).await? => {
                tracing::warn!(
                    alert = "clever_school_listing_incomplete",
                    district_id,
                    school_id = known.id,
                    "Clever's school list left out a school it still serves: kept active"
                );
            }
            (false, None) => {
                store.delist_clever_school(&known.id, now).await.map_err(recorded)?;
                tracing::warn!(district_id, school_id = known.id, "school no longer listed by Clever: deactivated");
                let why = "Clever no longer lists the school: it is deactivated and no longer synced";
                let summary = super::summary::Summary::of_event(&known, "-", "Deactivated", now, why);
                super::summary::publish(ctx, &summary).await;
            }
            (true, Some(_)) => {
                store.relist_clever_school(&known.id).await.map_err(recorded)?;
                tracing::info!(district_id, school_id = known.id, "school listed by Clever again: reactivated");
            }
            _ => {}
        }
    }
    Ok(schools.len())
}

/// Whether Clever answers a school 404 (gone from the district); other refusals and errors fail the
/// refresh rather than deactivate on a guess.
async fn gone(client: &CleverClient, school_id: &str) -> Result<bool, CleverError> {
    let id: String = url::form_urlencoded::byte_serialize(school_id.as_bytes()).collect();
    match client.get(&format!("/v3.0/schools/{id}")).await {
        Ok(_) => Ok(false),
        Err(CleverError::Refused { status: 404, .. }) => Ok(true),
        Err(e) => Err(e),
    }
}

async fn store_secret(ctx: &Context, secret_id: &str, value: String) -> Result<(), ApiError> {
    let sm = ctx.secrets();
    let created = sm
        .create_secret()
        .name(secret_id)
        .description("Clever app credentials of one district (client_id, client_secret)")
        .secret_string(value.clone())
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_exists_exception()) => sm
            .put_secret_value()
            .secret_id(secret_id)
            .secret_string(value)
            .send()
            .await
            .map(drop)
            .map_err(|e| ApiError::unavailable(aws_sdk_secretsmanager::error::DisplayErrorContext(e))),
        Err(e) => Err(ApiError::unavailable(aws_sdk_secretsmanager::error::DisplayErrorContext(e))),
    }
}
