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
