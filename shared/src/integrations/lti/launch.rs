//! The `id_token` of an LTI 1.3 launch, checked in the order issue 13 fixes (the browser-bound state
//! is checked before, by the launch route):
//!
//! 1. format: three base64url parts, a JSON header naming `alg`, a JSON object payload (`invalid_jwt`);
//!    RS256 only, whatever the header says otherwise (`unsupported_alg`: `none`, `HS256` with the
//!    public key as the secret...);
//! 2. registration: found by `iss` + client id (`azp`, or a single `aud`) by the caller;
//! 3. signature, by the `kid` of the platform's JWKS (`missing_kid`, `unknown_kid`, `invalid_signature`);
//! 4. `iss`, `aud` (the client id, or an array containing it with `azp` equal to it) and `azp`;
//! 5. `exp` and `iat`, with [`LEEWAY_SECS`];
//! 6. `nonce`: the one this browser's login was given (single use: the caller consumes it with one
//!    conditional write);
//! 7. `deployment_id`, registered for this issuer and client id;
//! 8. `version` `1.3.0`; 9. `message_type` (`LtiResourceLinkRequest`, `LtiDeepLinkingRequest`);
//! 10. the claims each message type needs: a user (`sub`), `roles`, a resource link id, deep-linking
//!     settings.
//!
//! Decision on the certification case "Launch Instructor With Email No Context": it is filed under
//! `invalid/`, but the only thing it lacks is the `context` claim, which LTI 1.3 makes optional
//! (reference facts sheet); the suite it comes from asserts nothing about it. A launch without a context
//! is accepted: the user is provisioned in the registration's organization and the resource link still
//! leads to its quest; only what needs a course (roster sync) is unavailable for it.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::roles::{MappedRole, map_roles};
use super::{CLAIM, DEEP_LINKING_SETTINGS, LtiError};
use crate::support::crypto;

/// Clock skew allowed between the platform and us.
pub const LEEWAY_SECS: i64 = 30;
/// Larger `id_token`s are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

pub const RESOURCE_LINK_REQUEST: &str = "LtiResourceLinkRequest";
pub const DEEP_LINKING_REQUEST: &str = "LtiDeepLinkingRequest";

const fn refused(code: &'static str, message: &'static str) -> LtiError {
    LtiError::new(code, message)
}

/// An `id_token` whose format is right, not yet verified: what the registration lookup needs.
#[derive(Debug)]
pub struct Unverified {
    token: String,
    pub kid: Option<String>,
    pub issuer: String,
    /// `azp`, or the single audience.
    pub client_id: String,
}

/// What the registration says about the platform (the fields a launch is checked against).
#[derive(Clone, Debug)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub deployment_ids: &'a [String],
    /// The nonce issued with this browser's state.
    pub nonce: &'a str,
    pub now: i64,
}

/// A verified launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub message_type: String,
    pub issuer: String,
    pub client_id: String,
    pub deployment_id: String,
    /// The platform's user id (`sub`).
    pub subject: String,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub roles: Vec<String>,
    pub role: MappedRole,
    /// For a Mentor: the `sub`s of the students they follow.
    pub mentor_of: Vec<String>,
    pub context: Option<LaunchContext>,
    pub resource_link: Option<ResourceLink>,
    /// Assignment and Grade Services: where line items are (`lineitems`), this link's own (`lineitem`).
    pub lineitems_url: Option<String>,
    pub lineitem_url: Option<String>,
    pub ags_scopes: Vec<String>,
    /// Names and Role Provisioning Services: the context's membership URL.
    pub memberships_url: Option<String>,
    pub deep_linking: Option<DeepLinkingSettings>,
    /// The custom parameter `quest_id` (set by our deep linking content items).
    pub custom_quest_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LaunchContext {
    pub id: String,
    pub label: Option<String>,
    pub title: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResourceLink {
    pub id: String,
    pub title: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeepLinkingSettings {
    pub return_url: String,
    pub accept_types: Vec<String>,
    pub accept_multiple: bool,
    /// Opaque data to echo in the response.
    pub data: Option<String>,
}

/// Steps 3 to 10 for a token whose registration was found: the platform's key by `kid` (fetched
/// through the per-instance cache), then [`Unverified::verify`].
pub async fn verify_with_registration(
    ctx: &crate::Context,
    unverified: Unverified,
    registration: &super::registration::Registration,
    nonce: &str,
) -> Result<Launch, LtiError> {
    if unverified.issuer != registration.issuer || unverified.client_id != registration.client_id {
        return Err(refused("unknown_registration", "no platform is registered for this issuer and client id"));
    }
    let kid = unverified.kid.clone().ok_or(refused("missing_kid", "the id_token's header names no key (kid)"))?;
    let key = ctx.kept::<super::platform_keys::PlatformKeys>().key(ctx, &registration.jwks_url, &kid).await?;
    let expected = Expected {
        issuer: &registration.issuer,
        client_id: &registration.client_id,
        deployment_ids: &registration.deployment_ids,
        nonce,
        now: ctx.clock.now(),
    };
    unverified.verify(&key, &expected)
}

/// Step 1: the format, and what finds the registration.
pub fn parse(id_token: &str) -> Result<Unverified, LtiError> {
    const FORMAT: LtiError = refused("invalid_jwt", "the id_token is not a JWT of an LTI 1.3 launch");
    if id_token.len() > MAX_TOKEN_BYTES {
        return Err(FORMAT);
    }
    let mut parts = id_token.split('.');
    let (Some(header), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(FORMAT);
    };
    let decode = |part: &str| -> Result<Value, LtiError> {
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, part.trim_end_matches('='))
                .map_err(|_| FORMAT)?;
        serde_json::from_slice::<Value>(&bytes)
            .map_err(|_| FORMAT)
            .and_then(|v| if v.is_object() { Ok(v) } else { Err(FORMAT) })
    };
    let header = decode(header)?;
    let claims = decode(payload)?;
    match header["alg"].as_str() {
        None => return Err(FORMAT),
        Some("RS256") => {}
        Some(_) => return Err(refused("unsupported_alg", "LTI launches are signed RS256")),
    }
    let issuer = claims["iss"].as_str().filter(|s| !s.is_empty()).ok_or(FORMAT)?.to_string();
    let client_id = match (&claims["azp"], &claims["aud"]) {
        (Value::String(azp), _) => azp.clone(),
        (_, Value::String(aud)) => aud.clone(),
        (_, Value::Array(auds)) if auds.len() == 1 => auds[0].as_str().ok_or(FORMAT)?.to_string(),
        (_, Value::Array(_)) => {
            return Err(refused("invalid_audience", "several audiences and no azp: the client id is not named"));
        }
        _ => return Err(FORMAT),
    };
    Ok(Unverified { token: id_token.to_string(), kid: header["kid"].as_str().map(str::to_string), issuer, client_id })
}

impl Unverified {
    /// Steps 3 to 10, with the platform's key for [`Unverified::kid`] (the caller fetched it, step 3
    /// refusing a token without `kid` first).
    pub fn verify(self, key: &DecodingKey, expected: &Expected<'_>) -> Result<Launch, LtiError> {
        // Signature only here; every claim is checked below, in order, with its own code.
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Value>(&self.token, key, &validation)
            .map_err(|_| refused("invalid_signature", "the id_token's signature does not verify"))?
            .claims;
        check_audience(&claims, expected)?;
        check_times(&claims, expected.now)?;
        let nonce = claims["nonce"].as_str().ok_or(refused("missing_nonce", "the id_token has no nonce"))?;
        if !crypto::constant_time_eq(nonce.as_bytes(), expected.nonce.as_bytes()) {
            return Err(refused("invalid_nonce", "the nonce is not the one this login was given"));
        }
        let text = |name: &str| claims[format!("{CLAIM}{name}")].as_str().map(str::to_string);
        let deployment_id =
            text("deployment_id").ok_or(refused("missing_deployment", "the launch names no deployment"))?;
        if !expected.deployment_ids.contains(&deployment_id) {
            return Err(refused("unknown_deployment", "the deployment is not registered for this platform"));
        }
        match text("version") {
            None => return Err(refused("missing_version", "the launch names no LTI version")),
            Some(v) if v != "1.3.0" => return Err(refused("invalid_version", "only LTI 1.3.0 launches are accepted")),
            Some(_) => {}
        }
        let message_type =
            text("message_type").ok_or(refused("missing_message_type", "the launch names no message type"))?;
        if message_type != RESOURCE_LINK_REQUEST && message_type != DEEP_LINKING_REQUEST {
            return Err(refused("unsupported_message_type", "the message type is not one this tool handles"));
        }
        claims_of(&claims, expected, deployment_id, message_type)
    }
}

fn check_audience(claims: &Value, expected: &Expected<'_>) -> Result<(), LtiError> {
    if claims["iss"].as_str() != Some(expected.issuer) {
        return Err(refused("invalid_issuer", "the issuer is not the registered platform"));
    }
    let audience_ok = match &claims["aud"] {
        Value::String(aud) => aud == expected.client_id,
        Value::Array(auds) => auds.iter().any(|a| a == expected.client_id),
        _ => false,
    };
    if !audience_ok {
        return Err(refused("invalid_audience", "the token is not addressed to this tool"));
    }
    let several = claims["aud"].as_array().is_some_and(|a| a.len() > 1);
    match claims["azp"].as_str() {
        Some(azp) if azp != expected.client_id => Err(refused("invalid_azp", "azp is not this tool's client id")),
        None if several => Err(refused("invalid_azp", "several audiences need an azp")),
        _ => Ok(()),
    }
}

fn check_times(claims: &Value, now: i64) -> Result<(), LtiError> {
    let (Some(exp), Some(iat)) = (claims["exp"].as_i64(), claims["iat"].as_i64()) else {
        return Err(refused("token_expired", "the id_token has no exp or iat"));
    };
    if exp + LEEWAY_SECS < now {
        return Err(refused("token_expired", "the id_token has expired"));
    }
    if iat - LEEWAY_SECS > now {
        return Err(refused("token_not_yet_valid", "the id_token was issued in the future"));
    }
    Ok(())
}

/// Step 10: the claims each message type needs, and the launch.
fn claims_of(
    claims: &Value,
    expected: &Expected<'_>,
    deployment_id: String,
    message_type: String,
) -> Result<Launch, LtiError> {
    let claim = |name: &str| &claims[format!("{CLAIM}{name}")];
    let subject = claims["sub"]
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or(refused("missing_user", "the launch names no user (sub)"))?
        .to_string();
    let roles: Vec<String> = claim("roles")
        .as_array()
        .ok_or(refused("missing_roles", "the launch has no roles claim"))?
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    let text = |v: &Value| v.as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let resource_link = text(&claim("resource_link")["id"])
        .map(|id| ResourceLink { id, title: text(&claim("resource_link")["title"]) });
    let deep_linking = {
        let settings = &claims[DEEP_LINKING_SETTINGS];
        text(&settings["deep_link_return_url"]).map(|return_url| DeepLinkingSettings {
            return_url,
            accept_types: strings(&settings["accept_types"]),
            accept_multiple: settings["accept_multiple"].as_bool().unwrap_or(false),
            data: text(&settings["data"]),
        })
    };
    match message_type.as_str() {
        RESOURCE_LINK_REQUEST if resource_link.is_none() => {
            return Err(refused("missing_resource_link", "a resource link launch needs resource_link.id"));
        }
        DEEP_LINKING_REQUEST if deep_linking.is_none() => {
            return Err(refused("missing_deep_linking_settings", "a deep linking request needs its return URL"));
        }
        _ => {}
    }
    let ags = &claims[super::AGS_ENDPOINT];
    Ok(Launch {
        issuer: expected.issuer.to_string(),
        client_id: expected.client_id.to_string(),
        deployment_id,
        subject,
        email: text(&claims["email"]),
        given_name: text(&claims["given_name"]),
        family_name: text(&claims["family_name"]),
        role: map_roles(&roles),
        roles,
        mentor_of: strings(claim("role_scope_mentor")),
        context: text(&claim("context")["id"]).map(|id| LaunchContext {
            id,
            label: text(&claim("context")["label"]),
            title: text(&claim("context")["title"]),
        }),
        resource_link,
        lineitems_url: text(&ags["lineitems"]),
        lineitem_url: text(&ags["lineitem"]),
        ags_scopes: strings(&ags["scope"]),
        memberships_url: text(&claims[super::NRPS]["context_memberships_url"]),
        deep_linking,
        custom_quest_id: text(&claim("custom")[super::QUEST_PARAMETER]),
        message_type,
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}
