//! Rate limits shared by every Lambda instance: fixed-window counters in DynamoDB, one atomic
//! `ADD` per request. Over the limit, the caller gets 429 with `Retry-After` (seconds to the next window).

use crate::{ApiError, Context};

/// A limit: at most `limit` requests per `window_secs` for one key (client IP or client id).
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub name: &'static str,
    pub limit: i64,
    pub window_secs: i64,
}

/// Counts a refused request (a bad signature, an invalid token or code) against `rule` for `key`
/// (the source address), and answers `refusal`, or 429 once that address has failed too often.
/// Genuine requests are never counted here, so garbage from one address cannot lock others out.
pub async fn count_failure(ctx: &Context, rule: Rule, key: &str, refusal: ApiError) -> ApiError {
    match check(ctx, rule, key).await {
        Ok(()) => refusal,
        Err(limited) => limited,
    }
}

/// Refuses at once (without counting) when `key` has used up `rule` in this window: for traffic
/// limited by its failures, so a flood stops costing work before it is even verified.
pub async fn refuse_if_spent(ctx: &Context, rule: Rule, key: &str) -> Result<(), ApiError> {
    let now = ctx.clock.now();
    let window_start = now - now.rem_euclid(rule.window_secs);
    let hits = ctx.store().window_hits(&format!("RATE#{}#{key}", rule.name), window_start).await?;
    if hits >= rule.limit {
        return Err(ApiError::too_many_requests((window_start + rule.window_secs - now) as u64));
    }
    Ok(())
}

/// Counts this request against `rule` for `key`, refusing it when the window is full.
pub async fn check(ctx: &Context, rule: Rule, key: &str) -> Result<(), ApiError> {
    let now = ctx.clock.now();
    let window_start = now - now.rem_euclid(rule.window_secs);
    let window_end = window_start + rule.window_secs;
    let hits = ctx.store().count_hit(&format!("RATE#{}#{key}", rule.name), window_start, window_end + 60).await?;
    if hits > rule.limit {
        tracing::warn!(rule = rule.name, "rate limit exceeded");
        return Err(ApiError::too_many_requests((window_end - now) as u64));
    }
    Ok(())
}
