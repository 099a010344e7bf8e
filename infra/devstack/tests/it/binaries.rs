//! Every function binary, run as Lambda runs it (local Runtime API), answers its sample event.

use std::time::Duration;

use devstack::runtime_api::{FunctionProcess, Outcome};
use serde_json::Value;

use crate::common::TestStack;

pub fn binary_path(name: &str) -> std::path::PathBuf {
    let target =
        std::env::var("CARGO_TARGET_DIR").map(Into::into).unwrap_or_else(|_| devstack::repo_root().join("target"));
    target.join("debug").join(name)
}

#[tokio::test]
async fn every_function_binary_answers_its_sample_event() {
    let t = TestStack::new("binaries").await;
    for def in t.template.functions().unwrap() {
        let path = binary_path(&def.binary);
        assert!(
            path.exists(),
            "{} is not built: run `make test`, which builds the function binaries first",
            path.display()
        );
        let event =
            std::fs::read_to_string(devstack::repo_root().join("events").join(format!("{}.json", def.binary))).unwrap();
        let process = FunctionProcess::spawn(&path, &def.binary, &t.env(&def.binary)).await.unwrap();
        process.api.wait_ready(Duration::from_secs(10)).await.unwrap();
        let outcome = process.api.invoke(&event, Duration::from_secs(20)).await.unwrap();
        if !def.rotations.is_empty() {
            // The sample names another stack's secret: a rotation function refuses any secret but its own.
            let Outcome::Error(error) = outcome else { panic!("{} rotated a secret not its own", def.binary) };
            assert!(error.contains("rotates only"), "{}: {error}", def.binary);
            continue;
        }
        let Outcome::Response(body) = outcome else {
            panic!("{} returned an invocation error: {outcome:?}", def.binary)
        };
        let response: Value = serde_json::from_str(&body).unwrap();
        if !def.queues.is_empty() {
            // A batch response (failures, if any, are retried by SQS): not an invocation error.
            assert!(response["batchItemFailures"].is_array(), "{}: {body}", def.binary);
            continue;
        }
        if !def.schedules.is_empty() {
            // The run's summary.
            assert!(response.is_object(), "{}: {body}", def.binary);
            continue;
        }
        let status =
            response["statusCode"].as_u64().unwrap_or_else(|| panic!("{}: not an HTTP response: {body}", def.binary));
        assert!(status < 500, "{} answered {status}: {body}", def.binary);
        if status >= 400 {
            // Sample events carry placeholder tokens and codes: a clean refusal is the expected answer,
            // JSON from the API, an error page (with its code) from the HTML pages.
            let text = response["body"].as_str().unwrap();
            let html = response["headers"]["content-type"].as_str().is_some_and(|c| c.starts_with("text/html"));
            if html {
                assert!(text.contains("role=\"alert\" data-error=\""), "{}: {body}", def.binary);
            } else {
                // Our `{error, message}`, or RFC 6749's `{error, error_description}` from the OAuth endpoints.
                let error: Value = serde_json::from_str(text).unwrap();
                let described = error["message"].is_string() || error["error_description"].is_string();
                assert!(error["error"].is_string() && described, "{}: {body}", def.binary);
            }
        }
    }
}

#[tokio::test]
async fn a_function_without_its_configuration_fails_its_init() {
    let path = binary_path("health");
    assert!(path.exists(), "run `make test`");
    let mut env = std::collections::BTreeMap::new();
    env.insert("TABLE_NAME".to_string(), "t".to_string());
    let mut process = FunctionProcess::spawn(&path, "health", &env).await.unwrap();
    let status = process.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(!status.success(), "a misconfigured function must not start serving");
    assert!(process.api.wait_ready(Duration::from_millis(100)).await.is_err(), "it never asked for work");
}

#[tokio::test]
async fn logs_are_json_lines_with_ids_and_never_a_token_or_key() {
    let t = TestStack::new("logs").await;
    let (user, pair) = t.signed_in("kim@example.com", hub::domain::auth::Role::Student).await;
    let mut event: Value =
        serde_json::from_str(&std::fs::read_to_string(devstack::repo_root().join("events/auth-refresh.json")).unwrap())
            .unwrap();
    event["body"] = Value::String(serde_json::json!({ "refresh_token": pair.refresh_token }).to_string());
    let process =
        FunctionProcess::spawn(&binary_path("auth-refresh"), "auth-refresh", &t.env("auth-refresh")).await.unwrap();
    process.api.wait_ready(Duration::from_secs(10)).await.unwrap();
    let Outcome::Response(body) = process.api.invoke(&event.to_string(), Duration::from_secs(20)).await.unwrap() else {
        panic!("invocation error")
    };
    let response: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(response["statusCode"], 200, "{body}");
    let issued: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = process.logs().await;

    let lines: Vec<Value> =
        logs.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    let request_line = lines.iter().find(|l| l["message"] == "request").expect("one line per request");
    assert_eq!(request_line["status"], 200);
    // The request span's fields (function, request id) ride along on every line of the request.
    assert_eq!(request_line["span"]["function"], "auth-refresh", "{logs}");
    assert_eq!(request_line["span"]["request_id"].as_str().map(|r| r.starts_with("local-")), Some(true), "{logs}");
    assert!(lines.iter().any(|l| l["user_id"] == user.id.as_str()), "{logs}");
    let (_, access_key) = t.key("AccessTokenKey").await;
    let (_, refresh_key) = t.key("RefreshTokenKey").await;
    for secret in [
        pair.refresh_token.as_str(),
        issued["access_token"].as_str().unwrap(),
        issued["refresh_token"].as_str().unwrap(),
        access_key.as_str(),
        refresh_key.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}
