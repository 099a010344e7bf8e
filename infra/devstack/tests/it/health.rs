//! `GET /health` reports each dependency.

use std::sync::Arc;

use serde_json::Value;

use crate::common::TestStack;

#[tokio::test]
async fn healthy_stack_reports_every_dependency_up() {
    let t = TestStack::new("health").await;
    let r = t.http.get(t.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "healthy");
    for dep in ["dynamodb", "s3", "sqs", "secretsmanager"] {
        assert_eq!(body["checks"][dep]["status"], "up", "{dep}: {body}");
        assert!(body["checks"][dep]["latency_ms"].is_u64());
    }
}

#[tokio::test]
async fn a_missing_dependency_makes_the_stack_unhealthy_and_says_which() {
    let t = TestStack::new("unhealthy").await;
    let ctx = Arc::new(t.context_with("EVIDENCE_BUCKET", "no-such-bucket-anywhere"));
    let response = hub::api::health::health(ctx, lambda_http::Request::default()).await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["checks"]["s3"]["status"], "down");
    assert!(body["checks"]["s3"]["error"].is_string(), "{body}");
    assert_eq!(body["checks"]["dynamodb"]["status"], "up");
}
