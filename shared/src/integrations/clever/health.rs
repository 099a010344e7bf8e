//! `GET /health/clever-auth`: can we read the districts' credentials, and does Clever give each
//! district a token? Answered from a report cached in the warm instance: a report older than
//! `CLEVER_HEALTH_CACHE_SECONDS` (30) is refreshed in the background (bounded by [`REFRESH_BUDGET`])
//! while the cached one answers, so an answer never waits for Secrets Manager or Clever. A cold
//! instance builds its first report with `CLEVER_HEALTH_FIRST_BUDGET_MS` (80 ms) per check; a check
//! without an answer by then reports `unavailable` (Degraded) and the report is marked `provisional`:
//! the next request is answered with it and starts a refresh at once. Nothing is checked at start-up, so the function starts, and answers Degraded, while
//! Secrets Manager or Clever is down.
//!
//! Status: `Healthy` when every check passes; `Unhealthy` (HTTP 503) when Clever refuses every
//! district's credentials; `Degraded` otherwise (a dependency down or slow, some districts failing).
//! Each check asks Clever for a token anew: a warm instance's held token would hide credentials
//! revoked since it was fetched.
//!
//! [`probe`] runs the same checks on a schedule (`clever-health-probe`, every 5 minutes) and emits
//! them as metrics, so an alarm fires on `Unhealthy` whether or not anyone calls the endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::client::CleverError;
use super::districts::{self, SetupError};
use crate::Context;

/// Time allowed per check in a background refresh.
pub const REFRESH_BUDGET: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct HealthCache {
    report: Mutex<Option<(Arc<Value>, Instant)>>,
    refreshing: AtomicBool,
}

/// The current report and its HTTP status.
pub async fn report(ctx: Arc<Context>) -> (Arc<Value>, u16) {
    let cache = ctx.kept::<HealthCache>();
    let cached = cache.report.lock().await.clone();
    let report = match cached {
        Some((report, at)) => {
            if at.elapsed() >= ctx.config.clever_sync.health_cache && !cache.refreshing.swap(true, Ordering::AcqRel) {
                let (ctx, cache) = (ctx.clone(), cache.clone());
                tokio::spawn(async move {
                    let fresh = Arc::new(check(&ctx, REFRESH_BUDGET).await);
                    *cache.report.lock().await = Some((fresh, Instant::now()));
                    cache.refreshing.store(false, Ordering::Release);
                });
            }
            report
        }
        None => {
            let fresh = Arc::new(check(&ctx, ctx.config.clever_sync.health_first_budget).await);
            // A report with checks cut short by the budget is provisional: served now, refreshed at once.
            let lifetime = ctx.config.clever_sync.health_cache;
            let at = if fresh["provisional"] == true {
                Instant::now().checked_sub(lifetime).unwrap_or_else(Instant::now)
            } else {
                Instant::now()
            };
            *cache.report.lock().await = Some((fresh.clone(), at));
            fresh
        }
    };
    let status = if report["status"] == "Unhealthy" { 503 } else { 200 };
    (report, status)
}

/// The scheduled probe: the checks, as metrics (`HealthUnhealthy`, `HealthDegraded`,
/// `DistrictsRefused`) and as its result (the status and counts only).
pub async fn probe(ctx: Arc<Context>, _event: Value) -> Result<Value, crate::ApiError> {
    let report = check(&ctx, REFRESH_BUDGET).await;
    let status = report["status"].as_str().unwrap_or("Degraded").to_string();
    let districts = report["checks"]["districts"].as_array().cloned().unwrap_or_default();
    let refused = districts.iter().filter(|c| c["token"] == "refused").count();
    super::metrics::health_probed(&status, refused);
    Ok(json!({"status": status, "districts": districts.len(), "districts_refused": refused}))
}

async fn check(ctx: &Context, budget: Duration) -> Value {
    let started = Instant::now();
    // Set when a check runs out of budget: such a report is provisional.
    let cut_short = AtomicBool::new(false);
    let timed = |what: &str| {
        cut_short.store(true, Ordering::Relaxed);
        format!("no answer within {} ms ({what})", budget.as_millis())
    };
    let districts = match tokio::time::timeout(budget, ctx.store().clever_districts()).await {
        Ok(Ok(districts)) => districts,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Clever health: districts unreadable");
            return degraded(json!({"dynamodb": {"status": "down", "error": "unavailable"}}));
        }
        Err(_) => return degraded(json!({"dynamodb": {"status": "down", "error": timed("districts")}})),
    };
    let secrets = match districts.first() {
        None => json!({"status": "up", "note": "no district registered"}),
        Some(d) => {
            match tokio::time::timeout(budget, ctx.secrets().describe_secret().secret_id(&d.secret_id).send()).await {
                Ok(Ok(_)) => json!({"status": "up"}),
                Ok(Err(e)) => {
                    let code = e
                        .as_service_error()
                        .and_then(|s| aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(s))
                        .unwrap_or("unreachable");
                    json!({"status": "down", "error": code})
                }
                Err(_) => json!({"status": "down", "error": timed("secrets manager")}),
            }
        }
    };
    let checks = futures_util::future::join_all(districts.iter().map(|district| async move {
        let outcome = tokio::time::timeout(budget, async {
            let client = districts::client(ctx, district).await?;
            client.verify_credentials().await.map_err(SetupError::from)
        })
        .await;
        let (token, error) = match outcome {
            Ok(Ok(())) => ("valid", None),
            Ok(Err(SetupError::Clever(CleverError::Unauthorized(_)))) => {
                ("refused", Some("Clever refused the credentials".to_string()))
            }
            Ok(Err(e)) => ("unavailable", Some(e.to_string())),
            Err(_) => ("unavailable", Some(timed("token"))),
        };
        json!({"district_id": district.id, "token": token, "error": error})
    }))
    .await;
    let refused = checks.iter().filter(|c| c["token"] == "refused").count();
    let all_valid = checks.iter().all(|c| c["token"] == "valid");
    let status = if !districts.is_empty() && refused == districts.len() {
        "Unhealthy"
    } else if all_valid && secrets["status"] == "up" {
        "Healthy"
    } else {
        "Degraded"
    };
    if status != "Healthy" {
        tracing::warn!(status, "Clever health degraded");
    }
    json!({
        "status": status,
        "checked_at": ctx.clock.now(),
        "check_ms": started.elapsed().as_millis() as u64,
        "provisional": cut_short.load(Ordering::Relaxed),
        "checks": {"dynamodb": {"status": "up"}, "secrets_manager": secrets, "districts": checks},
    })
}

/// The shape of a Clever health report (documentation: the report itself is built as JSON).
/// Anonymous callers see `checks` as codes and counts; platform admins see each district.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CleverHealth {
    /// `Healthy`, `Degraded` or `Unhealthy`.
    status: String,
    checked_at: Option<i64>,
    /// Some checks ran out of time: served now, refreshed at once.
    provisional: Option<bool>,
    checks: Value,
}

/// What an anonymous caller sees: the status and each check's code, counts of districts by token
/// state; no district ids and no error texts (those stay in the log and the admin view).
pub fn public_view(report: &Value) -> Value {
    let checks = &report["checks"];
    let code = |check: &Value| check["status"].as_str().unwrap_or("unknown").to_string();
    let districts = checks["districts"].as_array().map(Vec::as_slice).unwrap_or_default();
    let count = |state: &str| districts.iter().filter(|d| d["token"] == state).count();
    json!({
        "status": report["status"],
        "checked_at": report["checked_at"],
        "provisional": report["provisional"],
        "checks": {
            "dynamodb": code(&checks["dynamodb"]),
            "secrets_manager": if checks["secrets_manager"].is_null() { "unknown".into() } else { code(&checks["secrets_manager"]) },
            "districts": {"valid": count("valid"), "refused": count("refused"), "unavailable": count("unavailable")},
        },
    })
}

fn degraded(checks: Value) -> Value {
    tracing::warn!("Clever health degraded: district registry unavailable");
    json!({"status": "Degraded", "provisional": false, "checks": checks})
}
