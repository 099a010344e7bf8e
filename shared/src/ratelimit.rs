//! Rate limits shared by every Lambda instance: fixed-window counters in DynamoDB, one atomic
//! `ADD` per request. Over the limit, the caller gets 429 with `Retry-After` (seconds to the next window).

use crate::store::{n, s};
use crate::{ApiError, Context};

/// A limit: at most `limit` requests per `window_secs` for one key (client IP or client id).
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub name: &'static str,
    pub limit: i64,
    pub window_secs: i64,
}

/// Counts this request against `rule` for `key`, refusing it when the window is full.
pub async fn check(ctx: &Context, rule: Rule, key: &str) -> Result<(), ApiError> {
    let now = ctx.clock.now();
    let window_start = now - now.rem_euclid(rule.window_secs);
    let window_end = window_start + rule.window_secs;
    let out = ctx
        .dynamodb()
        .update_item()
        .table_name(&ctx.config.table_name)
        .key("pk", s(format!("RATE#{}#{key}", rule.name)))
        .key("sk", s(format!("W#{window_start}")))
        .update_expression("ADD hits :one SET expires_at = :exp")
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":exp", n(window_end + 60))
        .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
        .send()
        .await
        .map_err(|e| ApiError::unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
    let hits = out
        .attributes
        .as_ref()
        .and_then(|a| a.get("hits"))
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    if hits > rule.limit {
        tracing::warn!(rule = rule.name, "rate limit exceeded");
        return Err(ApiError::too_many_requests((window_end - now) as u64));
    }
    Ok(())
}
