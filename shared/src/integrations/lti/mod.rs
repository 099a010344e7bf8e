//! The LTI 1.3 tool (issue 13), built from the facts in `shared/reference/lti/README.md`.
//!
//! This part is the core every LTI door stands on: [`launch`] (the `id_token` of a launch, checked in
//! the order the issue fixes, each failure with its own error code), [`roles`] (LMS roles onto ours)
//! and [`platform_keys`] (the platforms' JWKS, cached per instance, fetched through the SSRF guard).
//! Registrations, the login and launch routes, deep linking, grades and rosters build on it.

pub mod deep_linking;
pub mod flow;
pub mod launch;
pub mod links;
pub mod platform_keys;
pub mod registration;
pub mod roles;
pub mod roster;
pub mod services;
pub mod tool_key;

/// The claim prefix of LTI 1.3 core claims.
pub const CLAIM: &str = "https://purl.imsglobal.org/spec/lti/claim/";
pub const DEEP_LINKING_SETTINGS: &str = "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings";
pub const AGS_ENDPOINT: &str = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint";
pub const NRPS: &str = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice";
/// The custom parameter our deep linking content items carry.
pub const QUEST_PARAMETER: &str = "quest_id";

/// A name as a platform sent it, without control or direction characters, 100 characters at most.
pub fn clean_name(name: Option<&str>) -> Option<String> {
    name.and_then(|s| crate::support::text::clean_text(&s.chars().take(100).collect::<String>(), 100).ok().flatten())
}

/// Who may frame the tool's pages: any https LMS (any page on a developer's machine).
pub fn frame_ancestors(ctx: &crate::Context) -> String {
    if ctx.config.stage == crate::support::config::Stage::Local { "*" } else { "https:" }.to_string()
}

/// A refused launch: its error code (one per check, shown on the framed error page and in tests)
/// and a message without anything the platform sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct LtiError {
    pub code: &'static str,
    pub message: &'static str,
}

impl LtiError {
    pub const fn new(code: &'static str, message: &'static str) -> Self {
        Self { code, message }
    }
}

impl From<LtiError> for crate::ApiError {
    fn from(e: LtiError) -> Self {
        let status = match e.code {
            "jwks_unavailable" => http::StatusCode::BAD_GATEWAY,
            "unknown_registration" | "unknown_deployment" => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::BAD_REQUEST,
        };
        crate::ApiError::new(status, e.code, e.message)
    }
}
