//! The dev gateway behaves like API Gateway HTTP API where clients can tell.

use std::sync::Arc;

use lambda_http::Service;
use serde_json::Value;

use crate::common::{TestStack, error_code};

#[tokio::test]
async fn unknown_routes_and_methods_get_api_gateway_not_found() {
    let t = TestStack::new("gw404").await;
    for (method, path) in [("GET", "/nope"), ("DELETE", "/api/auth/me"), ("GET", "/api/auth/me/extra")] {
        let r = t.http.request(method.parse().unwrap(), t.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["message"], "Not Found");
    }
}

#[tokio::test]
async fn oversized_requests_are_refused_like_api_gateway() {
    let t = TestStack::new("gw413").await;
    let r = t
        .http
        .post(t.url("/api/auth/refresh"))
        .header("content-type", "application/json")
        .body(vec![b' '; 11 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn a_panicking_handler_becomes_a_json_500() {
    let t = TestStack::new("gwpanic").await;
    let ctx = Arc::new(t.new_context());
    let mut service = hub::entry::http_service(ctx, "panicky", |_, _| Box::pin(async { panic!("boom") }));
    let response = service.call(lambda_http::Request::default()).await.unwrap();
    assert_eq!(response.status(), 500);
    let body: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(body["error"], "internal_error");
    assert!(!body["message"].as_str().unwrap().contains("boom"), "internals leak: {body}");
}

#[tokio::test]
async fn responses_carry_api_gateway_headers_and_the_client_address_reaches_the_function() {
    let t = TestStack::new("gwhdr").await;
    let r = t.http.get(t.url("/api/auth/me")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(error_code(r).await.0, 401);
}
