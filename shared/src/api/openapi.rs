//! The OpenAPI 3.1 document of the HTTP API, derived from the handlers' `#[utoipa::path]`
//! annotations and their own request and response types (no second copy by hand).
//! `docs/openapi.json` is this document (`make openapi`); tests keep it, template.yaml's routes and
//! the code in agreement, and `make test` runs schemathesis against the dev gateway with it.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{auth, clever, health, learning, lti, oauth, observers, spark, webhooks};
use crate::pages;

use crate::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Integration hub API",
        description = "The integration hub of the learning platform: sessions and email sign-in, learning, observers, Spark LMS, outbound webhooks and Clever. Errors are `{\"error\", \"message\"}` with the matching status; 429 and 503 carry `Retry-After`.",
        version = "1.0.0",
        license(name = "Apache-2.0")
    ),
    paths(
        health::health,
        auth::me,
        auth::refresh,
        auth::logout,
        auth::email_start,
        auth::email_verify,
        learning::create_quest,
        learning::list_quests,
        learning::create_badge,
        learning::grade_completion,
        learning::my_quests,
        spark::sso,
        spark::token,
        spark::submission,
        spark::pending_submissions,
        webhooks::create_subscription,
        webhooks::list_subscriptions,
        webhooks::get_subscription,
        webhooks::update_subscription,
        webhooks::delete_subscription,
        webhooks::list_deliveries,
        webhooks::redeliver,
        webhooks::test,
        clever::put_district,
        clever::list_districts,
        clever::sync,
        clever::sync_history,
        clever::health,
        observers::create_invitation,
        observers::list_invitations,
        observers::cancel_invitation,
        observers::accept_invitation,
        observers::pending,
        observers::list_observers,
        observers::update_observer,
        observers::remove_observer,
        observers::students,
        observers::portfolio,
        observers::post_comment,
        observers::student_comments,
        observers::my_comments,
        observers::update_my_comment,
        pages::sign_in::sign_in_form,
        pages::sign_in::sign_in_submit,
        pages::sign_in::confirm_form,
        pages::sign_in::confirm_submit,
        pages::invitation::accept_form,
        pages::invitation::accept_submit,
        oauth::metadata,
        oauth::jwks,
        pages::consent::ask,
        pages::consent::decide,
        oauth::token_endpoint,
        oauth::revoke,
        oauth::introspect,
        oauth::create_client,
        oauth::list_clients,
        oauth::get_client,
        oauth::update_client,
        oauth::delete_client,
        lti::create_registration,
        lti::list_registrations,
        lti::get_registration,
        lti::update_registration,
        lti::delete_registration,
        lti::login,
        lti::login_form,
        lti::launch,
        lti::launch_token,
        lti::tool_jwks,
        lti::deep_linking_response,
        lti::list_links,
        lti::assign_link,
        lti::roster_sync,
        lti::roster_sync_status,
        learning::get_quest,
        learning::submit_task,
        oauth::my_authorizations,
        oauth::revoke_authorization,
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "health", description = "Status of the hub and its dependencies"),
        (name = "auth", description = "Sessions: the caller, token refresh, logout and email sign-in"),
        (name = "learning", description = "Quests, badges, grades and the student's own learning"),
        (name = "spark", description = "Spark LMS: single sign-on and submission webhooks"),
        (name = "webhooks", description = "Outbound webhooks: subscriptions and the delivery log"),
        (name = "clever", description = "Clever roster sync: districts, syncs, history and health"),
        (name = "observers", description = "Parents and mentors: invitations, links, portfolios and comments"),
        (name = "oauth", description = "OAuth 2.0 authorization server for partner apps: metadata, authorize and consent, tokens, revocation, introspection, clients, the user's authorized apps"),
        (name = "lti", description = "LTI 1.3 tool: platform registrations, login and launch, deep linking, resource links, roster sync (NRPS) and the tool's keys"),
        (name = "pages", description = "HTML pages the hub serves (email sign-in, invitations); forms are CSRF-protected"),
    )
)]
pub struct ApiDoc;

/// How callers prove who they are: an access token (header or cookie), or Spark's signature.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::domain::auth::guard::ACCESS_COOKIE))),
        );
        components.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "OAuth client authentication (client_secret_basic; or client_secret_post in the form)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "spark_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Spark-Signature",
                "Hex HMAC-SHA256 of the raw body (multipart: of the metadata field) with the shared webhook secret",
            ))),
        );
    }
}

/// The document as partners download it (`/openapi.json`, `docs/openapi.json`).
pub fn document_json() -> String {
    let mut text = ApiDoc::openapi().to_pretty_json().expect("the document serializes");
    text.push('\n');
    text
}
