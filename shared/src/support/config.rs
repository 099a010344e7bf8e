//! Typed configuration, read once per cold start from the environment that template.yaml sets.

use std::time::Duration;

/// Where the code runs. Only `Local` may relax outbound rules (plain http, loopback targets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Local,
    Prod,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub stage: Stage,
    /// DynamoDB table holding identity, sessions, codes and counters (see `store`).
    pub table_name: String,
    /// S3 bucket for evidence files.
    pub evidence_bucket: String,
    /// SQS queue that carries domain events.
    pub events_queue_url: String,
    /// Secrets Manager ids of the HS256 keys; rotation keeps the previous version valid.
    pub access_key_secret_id: String,
    pub refresh_key_secret_id: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// Lets the outbound HTTP client reach loopback addresses; honoured only in the local stage.
    pub outbound_allow_loopback: bool,
    /// Where browser flows (SSO) land: `<frontend>/auth/callback?code=...`. Without it they answer JSON.
    pub frontend_url: Option<String>,
    /// Spark LMS: the shared HS256 secret of its SSO tokens, and the organization its users join.
    pub spark_sso_secret_id: Option<String>,
    pub spark_organization_id: Option<String>,
    /// Spark LMS: the HMAC secret of its submission webhooks, and the hosts its file URLs may name.
    pub spark_webhook_secret_id: Option<String>,
    pub spark_storage_domains: Vec<String>,
    /// Grade passback: the queue of jobs, Spark's API and its key, and the first retry delay.
    pub grade_passback_queue_url: Option<String>,
    pub spark_api_url: Option<String>,
    pub spark_api_key_secret_id: Option<String>,
    pub passback_retry_base: Duration,
    /// Submissions accepted from Spark per minute.
    pub spark_webhook_rate_limit: i64,
    /// The queue of Spark submissions whose files the submission worker fetches.
    pub submission_queue_url: Option<String>,
    /// The queue of LTI roster syncs (the roster-sync request queues, the worker reads).
    pub lti_roster_queue_url: Option<String>,
    /// Outbound webhooks: the queue of delivery jobs and its dead-letter queue (exhausted jobs).
    pub webhook_delivery_queue_url: Option<String>,
    pub webhook_dead_letter_queue_url: Option<String>,
    /// The key that encrypts subscription signing secrets at rest.
    pub webhook_sealing_key_secret_id: Option<String>,
    /// Delays before each automatic retry of a failed delivery (then the delivery fails).
    pub webhook_retry_schedule: Vec<Duration>,
    /// A subscription whose deliveries all failed for this long is disabled.
    pub webhook_disable_after: Duration,
    /// Delivery records expire after this long.
    pub webhook_delivery_retention: Duration,
    /// Clever: how to reach its API, and the sync's own rules.
    pub clever: CleverSettings,
    pub clever_sync: CleverSyncSettings,
    /// Name prefix of the districts' credential secrets (`<stack>/clever/districts/`).
    pub clever_secret_prefix: Option<String>,
    /// The queue of per-school sync jobs.
    pub clever_sync_queue_url: Option<String>,
    /// The SNS topic that receives a summary of every school sync (admins subscribe their email).
    pub clever_sync_summary_topic_arn: Option<String>,
    /// Email (SES): the sender address, the queue of emails to send, and the public address of the
    /// hub that links in emails point to.
    pub email_sender: Option<String>,
    pub email_queue_url: Option<String>,
    pub public_base_url: Option<String>,
    /// The seed of the OAuth access-token signing key (Ed25519), rotated in Secrets Manager.
    pub oauth_signing_key_secret_id: Option<String>,
    /// The LTI tool's RSA key (a PKCS#8 PEM, rotated by `lti-key-rotate`).
    pub lti_tool_key_secret_id: Option<String>,
}

/// Rules of a Clever school sync.
#[derive(Clone, Debug)]
pub struct CleverSyncSettings {
    /// A full sync deletes at most this share of a school's records of one kind unless forced.
    pub shrink_guard: f64,
    /// Sync history records expire after this long.
    pub history_retention: Duration,
    /// First backoff of throttled roster writes (then doubled, jittered, at most 20 s).
    pub write_retry_base: Duration,
    /// How long one sync may wait on DynamoDB throttling in all before it fails.
    pub write_throttle_budget: Duration,
    /// How long `/health/clever-auth` serves a report before refreshing it.
    pub health_cache: Duration,
    /// Time per check of a cold instance's first health report (keeps the answer under 100 ms).
    pub health_first_budget: Duration,
    /// Events per page of an incremental sync: memory holds one page (events of real users are several
    /// KB each, with their previous attributes).
    pub events_page_size: usize,
    /// How long a baseline stays usable without being confirmed again: Clever keeps events 30 days.
    pub events_retention: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing environment variable {0}")]
    Missing(&'static str),
    #[error("environment variable {0} has an invalid value")]
    Invalid(&'static str),
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration from any variable source (the dev gateway passes each function's
    /// template environment this way).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |k: &'static str| get(k).filter(|v| !v.is_empty()).ok_or(ConfigError::Missing(k));
        let seconds = |k: &'static str, default: u64| -> Result<Duration, ConfigError> {
            match get(k) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => v.parse().map(Duration::from_secs).map_err(|_| ConfigError::Invalid(k)),
            }
        };
        let optional = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let stage = match get("STAGE").as_deref() {
            Some("local") => Stage::Local,
            Some("prod") | None => Stage::Prod,
            Some(_) => return Err(ConfigError::Invalid("STAGE")),
        };
        Ok(Self {
            stage,
            table_name: required("TABLE_NAME")?,
            evidence_bucket: required("EVIDENCE_BUCKET")?,
            events_queue_url: required("EVENTS_QUEUE_URL")?,
            access_key_secret_id: required("ACCESS_TOKEN_SECRET_ID")?,
            refresh_key_secret_id: required("REFRESH_TOKEN_SECRET_ID")?,
            access_token_ttl: seconds("ACCESS_TOKEN_TTL_SECONDS", 15 * 60)?,
            refresh_token_ttl: seconds("REFRESH_TOKEN_TTL_SECONDS", 30 * 24 * 3600)?,
            outbound_allow_loopback: stage == Stage::Local && get("OUTBOUND_ALLOW_LOOPBACK").as_deref() == Some("true"),
            frontend_url: optional("FRONTEND_URL").map(|u| u.trim_end_matches('/').to_string()),
            spark_sso_secret_id: optional("SPARK_SSO_SECRET_ID"),
            spark_organization_id: optional("SPARK_ORGANIZATION_ID"),
            spark_webhook_secret_id: optional("SPARK_WEBHOOK_SECRET_ID"),
            grade_passback_queue_url: optional("GRADE_PASSBACK_QUEUE_URL"),
            spark_api_url: optional("SPARK_API_URL").map(|u| u.trim_end_matches('/').to_string()),
            spark_api_key_secret_id: optional("SPARK_API_KEY_SECRET_ID"),
            passback_retry_base: seconds("PASSBACK_RETRY_BASE_SECONDS", 30)?,
            spark_webhook_rate_limit: match optional("SPARK_WEBHOOK_RATE_LIMIT") {
                Some(v) => v.parse().map_err(|_| ConfigError::Invalid("SPARK_WEBHOOK_RATE_LIMIT"))?,
                None => 100,
            },
            submission_queue_url: optional("SUBMISSION_QUEUE_URL"),
            lti_roster_queue_url: optional("LTI_ROSTER_QUEUE_URL"),
            webhook_delivery_queue_url: optional("WEBHOOK_DELIVERY_QUEUE_URL"),
            webhook_dead_letter_queue_url: optional("WEBHOOK_DEAD_LETTER_QUEUE_URL"),
            webhook_sealing_key_secret_id: optional("WEBHOOK_SEALING_KEY_SECRET_ID"),
            webhook_retry_schedule: match optional("WEBHOOK_RETRY_SCHEDULE_SECONDS") {
                Some(v) => parse_schedule(&v).ok_or(ConfigError::Invalid("WEBHOOK_RETRY_SCHEDULE_SECONDS"))?,
                None => [60, 120, 240, 480, 960].map(Duration::from_secs).to_vec(),
            },
            webhook_disable_after: seconds("WEBHOOK_DISABLE_AFTER_SECONDS", 5 * 24 * 3600)?,
            webhook_delivery_retention: seconds("WEBHOOK_DELIVERY_RETENTION_SECONDS", 30 * 24 * 3600)?,
            clever: {
                let defaults = CleverSettings::default();
                CleverSettings {
                    oauth_url: optional("CLEVER_OAUTH_URL").unwrap_or(defaults.oauth_url),
                    api_url: optional("CLEVER_API_URL")
                        .map(|u| u.trim_end_matches('/').to_string())
                        .unwrap_or(defaults.api_url),
                    page_size: number(&optional, "CLEVER_PAGE_SIZE", 10_000)?.clamp(1, 10_000) as usize,
                    retry_base: Duration::from_millis(number(&optional, "CLEVER_RETRY_BASE_MS", 2_000)?),
                    max_retries: number(&optional, "CLEVER_MAX_RETRIES", 5)? as u32,
                    refresh_at: fraction(&optional, "CLEVER_TOKEN_REFRESH_AT", 0.75)?,
                    timeout: seconds("CLEVER_TIMEOUT_SECONDS", 30)?,
                    ..defaults
                }
            },
            clever_sync: CleverSyncSettings {
                shrink_guard: fraction(&optional, "CLEVER_SHRINK_GUARD", 0.5)?,
                history_retention: seconds("CLEVER_HISTORY_RETENTION_SECONDS", 90 * 24 * 3600)?,
                write_retry_base: Duration::from_millis(number(&optional, "CLEVER_WRITE_RETRY_BASE_MS", 1_000)?),
                write_throttle_budget: seconds("CLEVER_WRITE_THROTTLE_BUDGET_SECONDS", 600)?,
                health_cache: seconds("CLEVER_HEALTH_CACHE_SECONDS", 30)?,
                health_first_budget: Duration::from_millis(number(&optional, "CLEVER_HEALTH_FIRST_BUDGET_MS", 80)?),
                events_page_size: number(&optional, "CLEVER_EVENTS_PAGE_SIZE", 1_000)?.clamp(1, 10_000) as usize,
                // A day of margin on Clever's 30.
                events_retention: seconds("CLEVER_EVENTS_RETENTION_SECONDS", 29 * 24 * 3600)?,
            },
            clever_secret_prefix: optional("CLEVER_SECRET_PREFIX"),
            clever_sync_queue_url: optional("CLEVER_SYNC_QUEUE_URL"),
            clever_sync_summary_topic_arn: optional("CLEVER_SYNC_SUMMARY_TOPIC_ARN"),
            email_sender: optional("EMAIL_SENDER"),
            email_queue_url: optional("EMAIL_QUEUE_URL"),
            public_base_url: optional("PUBLIC_BASE_URL").map(|u| u.trim_end_matches('/').to_string()),
            oauth_signing_key_secret_id: optional("OAUTH_SIGNING_KEY_SECRET_ID"),
            lti_tool_key_secret_id: optional("LTI_TOOL_KEY_SECRET_ID"),
            spark_storage_domains: optional("SPARK_STORAGE_DOMAINS")
                .map(|d| d.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect())
                .unwrap_or_default(),
        })
    }
}

/// A non-negative integer variable, or its default.
fn number(optional: &impl Fn(&str) -> Option<String>, key: &'static str, default: u64) -> Result<u64, ConfigError> {
    optional(key).map_or(Ok(default), |v| v.trim().parse().map_err(|_| ConfigError::Invalid(key)))
}

/// A share between 0 and 1, or its default.
fn fraction(optional: &impl Fn(&str) -> Option<String>, key: &'static str, default: f64) -> Result<f64, ConfigError> {
    match optional(key) {
        None => Ok(default),
        Some(v) => v.trim().parse::<f64>().ok().filter(|f| (0.0..=1.0).contains(f)).ok_or(ConfigError::Invalid(key)),
    }
}

/// A comma-separated list of delays in seconds (`60,120,240`); empty means no retries. Each delay
/// must fit an SQS visibility timeout (12 hours).
fn parse_schedule(value: &str) -> Option<Vec<Duration>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<u64>().ok().filter(|s| *s <= 12 * 3600).map(Duration::from_secs))
        .collect()
}

/// How the client talks to Clever (from the function's configuration).
#[derive(Clone, Debug)]
pub struct CleverSettings {
    /// Clever's token endpoint, `https://clever.com/oauth/tokens`.
    pub oauth_url: String,
    /// The API's origin, `https://api.clever.com`.
    pub api_url: String,
    /// `limit` of every list request (Clever allows up to 10,000).
    pub page_size: usize,
    /// First backoff step for 5xx and network errors (2 s: then 4, 8, 16, 32).
    pub retry_base: Duration,
    pub max_retries: u32,
    /// Share of a token's announced lifetime after which it is replaced.
    pub refresh_at: f64,
    /// Per request.
    pub timeout: Duration,
    /// Longest wait for a rate-limit reset before the request counts as failed.
    pub max_rate_limit_wait: Duration,
}

impl Default for CleverSettings {
    fn default() -> Self {
        Self {
            oauth_url: "https://clever.com/oauth/tokens".into(),
            api_url: "https://api.clever.com".into(),
            page_size: 10_000,
            retry_base: Duration::from_secs(2),
            max_retries: 5,
            refresh_at: 0.75,
            timeout: Duration::from_secs(30),
            max_rate_limit_wait: Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = [
            ("TABLE_NAME", "t"),
            ("EVIDENCE_BUCKET", "b"),
            ("EVENTS_QUEUE_URL", "q"),
            ("ACCESS_TOKEN_SECRET_ID", "a"),
            ("REFRESH_TOKEN_SECRET_ID", "r"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    #[test]
    fn defaults_to_prod_and_never_allows_loopback_there() {
        let m = vars(&[("OUTBOUND_ALLOW_LOOPBACK", "true")]);
        let c = Config::from_lookup(|k| m.get(k).cloned()).unwrap();
        assert_eq!(c.stage, Stage::Prod);
        assert!(!c.outbound_allow_loopback);
        assert_eq!(c.access_token_ttl, Duration::from_secs(900));
    }

    #[test]
    fn local_stage_may_allow_loopback() {
        let m = vars(&[("STAGE", "local"), ("OUTBOUND_ALLOW_LOOPBACK", "true")]);
        let c = Config::from_lookup(|k| m.get(k).cloned()).unwrap();
        assert!(c.outbound_allow_loopback);
    }

    #[test]
    fn missing_and_invalid_values_are_named() {
        let mut m = vars(&[]);
        m.remove("TABLE_NAME");
        let err = Config::from_lookup(|k| m.get(k).cloned()).unwrap_err();
        assert_eq!(err.to_string(), "missing environment variable TABLE_NAME");
        let m = vars(&[("ACCESS_TOKEN_TTL_SECONDS", "soon")]);
        assert!(matches!(Config::from_lookup(|k| m.get(k).cloned()), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn webhook_retry_schedule_defaults_to_doubling_minutes_and_is_configurable() {
        let c = Config::from_lookup(|k| vars(&[]).get(k).cloned()).unwrap();
        assert_eq!(
            c.webhook_retry_schedule.iter().map(Duration::as_secs).collect::<Vec<_>>(),
            [60, 120, 240, 480, 960]
        );
        let m = vars(&[("WEBHOOK_RETRY_SCHEDULE_SECONDS", "1, 2,3")]);
        let c = Config::from_lookup(|k| m.get(k).cloned()).unwrap();
        assert_eq!(c.webhook_retry_schedule, [1, 2, 3].map(Duration::from_secs));
        for bad in ["1,x", "-1", "50000"] {
            let m = vars(&[("WEBHOOK_RETRY_SCHEDULE_SECONDS", bad)]);
            assert!(Config::from_lookup(|k| m.get(k).cloned()).is_err(), "{bad}");
        }
    }
}
