//! LTI 1.3 launches checked by `hub::integrations::lti::launch` against a platform that is not us (the local platform
//! simulator signs them; its JWKS is fetched through the SSRF-guarded client): every 1EdTech
//! certification case of `shared/reference/lti-certification/` (copied to `tests/fixtures/`) (`valid/` launches, `invalid/` is refused
//! with its own error code) and the issue's attack cases.

use std::path::Path;

use hub::domain::auth::Role;
use hub::integrations::lti::LtiError;
use hub::integrations::lti::launch::{Launch, parse, verify_with_registration};
use hub::integrations::lti::registration::Registration;
use lti_platform_sim::{Platform, PlatformKey};
use serde_json::{Value, json};

use crate::common::TestStack;

/// The certification payloads' platform.
const ISSUER: &str = "https://ltiadvantagevalidator.imsglobal.org";
const CLIENT_ID: &str = "imstester_3dfad6d";
const NONCE: &str = "nonce-issued-at-login";

/// A function's context as the LTI functions get it locally: the simulator is on loopback, which only
/// the local stage's explicit setting allows.
fn lti_context(t: &TestStack) -> hub::Context {
    t.context_for("auth-me", &[("OUTBOUND_ALLOW_LOOPBACK", "true")])
}

fn registration(platform: &Platform) -> Registration {
    Registration {
        id: hub::integrations::lti::registration::registration_id(ISSUER, CLIENT_ID),
        organization_id: "district-one".into(),
        name: "1EdTech validator".into(),
        issuer: ISSUER.into(),
        client_id: CLIENT_ID.into(),
        deployment_ids: vec!["testdeploy".into()],
        auth_url: format!("{}/authorize", platform.base_url),
        token_url: format!("{}/token", platform.base_url),
        jwks_url: platform.jwks_url(),
        emails_are_school_records: false,
        created_at: 0,
        updated_at: 0,
    }
}

struct Case {
    name: String,
    payload: Value,
    header: Option<Value>,
    keep: Vec<String>,
}

fn cases(kind: &str) -> Vec<Case> {
    let dir = devstack::repo_root().join("infra/devstack/tests/fixtures/lti-certification").join(kind);
    let read = |p: &Path| std::fs::read_to_string(p).ok().map(|t| serde_json::from_str::<Value>(&t).unwrap());
    let mut cases: Vec<Case> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|path| Case {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            payload: read(&path.join("payload.json")).unwrap(),
            header: read(&path.join("header.json")),
            keep: read(&path.join("keep.json"))
                .map(|k| k.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect())
                .unwrap_or_default(),
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// The case's claims as a platform sends them now: `exp`/`iat` current (unless kept), our login's nonce.
fn claims_now(case: &Case) -> Value {
    let mut claims = case.payload.clone();
    let now = crate::common::now();
    if claims.get("iat").is_some() && !case.keep.contains(&"iat".to_string()) {
        claims["iat"] = json!(now);
    }
    if claims.get("exp").is_some() && !case.keep.contains(&"exp".to_string()) {
        claims["exp"] = json!(now + 300);
    }
    if claims.get("nonce").is_some() {
        claims["nonce"] = json!(NONCE);
    }
    claims
}

async fn launch(ctx: &hub::Context, registration: &Registration, token: &str) -> Result<Launch, LtiError> {
    let unverified = parse(token)?;
    verify_with_registration(ctx, unverified, registration, NONCE).await
}

#[tokio::test]
async fn every_valid_certification_launch_is_accepted_with_its_roles_mapped() {
    let t = TestStack::new("lticertok").await;
    let ctx = lti_context(&t);
    let platform = Platform::start(0).await.unwrap();
    let reg = registration(&platform);
    let valid = cases("valid");
    assert_eq!(valid.len(), 21, "the reference's valid cases");
    for case in &valid {
        let token = platform.sign(&claims_now(case));
        let launch = launch(&ctx, &reg, &token).await.unwrap_or_else(|e| panic!("{}: refused {e}", case.name));
        let name = case.name.as_str();
        let expected = if name.contains("Instructor") && !name.contains("No Role") && !name.contains("Unknown Role")
            || ["Assignments and Grades", "Names and Roles", "Deep Linking - Send"].iter().any(|p| name.starts_with(p))
        {
            Role::Teacher
        } else {
            Role::Student
        };
        assert_eq!(launch.role.role, expected, "{name}: roles {:?}", launch.roles);
        assert_eq!((launch.issuer.as_str(), launch.deployment_id.as_str()), (ISSUER, "testdeploy"));
        match launch.message_type.as_str() {
            "LtiDeepLinkingRequest" => assert!(launch.deep_linking.is_some(), "{name}"),
            _ => assert!(launch.resource_link.is_some(), "{name}"),
        }
        // No PII: no email and no names, the launch still stands on its `sub`.
        if name.contains("No PII") || name.contains("Only Resource Link") {
            assert_eq!((launch.email.as_ref(), launch.given_name.as_ref()), (None, None), "{name}");
        }
        if name.contains("Only Email") {
            assert!(launch.email.is_some() && launch.given_name.is_none(), "{name}");
        }
    }
    // Every JWKS fetch was one: the key is cached per instance.
    assert_eq!(*platform.jwks_requests.lock().unwrap(), 1);
}

#[tokio::test]
async fn the_invalid_certification_launches_are_refused_with_their_own_code_but_one_accepted_by_decision() {
    let t = TestStack::new("lticertno").await;
    let ctx = lti_context(&t);
    let platform = Platform::start(0).await.unwrap();
    let reg = registration(&platform);
    let expected = [
        ("Correct KID Required in Header", "missing_kid"),
        ("Exp and Iat Fields invalid", "token_expired"),
        ("Incorrect KID passed in JWT Header", "unknown_kid"),
        ("JWT Passed is Not LTI 1.3 JWT", "invalid_jwt"),
        ("LTI version passed is not 1.3", "invalid_version"),
        ("Launch With Missing resource_link_id", "missing_resource_link"),
        ("No LTI Version Passed in JWT", "missing_version"),
        ("One or more JWT fields missing", "missing_version"),
        ("deployment_id Claim Missing", "missing_deployment"),
        ("message_type Claim Missing", "missing_message_type"),
        ("role Claim Missing", "missing_roles"),
        ("user Claim Missing", "missing_user"),
    ];
    let invalid = cases("invalid");
    assert_eq!(invalid.len(), expected.len() + 1, "the reference's invalid cases");
    for case in &invalid {
        let claims = claims_now(case);
        let token = match &case.header {
            Some(header) => platform.sign_with_header(header, &claims),
            None => platform.sign(&claims),
        };
        let outcome = launch(&ctx, &reg, &token).await;
        if case.name == "Launch Instructor With Email No Context" {
            // Decided (hub::integrations::lti::launch): the context claim is optional in LTI 1.3; this is a launch.
            let launch = outcome.unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!((launch.context, launch.role.role), (None, Role::Teacher));
            continue;
        }
        let code =
            expected.iter().find(|(n, _)| *n == case.name).unwrap_or_else(|| panic!("unexpected case {}", case.name)).1;
        assert_eq!(outcome.map(|_| ()).unwrap_err().code, code, "{}", case.name);
    }
}

#[tokio::test]
async fn forged_replayed_and_misaddressed_launches_are_refused() {
    let t = TestStack::new("ltiattack").await;
    let ctx = lti_context(&t);
    let platform = Platform::start(0).await.unwrap();
    let reg = registration(&platform);
    let good = claims_now(&cases("valid").into_iter().find(|c| c.name == "Launch LTI 1.3 Message as Student").unwrap());
    let refused = |token: String| {
        let (ctx, reg) = (&ctx, &reg);
        async move { launch(ctx, reg, &token).await.map(|_| ()).unwrap_err().code }
    };
    assert!(launch(&ctx, &reg, &platform.sign(&good)).await.is_ok());

    // alg none, and HS256 with the platform's public key as the HMAC secret.
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "none", "kid": "platform-key-1"})), b64(&good));
    assert_eq!(refused(unsigned).await, "unsupported_alg");
    let jwk = platform.keys.lock().unwrap()[0].jwk();
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("platform-key-1".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &good,
        &jsonwebtoken::EncodingKey::from_secret(jwk["n"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    assert_eq!(refused(hs256).await, "unsupported_alg");
    // A key the platform never published, under the platform's own kid.
    let stranger = PlatformKey::generate("platform-key-1").unwrap();
    assert_eq!(refused(stranger.sign(&good)).await, "invalid_signature");
    // A token whose claims were changed after signing.
    let token = platform.sign(&good);
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut tampered = good.clone();
    tampered["sub"] = json!("someone-else");
    parts[1] = b64(&tampered);
    assert_eq!(refused(parts.join(".")).await, "invalid_signature");
    // Misaddressed: another tool's audience, several audiences without azp, an azp that is not ours.
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = good.clone();
        change(&mut claims);
        platform.sign(&claims)
    };
    assert_eq!(refused(with(&|c| c["aud"] = json!("another-tool"))).await, "unknown_registration");
    assert_eq!(refused(with(&|c| c["aud"] = json!([CLIENT_ID, "another-tool"]))).await, "invalid_audience");
    let azp = with(&|c| {
        c["aud"] = json!([CLIENT_ID, "another-tool"]);
        c["azp"] = json!("another-tool");
    });
    assert_eq!(refused(azp).await, "unknown_registration");
    // Expired, issued in the future, the nonce of another login, an unregistered deployment.
    let now = crate::common::now();
    assert_eq!(refused(with(&|c| c["exp"] = json!(now - 120))).await, "token_expired");
    assert_eq!(refused(with(&|c| c["iat"] = json!(now + 600))).await, "token_not_yet_valid");
    assert_eq!(refused(with(&|c| c["nonce"] = json!("another-login"))).await, "invalid_nonce");
    let deployment = "https://purl.imsglobal.org/spec/lti/claim/deployment_id";
    assert_eq!(refused(with(&|c| c[deployment] = json!("elsewhere"))).await, "unknown_deployment");
    assert_eq!(refused("not.a.jwt.at-all".into()).await, "invalid_jwt");
    assert_eq!(refused("x".repeat(70_000)).await, "invalid_jwt");
}

#[tokio::test]
async fn a_rotated_platform_key_is_fetched_once_and_unknown_kids_cannot_flood_the_platform() {
    let t = TestStack::new("ltikeys").await;
    let ctx = lti_context(&t);
    let platform = Platform::start(0).await.unwrap();
    let reg = registration(&platform);
    let good = claims_now(&cases("valid").into_iter().find(|c| c.name == "Launch LTI 1.3 Message as Student").unwrap());
    assert!(launch(&ctx, &reg, &platform.sign(&good)).await.is_ok());
    // The platform rotates: the first launch with the new kid fetches the JWKS again and succeeds.
    platform.rotate_key(false).unwrap();
    assert!(launch(&ctx, &reg, &platform.sign(&good)).await.is_ok());
    assert_eq!(*platform.jwks_requests.lock().unwrap(), 2);
    // Made-up kids right after: refused without asking the platform again.
    for n in 0..20 {
        let header = json!({"alg": "RS256", "kid": format!("made-up-{n}")});
        let token = platform.sign_with_header(&header, &good);
        assert_eq!(launch(&ctx, &reg, &token).await.unwrap_err().code, "unknown_kid");
    }
    assert_eq!(*platform.jwks_requests.lock().unwrap(), 2, "no refetch within 10 s");

    // A JWKS that fails or hangs: a clear refusal, not a hang (a fresh instance has nothing cached).
    let fresh = lti_context(&t);
    platform.faults.lock().unwrap().jwks_status = Some(503);
    assert_eq!(launch(&fresh, &reg, &platform.sign(&good)).await.unwrap_err().code, "jwks_unavailable");
    platform.faults.lock().unwrap().jwks_status = None;
    platform.faults.lock().unwrap().jwks_delay = Some(std::time::Duration::from_secs(8));
    let started = std::time::Instant::now();
    let fresh = lti_context(&t);
    assert_eq!(launch(&fresh, &reg, &platform.sign(&good)).await.unwrap_err().code, "jwks_unavailable");
    assert!(started.elapsed() < std::time::Duration::from_secs(7), "bounded by the fetch timeout");
}

#[tokio::test]
async fn a_jwks_url_on_a_private_address_is_never_fetched() {
    // Production rules (no loopback): a registration whose JWKS points inside the network is refused.
    let t = TestStack::new("ltissrf").await;
    let platform = Platform::start(0).await.unwrap();
    let ctx = t.context_for("auth-me", &[("STAGE", "prod"), ("OUTBOUND_ALLOW_LOOPBACK", "false")]);
    let mut reg = registration(&platform);
    let good = claims_now(&cases("valid").into_iter().find(|c| c.name == "Launch LTI 1.3 Message as Student").unwrap());
    for url in [platform.jwks_url(), "https://169.254.169.254/latest/meta-data".into(), "https://10.0.0.8/jwks".into()]
    {
        reg.jwks_url = url.clone();
        assert_eq!(launch(&ctx, &reg, &platform.sign(&good)).await.unwrap_err().code, "jwks_unavailable", "{url}");
    }
    assert_eq!(*platform.jwks_requests.lock().unwrap(), 0, "nothing reached the address");
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}
