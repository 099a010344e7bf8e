//! The LTI tool's own key: made by its rotation when the stack is provisioned (as CloudFormation's
//! `RotateImmediatelyOnUpdate` does), published at `/api/lti/jwks`, and rotated with the previous key
//! still published, so what was signed before a rotation still verifies, as a platform checks it.

use hub::integrations::lti::tool_key;
use serde_json::{Value, json};

use crate::common::TestStack;

fn verifies(token: &str, jwks: &Value) -> bool {
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let Some(jwk) = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()) else { return false };
    let key =
        jsonwebtoken::DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &key, &validation).is_ok()
}

#[tokio::test]
async fn the_tool_key_is_made_at_provisioning_published_and_rotated_keeping_the_previous() {
    let t = TestStack::new("ltikey").await;
    let ctx = t.context_for("lti-key-rotate", &[]);
    let jwks = || async { t.http.get(t.url("/api/lti/jwks")).send().await.unwrap().json::<Value>().await.unwrap() };
    let first = jwks().await;
    assert_eq!(first["keys"].as_array().unwrap().len(), 1, "the placeholder was replaced by a key: {first}");
    assert_eq!((first["keys"][0]["kty"].as_str(), first["keys"][0]["alg"].as_str()), (Some("RSA"), Some("RS256")));
    let before = tool_key::current(&ctx).await.unwrap().sign(&json!({"iss": "tool", "n": 1}));
    assert!(verifies(&before, &first));

    // Secrets Manager's rotation, step by step, through the real handler.
    let secret = ctx.config.lti_tool_key_secret_id.clone().unwrap();
    let rotate = std::sync::Arc::new(t.context_for("lti-key-rotate", &[]));
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let event =
            json!({"SecretId": secret, "ClientRequestToken": "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b", "Step": step});
        tool_key::rotation_step(rotate.clone(), event).await.unwrap();
    }
    // Another secret is never touched.
    let other = json!({"SecretId": "arn:aws:secretsmanager:us-east-1:123456789012:secret:elsewhere", "ClientRequestToken": "0123456789abcdef0123456789abcdef", "Step": "createSecret"});
    assert_eq!(tool_key::rotation_step(rotate.clone(), other).await.unwrap_err().status, 403);

    // A stray step naming an older version (a rollback attempt) changes nothing.
    let old = first["keys"][0]["kid"].as_str().unwrap().to_string();
    let stray = json!({"SecretId": secret, "ClientRequestToken": old, "Step": "finishSecret"});
    assert!(tool_key::rotation_step(rotate.clone(), stray).await.is_err(), "not a pending version");

    let fresh = t.context_for("lti-jwks", &[]);
    let after = tool_key::jwks(&fresh).await.unwrap();
    assert_eq!(after["keys"].as_array().unwrap().len(), 2, "current and previous: {after}");
    let signed = tool_key::current(&fresh).await.unwrap();
    assert_eq!(signed.kid, "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b");
    assert!(verifies(&signed.sign(&json!({"iss": "tool"})), &after));
    assert!(verifies(&before, &after), "signed before the rotation, still verifiable");
}
