//! Bad input is never a 5xx: cursors of any bytes, inverted time ranges and identifiers past
//! DynamoDB's key limits are answered 400 or 404 with a JSON error.

use base64::Engine;
use hub::domain::auth::Role;
use serde_json::json;

use crate::common::{TestStack, error_code};

#[tokio::test]
async fn cursors_ranges_and_long_ids_get_clear_errors() {
    let t = TestStack::new("badinput").await;
    let (_, admin) = t.signed_in_as("root@badinput.example", Role::Admin, "platform").await;
    let (_, org_admin) = t.signed_in_as("head@badinput.example", Role::OrgAdmin, "demo").await;
    let get = |path: String, token: String| {
        let request = t.http.get(t.url(&path)).bearer_auth(token);
        async move { error_code(request.send().await.unwrap()).await }
    };
    let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    // A cursor whose 12th byte falls inside a multi-byte character (this panicked a slice before).
    let cursors = [
        b64("a\u{20ac}\u{20ac}\u{20ac}\u{20ac}\nDELIVERY#x"),
        b64("\u{20ac}"),
        "%C3%A9%C3%A9".into(),
        "\u{1F600}".into(),
        b64(&"9".repeat(5000)),
        b64("000000000001#x\nNOT_A_DELIVERY"),
    ];
    for cursor in cursors {
        let path = format!("/api/webhooks/deliveries?cursor={}", urlencode(&cursor));
        assert_eq!(get(path, org_admin.access_token.clone()).await, (400, "invalid_cursor".into()), "{cursor}");
    }
    let inverted = "/api/webhooks/deliveries?since=2000&until=1000".to_string();
    assert_eq!(get(inverted, org_admin.access_token.clone()).await, (400, "invalid_query".into()));
    let inverted = "/api/clever/sync-history?school_id=s1&since=2000&until=1000".to_string();
    assert_eq!(get(inverted, admin.access_token.clone()).await, (400, "invalid_query".into()));

    let long = "x".repeat(3000);
    assert_eq!(
        get(format!("/api/webhooks/subscriptions/{long}"), org_admin.access_token.clone()).await,
        (404, "subscription_not_found".into())
    );
    for path in [
        format!("/api/webhooks/subscriptions?organization_id={long}"),
        format!("/api/webhooks/deliveries?subscription_id={long}"),
        format!("/api/admin/quests?organization_id={long}"),
        format!("/api/clever/sync-history?school_id={long}"),
    ] {
        assert_eq!(get(path.clone(), admin.access_token.clone()).await, (400, "invalid_query".into()), "{path}");
    }
    let r = t
        .http
        .put(t.url(&format!("/api/completions/{long}/grade")))
        .bearer_auth(&admin.access_token)
        .json(&json!({"grade": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (404, "completion_not_found".into()));
    let r = t
        .http
        .post(t.url(&format!("/api/webhooks/deliveries/{long}/redeliver")))
        .bearer_auth(&org_admin.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 404);
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
