//! The shared fixed-window rate limiter, through HTTP and across instances.

use hub::runtime::ratelimit::{Rule, check};
use serde_json::json;

use crate::common::{TestStack, error_code};

#[tokio::test]
async fn refresh_is_limited_per_client_with_retry_after() {
    let t = TestStack::new("ratelimit").await;
    // 30 per minute per client IP: the first 30 get through to token checking (401), the 31st is refused.
    for i in 0..30 {
        let r = t.http.post(t.url("/api/auth/refresh")).json(&json!({"refresh_token": "x"})).send().await.unwrap();
        assert_eq!(r.status(), 401, "request {i}");
    }
    let r = t.http.post(t.url("/api/auth/refresh")).json(&json!({"refresh_token": "x"})).send().await.unwrap();
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(error_code(r).await, (429, "rate_limited".into()));
}

#[tokio::test]
async fn counters_are_shared_between_instances_and_reset_with_the_window() {
    let t = TestStack::new("ratewindow").await;
    let rule = Rule { name: "test", limit: 3, window_secs: 60 };
    let (a, b) = (t.new_context(), t.new_context());
    check(&a, rule, "client-1").await.unwrap();
    check(&b, rule, "client-1").await.unwrap();
    check(&a, rule, "client-1").await.unwrap();
    let refused = check(&b, rule, "client-1").await.unwrap_err();
    assert_eq!(refused.status.as_u16(), 429);
    // Other keys have their own budget.
    check(&a, rule, "client-2").await.unwrap();
    // The next window starts afresh.
    b.clock.advance(60);
    check(&b, rule, "client-1").await.unwrap();
}
