//! Everything a function needs, built once per cold start and shared by every request of the
//! warm instance. AWS clients are created on first use, so a function pays only for what it uses.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use aws_config::{BehaviorVersion, SdkConfig};

use crate::store::Store;
use crate::support::config::Config;
use crate::support::outbound::{OutboundClient, OutboundPolicy};
use crate::support::secrets::CachedKeyRing;

/// Outbound clients are kept by (allowed hosts, redirects followed).
type OutboundKey = (Option<Vec<String>>, usize);
/// Outbound clients one warm instance keeps. Hosts come from outside (an LMS's `lineitem` and
/// `memberships_url` claims), so launches naming ever new subdomains must not grow a 128 MB instance
/// without bound: past this many, the least recently used client goes.
pub const MAX_OUTBOUND_CLIENTS: usize = 256;

pub struct Context {
    pub config: Config,
    sdk: SdkConfig,
    dynamodb: OnceLock<aws_sdk_dynamodb::Client>,
    s3: OnceLock<aws_sdk_s3::Client>,
    sqs: OnceLock<aws_sdk_sqs::Client>,
    secrets: OnceLock<aws_sdk_secretsmanager::Client>,
    ses: OnceLock<aws_sdk_sesv2::Client>,
    sns: OnceLock<aws_sdk_sns::Client>,
    pub access_keys: CachedKeyRing,
    pub refresh_keys: CachedKeyRing,
    /// The Spark SSO secret (current and previous version), when this function serves Spark.
    pub spark_sso_keys: Option<CachedKeyRing>,
    /// The Spark webhook HMAC secret (current and previous version).
    pub spark_webhook_keys: Option<CachedKeyRing>,
    /// The key of Spark's API, for grade passback.
    pub spark_api_key: Option<CachedKeyRing>,
    /// The key that encrypts webhook subscription secrets at rest.
    pub webhook_sealing_keys: Option<CachedKeyRing>,
    /// The seeds of the OAuth access-token signing keys (current and previous).
    pub oauth_keys: Option<CachedKeyRing>,
    pub lti_tool_keys: Option<CachedKeyRing>,
    pub clock: Clock,
    /// What integrations keep per warm instance (Clever clients, LTI platform keys...), one value
    /// per type; see [`Context::kept`].
    kept: std::sync::Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    outbound: std::sync::Mutex<LruCache<OutboundKey, OutboundClient>>,
}

impl Context {
    /// Loads the AWS configuration the standard way (region, credentials, `AWS_ENDPOINT_URL`).
    pub async fn from_env() -> Result<Self, crate::support::config::ConfigError> {
        let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Ok(Self::new(Config::from_env()?, sdk))
    }

    pub fn new(config: Config, sdk: SdkConfig) -> Self {
        Self {
            access_keys: CachedKeyRing::new(config.access_key_secret_id.clone()),
            refresh_keys: CachedKeyRing::new(config.refresh_key_secret_id.clone()),
            spark_sso_keys: config.spark_sso_secret_id.clone().map(CachedKeyRing::new),
            spark_webhook_keys: config.spark_webhook_secret_id.clone().map(CachedKeyRing::new),
            spark_api_key: config.spark_api_key_secret_id.clone().map(CachedKeyRing::new),
            webhook_sealing_keys: config.webhook_sealing_key_secret_id.clone().map(CachedKeyRing::new),
            oauth_keys: config.oauth_signing_key_secret_id.clone().map(CachedKeyRing::new),
            lti_tool_keys: config.lti_tool_key_secret_id.clone().map(CachedKeyRing::new),
            config,
            sdk,
            dynamodb: OnceLock::new(),
            s3: OnceLock::new(),
            sqs: OnceLock::new(),
            secrets: OnceLock::new(),
            ses: OnceLock::new(),
            sns: OnceLock::new(),
            clock: Clock::default(),
            kept: Default::default(),
            outbound: std::sync::Mutex::new(LruCache::new(MAX_OUTBOUND_CLIENTS)),
        }
    }

    pub fn dynamodb(&self) -> &aws_sdk_dynamodb::Client {
        self.dynamodb.get_or_init(|| aws_sdk_dynamodb::Client::new(&self.sdk))
    }
    pub fn s3(&self) -> &aws_sdk_s3::Client {
        self.s3.get_or_init(|| {
            // Path-style addressing works against AWS and against a local endpoint alike.
            let conf = aws_sdk_s3::config::Builder::from(&self.sdk).force_path_style(true).build();
            aws_sdk_s3::Client::from_conf(conf)
        })
    }
    pub fn sqs(&self) -> &aws_sdk_sqs::Client {
        self.sqs.get_or_init(|| aws_sdk_sqs::Client::new(&self.sdk))
    }

    pub fn sns(&self) -> &aws_sdk_sns::Client {
        self.sns.get_or_init(|| aws_sdk_sns::Client::new(&self.sdk))
    }
    pub fn secrets(&self) -> &aws_sdk_secretsmanager::Client {
        self.secrets.get_or_init(|| aws_sdk_secretsmanager::Client::new(&self.sdk))
    }

    pub fn ses(&self) -> &aws_sdk_sesv2::Client {
        self.ses.get_or_init(|| aws_sdk_sesv2::Client::new(&self.sdk))
    }

    /// Uses this DynamoDB client instead of one built from the SDK configuration (measurements
    /// count requests with an interceptor on it).
    pub fn with_dynamodb(self, client: aws_sdk_dynamodb::Client) -> Self {
        let _ = self.dynamodb.set(client);
        self
    }

    /// The DynamoDB table, through its item-level API.
    pub fn store(&self) -> Store<'_> {
        Store::new(self.dynamodb(), &self.config.table_name)
    }

    /// The warm instance's one value of type `T` (a cache an integration keeps between requests),
    /// made on first use. The context knows nothing of its users: each brings its own type.
    pub fn kept<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut kept = self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let value = kept.entry(TypeId::of::<T>()).or_insert_with(|| Arc::new(T::default())).clone();
        value.downcast::<T>().expect("kept values are stored under their own type")
    }

    /// An SSRF-guarded HTTP client for URLs that came from outside, under this stage's rules.
    /// Built once per host list and reused by the warm instance (a client holds TLS setup and a
    /// connection pool; building one per request would redo both).
    pub fn outbound(
        &self,
        allowed_hosts: Option<Vec<String>>,
    ) -> Result<OutboundClient, crate::support::outbound::OutboundError> {
        self.outbound_client(allowed_hosts, OutboundPolicy::default().max_redirects)
    }

    /// The client of webhook deliveries: any public host, and redirects are not followed (a 3xx
    /// is the receiver's answer; following it would turn our POST into someone else's GET).
    pub fn webhook_client(&self) -> Result<OutboundClient, crate::support::outbound::OutboundError> {
        self.outbound_client(None, 0)
    }

    fn outbound_client(
        &self,
        allowed_hosts: Option<Vec<String>>,
        max_redirects: usize,
    ) -> Result<OutboundClient, crate::support::outbound::OutboundError> {
        let mut clients = self.outbound.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (allowed_hosts, max_redirects);
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = OutboundClient::new(OutboundPolicy {
            allow_plain_http: self.config.stage == crate::support::config::Stage::Local,
            allow_loopback: self.config.outbound_allow_loopback,
            allowed_hosts: key.0.clone(),
            max_redirects,
            ..OutboundPolicy::default()
        })?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// A map that keeps at most `capacity` entries, dropping the least recently used.
struct LruCache<K, V> {
    entries: HashMap<K, (V, u64)>,
    clock: u64,
    capacity: usize,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> LruCache<K, V> {
    fn new(capacity: usize) -> Self {
        Self { entries: Default::default(), clock: 0, capacity: capacity.max(1) }
    }

    fn get(&mut self, key: &K) -> Option<V> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(value, used)| {
            *used = clock;
            value.clone()
        })
    }

    fn insert(&mut self, key: K, value: V) {
        if self.entries.len() >= self.capacity
            && !self.entries.contains_key(&key)
            && let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
        self.clock += 1;
        self.entries.insert(key, (value, self.clock));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Unix time in seconds. Production reads the system clock; tests move it forward to reach expiry.
#[derive(Default)]
pub struct Clock {
    offset: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> i64 {
        let system =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        system + self.offset.load(Ordering::Relaxed)
    }

    /// Moves this context's time forward (tests only: expiry and rate-limit windows).
    pub fn advance(&self, seconds: i64) {
        self.offset.fetch_add(seconds, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::LruCache;

    #[test]
    fn the_cache_keeps_its_capacity_and_drops_the_least_recently_used() {
        let mut cache = LruCache::new(2);
        cache.insert("a", 1);
        cache.insert("b", 2);
        assert_eq!(cache.get(&"a"), Some(1), "a is now the most recently used");
        cache.insert("c", 3);
        assert_eq!((cache.len(), cache.get(&"b")), (2, None), "b, the least recently used, went");
        assert_eq!((cache.get(&"a"), cache.get(&"c")), (Some(1), Some(3)));
        cache.insert("c", 4);
        assert_eq!((cache.len(), cache.get(&"c")), (2, Some(4)), "replacing a key evicts nothing");
        for i in 0..1000 {
            cache.insert(if i % 2 == 0 { "x" } else { "y" }, i);
        }
        assert_eq!(cache.len(), 2);
    }
}
