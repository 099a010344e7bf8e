//! Keys and credentials from Secrets Manager, fetched on first use and cached in the warm instance.
//!
//! Signing keys rotate the Secrets Manager way: `put-secret-value` makes a new `AWSCURRENT` version and
//! moves the old one to `AWSPREVIOUS`. Tokens name the version that signed them (`kid`), so tokens
//! signed before a rotation stay valid until they expire, and a token with a `kid` we have not seen
//! triggers one early refresh of the cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use secrecy::{ExposeSecret, SecretSlice};
use tokio::sync::RwLock;

/// How long a fetched key ring is trusted before it is fetched again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// The least time between two fetches forced by an unknown `kid` (bounds the cost of forged tokens).
const MIN_FORCED_REFRESH: Duration = Duration::from_secs(10);

pub struct SigningKey {
    /// The Secrets Manager version id; goes into the JWT header as `kid`.
    pub kid: String,
    pub secret: SecretSlice<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct KeyRing {
    pub current: SigningKey,
    pub previous: Option<SigningKey>,
}

impl KeyRing {
    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        std::iter::once(&self.current).chain(self.previous.as_ref()).find(|k| k.kid == kid)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("secret {secret_id} could not be read: {reason}")]
pub struct SecretsError {
    pub secret_id: String,
    pub reason: String,
}

/// A key ring held in the warm instance.
pub struct CachedKeyRing {
    secret_id: String,
    cached: RwLock<Option<(Arc<KeyRing>, Instant)>>,
}

impl CachedKeyRing {
    pub fn new(secret_id: impl Into<String>) -> Self {
        Self { secret_id: secret_id.into(), cached: RwLock::new(None) }
    }

    /// The key ring, from cache while it is fresh.
    pub async fn get(&self, client: &Client) -> Result<Arc<KeyRing>, SecretsError> {
        if let Some((ring, at)) = self.cached.read().await.as_ref()
            && at.elapsed() < CACHE_TTL
        {
            return Ok(ring.clone());
        }
        self.fetch(client).await
    }

    /// Fetches again after a token named a `kid` we do not know, unless we fetched very recently.
    pub async fn refresh_for_unknown_kid(&self, client: &Client) -> Result<Arc<KeyRing>, SecretsError> {
        if let Some((ring, at)) = self.cached.read().await.as_ref()
            && at.elapsed() < MIN_FORCED_REFRESH
        {
            return Ok(ring.clone());
        }
        self.fetch(client).await
    }

    async fn fetch(&self, client: &Client) -> Result<Arc<KeyRing>, SecretsError> {
        let current = fetch_version(client, &self.secret_id, "AWSCURRENT")
            .await?
            .ok_or_else(|| self.error("no AWSCURRENT version"))?;
        let previous = fetch_version(client, &self.secret_id, "AWSPREVIOUS").await?;
        let ring = Arc::new(KeyRing { current, previous });
        *self.cached.write().await = Some((ring.clone(), Instant::now()));
        Ok(ring)
    }

    fn error(&self, reason: &str) -> SecretsError {
        SecretsError { secret_id: self.secret_id.clone(), reason: reason.to_string() }
    }
}

/// One version of a secret by stage; `None` when the stage does not exist (no rotation yet).
async fn fetch_version(client: &Client, secret_id: &str, stage: &str) -> Result<Option<SigningKey>, SecretsError> {
    let error = |reason: String| SecretsError { secret_id: secret_id.to_string(), reason };
    match client.get_secret_value().secret_id(secret_id).version_stage(stage).send().await {
        Ok(out) => {
            let kid = out.version_id.ok_or_else(|| error("version without id".into()))?;
            let value = out.secret_string.ok_or_else(|| error("secret is not a string".into()))?;
            if value.len() < 32 {
                return Err(error("signing key shorter than 32 bytes".into()));
            }
            Ok(Some(SigningKey { kid, secret: value.into_bytes().into() }))
        }
        Err(e)
            if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) && stage != "AWSCURRENT" =>
        {
            Ok(None)
        }
        Err(e) => Err(error(aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string())),
    }
}

/// Reads the raw bytes of a key; the only place they leave their wrapper.
pub fn key_bytes(key: &SigningKey) -> &[u8] {
    key.secret.expose_secret()
}
