//! The catalogue of Lambda functions: one entry per binary in `functions/src/bin`, named as in
//! template.yaml. Mains pick their entry; the dev gateway looks entries up by name. A consistency
//! test keeps this list, the binaries, template.yaml and `events/` in agreement.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsMessage;
use lambda_http::{BoxFuture, Request};
use serde_json::Value;

use crate::runtime::email::jobs::EmailJob;
use crate::runtime::jobs::QueueError;
use crate::support::http::ApiResult;
use crate::{ApiError, Context, api, runtime::events};

/// An HTTP endpoint behind API Gateway (HTTP API, payload v2).
pub type HttpHandler = fn(Arc<Context>, Request) -> BoxFuture<'static, ApiResult>;
/// One SQS message; an error retries that message only (partial batch failure).
pub type QueueHandler = fn(Arc<Context>, SqsMessage) -> BoxFuture<'static, Result<(), QueueError>>;
/// An EventBridge schedule; the answer summarises the run.
pub type ScheduleHandler = fn(Arc<Context>, Value) -> BoxFuture<'static, Result<Value, ApiError>>;

#[derive(Clone, Copy)]
pub enum Handler {
    Http(HttpHandler),
    Queue(QueueHandler),
    Schedule(ScheduleHandler),
}

#[derive(Clone, Copy)]
pub struct Function {
    /// The binary name, also the `Binary` build property in template.yaml.
    pub name: &'static str,
    pub handler: Handler,
}

pub const HEALTH: Function =
    Function { name: "health", handler: Handler::Http(|c, r| Box::pin(api::health::health(c, r))) };
pub const AUTH_ME: Function =
    Function { name: "auth-me", handler: Handler::Http(|c, r| Box::pin(api::auth::me(c, r))) };
pub const AUTH_REFRESH: Function =
    Function { name: "auth-refresh", handler: Handler::Http(|c, r| Box::pin(api::auth::refresh(c, r))) };
pub const AUTH_LOGOUT: Function =
    Function { name: "auth-logout", handler: Handler::Http(|c, r| Box::pin(api::auth::logout(c, r))) };
pub const ADMIN_QUESTS_CREATE: Function = Function {
    name: "admin-quests-create",
    handler: Handler::Http(|c, r| Box::pin(api::learning::create_quest(c, r))),
};
pub const ADMIN_QUESTS_LIST: Function =
    Function { name: "admin-quests-list", handler: Handler::Http(|c, r| Box::pin(api::learning::list_quests(c, r))) };
pub const ADMIN_BADGES_CREATE: Function = Function {
    name: "admin-badges-create",
    handler: Handler::Http(|c, r| Box::pin(api::learning::create_badge(c, r))),
};
pub const COMPLETIONS_GRADE: Function = Function {
    name: "completions-grade",
    handler: Handler::Http(|c, r| Box::pin(api::learning::grade_completion(c, r))),
};
pub const ME_QUESTS: Function =
    Function { name: "me-quests", handler: Handler::Http(|c, r| Box::pin(api::learning::my_quests(c, r))) };
pub const SPARK_SSO: Function =
    Function { name: "spark-sso", handler: Handler::Http(|c, r| Box::pin(api::spark::sso(c, r))) };
pub const SPARK_TOKEN: Function =
    Function { name: "spark-token", handler: Handler::Http(|c, r| Box::pin(api::spark::token(c, r))) };
pub const SPARK_WEBHOOK_SUBMISSION: Function = Function {
    name: "spark-webhook-submission",
    handler: Handler::Http(|c, r| Box::pin(api::spark::submission(c, r))),
};
pub const SPARK_SUBMISSION_WORKER: Function = Function {
    name: "spark-submission-worker",
    handler: Handler::Queue(|c, m| Box::pin(crate::integrations::spark::submissions::work(c, m))),
};
pub const SPARK_PENDING_SUBMISSIONS: Function = Function {
    name: "spark-pending-submissions",
    handler: Handler::Http(|c, r| Box::pin(api::spark::pending_submissions(c, r))),
};
pub const SPARK_PENDING_EXPIRY: Function = Function {
    name: "spark-pending-expiry",
    handler: Handler::Schedule(|c, e| Box::pin(crate::integrations::spark::pending::check_expiry(c, e))),
};
pub const GRADE_PASSBACK: Function = Function {
    name: "grade-passback",
    handler: Handler::Queue(|c, m| Box::pin(crate::integrations::passback::deliver(c, m))),
};
pub const WEBHOOKS_SUBSCRIPTIONS_CREATE: Function = Function {
    name: "webhooks-subscriptions-create",
    handler: Handler::Http(|c, r| Box::pin(api::webhooks::create_subscription(c, r))),
};
pub const WEBHOOKS_SUBSCRIPTIONS_LIST: Function = Function {
    name: "webhooks-subscriptions-list",
    handler: Handler::Http(|c, r| Box::pin(api::webhooks::list_subscriptions(c, r))),
};
pub const WEBHOOKS_SUBSCRIPTION_GET: Function = Function {
    name: "webhooks-subscription-get",
    handler: Handler::Http(|c, r| Box::pin(api::webhooks::get_subscription(c, r))),
};
pub const WEBHOOKS_SUBSCRIPTION_UPDATE: Function = Function {
    name: "webhooks-subscription-update",
    handler: Handler::Http(|c, r| Box::pin(api::webhooks::update_subscription(c, r))),
};
pub const WEBHOOKS_SUBSCRIPTION_DELETE: Function = Function {
    name: "webhooks-subscription-delete",
    handler: Handler::Http(|c, r| Box::pin(api::webhooks::delete_subscription(c, r))),
};
pub const WEBHOOKS_DELIVERIES_LIST: Function = Function {
    name: "webhooks-deliveries-list",
    handler: Handler::Http(|c, r| Box::pin(api::webhooks::list_deliveries(c, r))),
};
pub const WEBHOOKS_DELIVERY_REDELIVER: Function = Function {
    name: "webhooks-delivery-redeliver",
    handler: Handler::Http(|c, r| Box::pin(api::webhooks::redeliver(c, r))),
};
pub const WEBHOOKS_TEST: Function =
    Function { name: "webhooks-test", handler: Handler::Http(|c, r| Box::pin(api::webhooks::test(c, r))) };
pub const WEBHOOK_DELIVER: Function = Function {
    name: "webhook-deliver",
    handler: Handler::Queue(|c, m| Box::pin(crate::integrations::webhooks::delivery::deliver(c, m))),
};
pub const CLEVER_DISTRICTS_PUT: Function =
    Function { name: "clever-districts-put", handler: Handler::Http(|c, r| Box::pin(api::clever::put_district(c, r))) };
pub const CLEVER_DISTRICTS_LIST: Function = Function {
    name: "clever-districts-list",
    handler: Handler::Http(|c, r| Box::pin(api::clever::list_districts(c, r))),
};
pub const CLEVER_SYNC_REQUEST: Function =
    Function { name: "clever-sync-request", handler: Handler::Http(|c, r| Box::pin(api::clever::sync(c, r))) };
pub const CLEVER_SYNC_HISTORY: Function =
    Function { name: "clever-sync-history", handler: Handler::Http(|c, r| Box::pin(api::clever::sync_history(c, r))) };
pub const CLEVER_HEALTH: Function =
    Function { name: "clever-health", handler: Handler::Http(|c, r| Box::pin(api::clever::health(c, r))) };
pub const CLEVER_HEALTH_PROBE: Function = Function {
    name: "clever-health-probe",
    handler: Handler::Schedule(|c, e| Box::pin(crate::integrations::clever::health::probe(c, e))),
};
pub const CLEVER_SYNC_SCHEDULER: Function = Function {
    name: "clever-sync-scheduler",
    handler: Handler::Schedule(|c, e| Box::pin(crate::integrations::clever::jobs::nightly(c, e))),
};
pub const CLEVER_SYNC_WORKER: Function = Function {
    name: "clever-sync-worker",
    handler: Handler::Queue(|c, m| Box::pin(crate::integrations::clever::jobs::worker(c, m))),
};
pub const EVENTS_DISPATCH: Function =
    Function { name: "events-dispatch", handler: Handler::Queue(|c, m| Box::pin(dispatch_event(c, m))) };
pub const OUTBOX_RELAY: Function =
    Function { name: "outbox-relay", handler: Handler::Schedule(|c, e| Box::pin(events::relay(c, e))) };

pub const AUTH_EMAIL_START: Function =
    Function { name: "auth-email-start", handler: Handler::Http(|c, r| Box::pin(api::auth::email_start(c, r))) };
pub const AUTH_EMAIL_VERIFY: Function =
    Function { name: "auth-email-verify", handler: Handler::Http(|c, r| Box::pin(api::auth::email_verify(c, r))) };
pub const OBSERVERS_INVITATIONS_CREATE: Function = Function {
    name: "observers-invitations-create",
    handler: Handler::Http(|c, r| Box::pin(api::observers::create_invitation(c, r))),
};
pub const OBSERVERS_INVITATIONS_LIST: Function = Function {
    name: "observers-invitations-list",
    handler: Handler::Http(|c, r| Box::pin(api::observers::list_invitations(c, r))),
};
pub const OBSERVERS_INVITATION_CANCEL: Function = Function {
    name: "observers-invitation-cancel",
    handler: Handler::Http(|c, r| Box::pin(api::observers::cancel_invitation(c, r))),
};
pub const OBSERVERS_INVITATION_ACCEPT: Function = Function {
    name: "observers-invitation-accept",
    handler: Handler::Http(|c, r| Box::pin(api::observers::accept_invitation(c, r))),
};
pub const OBSERVERS_PENDING: Function =
    Function { name: "observers-pending", handler: Handler::Http(|c, r| Box::pin(api::observers::pending(c, r))) };
pub const OBSERVERS_LIST: Function =
    Function { name: "observers-list", handler: Handler::Http(|c, r| Box::pin(api::observers::list_observers(c, r))) };
pub const OBSERVERS_UPDATE: Function = Function {
    name: "observers-update",
    handler: Handler::Http(|c, r| Box::pin(api::observers::update_observer(c, r))),
};
pub const OBSERVERS_REMOVE: Function = Function {
    name: "observers-remove",
    handler: Handler::Http(|c, r| Box::pin(api::observers::remove_observer(c, r))),
};
pub const OBSERVERS_STUDENTS: Function =
    Function { name: "observers-students", handler: Handler::Http(|c, r| Box::pin(api::observers::students(c, r))) };
pub const OBSERVERS_PORTFOLIO: Function =
    Function { name: "observers-portfolio", handler: Handler::Http(|c, r| Box::pin(api::observers::portfolio(c, r))) };
pub const OBSERVERS_COMMENTS_CREATE: Function = Function {
    name: "observers-comments-create",
    handler: Handler::Http(|c, r| Box::pin(api::observers::post_comment(c, r))),
};
pub const OBSERVERS_COMMENTS_LIST: Function = Function {
    name: "observers-comments-list",
    handler: Handler::Http(|c, r| Box::pin(api::observers::student_comments(c, r))),
};
pub const ME_COMMENTS: Function =
    Function { name: "me-comments", handler: Handler::Http(|c, r| Box::pin(api::observers::my_comments(c, r))) };
pub const ME_COMMENT_UPDATE: Function = Function {
    name: "me-comment-update",
    handler: Handler::Http(|c, r| Box::pin(api::observers::update_my_comment(c, r))),
};
pub const PAGE_SIGN_IN: Function =
    Function { name: "page-sign-in", handler: Handler::Http(|c, r| Box::pin(crate::pages::sign_in::sign_in(c, r))) };
pub const PAGE_SIGN_IN_CONFIRM: Function = Function {
    name: "page-sign-in-confirm",
    handler: Handler::Http(|c, r| Box::pin(crate::pages::sign_in::confirm(c, r))),
};
pub const PAGE_INVITATION: Function = Function {
    name: "page-invitation",
    handler: Handler::Http(|c, r| Box::pin(crate::pages::invitation::accept(c, r))),
};
pub const EMAIL_SEND: Function =
    Function { name: "email-send", handler: Handler::Queue(|c, m| Box::pin(send_email(c, m))) };

pub const OAUTH_METADATA: Function =
    Function { name: "oauth-metadata", handler: Handler::Http(|c, r| Box::pin(api::oauth::metadata(c, r))) };
pub const OAUTH_JWKS: Function =
    Function { name: "oauth-jwks", handler: Handler::Http(|c, r| Box::pin(api::oauth::jwks(c, r))) };
pub const OAUTH_AUTHORIZE: Function = Function {
    name: "oauth-authorize",
    handler: Handler::Http(|c, r| Box::pin(crate::pages::consent::authorize(c, r))),
};
pub const OAUTH_TOKEN: Function =
    Function { name: "oauth-token", handler: Handler::Http(|c, r| Box::pin(api::oauth::token_endpoint(c, r))) };
pub const OAUTH_REVOKE: Function =
    Function { name: "oauth-revoke", handler: Handler::Http(|c, r| Box::pin(api::oauth::revoke(c, r))) };
pub const OAUTH_INTROSPECT: Function =
    Function { name: "oauth-introspect", handler: Handler::Http(|c, r| Box::pin(api::oauth::introspect(c, r))) };
pub const OAUTH_CLIENTS_CREATE: Function =
    Function { name: "oauth-clients-create", handler: Handler::Http(|c, r| Box::pin(api::oauth::create_client(c, r))) };
pub const OAUTH_CLIENTS_LIST: Function =
    Function { name: "oauth-clients-list", handler: Handler::Http(|c, r| Box::pin(api::oauth::list_clients(c, r))) };
pub const OAUTH_CLIENT_GET: Function =
    Function { name: "oauth-client-get", handler: Handler::Http(|c, r| Box::pin(api::oauth::get_client(c, r))) };
pub const OAUTH_CLIENT_UPDATE: Function =
    Function { name: "oauth-client-update", handler: Handler::Http(|c, r| Box::pin(api::oauth::update_client(c, r))) };
pub const OAUTH_CLIENT_DELETE: Function =
    Function { name: "oauth-client-delete", handler: Handler::Http(|c, r| Box::pin(api::oauth::delete_client(c, r))) };
pub const LTI_REGISTRATIONS_CREATE: Function = Function {
    name: "lti-registrations-create",
    handler: Handler::Http(|c, r| Box::pin(api::lti::create_registration(c, r))),
};
pub const LTI_REGISTRATIONS_LIST: Function = Function {
    name: "lti-registrations-list",
    handler: Handler::Http(|c, r| Box::pin(api::lti::list_registrations(c, r))),
};
pub const LTI_REGISTRATION_GET: Function = Function {
    name: "lti-registration-get",
    handler: Handler::Http(|c, r| Box::pin(api::lti::get_registration(c, r))),
};
pub const LTI_REGISTRATION_UPDATE: Function = Function {
    name: "lti-registration-update",
    handler: Handler::Http(|c, r| Box::pin(api::lti::update_registration(c, r))),
};
pub const LTI_REGISTRATION_DELETE: Function = Function {
    name: "lti-registration-delete",
    handler: Handler::Http(|c, r| Box::pin(api::lti::delete_registration(c, r))),
};
pub const LTI_LOGIN: Function =
    Function { name: "lti-login", handler: Handler::Http(|c, r| Box::pin(api::lti::login(c, r))) };
pub const LTI_LAUNCH: Function =
    Function { name: "lti-launch", handler: Handler::Http(|c, r| Box::pin(api::lti::launch(c, r))) };
pub const LTI_TOKEN: Function =
    Function { name: "lti-token", handler: Handler::Http(|c, r| Box::pin(api::lti::launch_token(c, r))) };
pub const LTI_JWKS: Function =
    Function { name: "lti-jwks", handler: Handler::Http(|c, r| Box::pin(api::lti::tool_jwks(c, r))) };
pub const LTI_KEY_ROTATE: Function = Function {
    name: "lti-key-rotate",
    handler: Handler::Schedule(|c, e| Box::pin(crate::integrations::lti::tool_key::rotation_step(c, e))),
};
pub const LTI_DEEP_LINKING: Function = Function {
    name: "lti-deep-linking",
    handler: Handler::Http(|c, r| Box::pin(api::lti::deep_linking_response(c, r))),
};
pub const LTI_LINKS_LIST: Function =
    Function { name: "lti-links-list", handler: Handler::Http(|c, r| Box::pin(api::lti::list_links(c, r))) };
pub const LTI_LINK_ASSIGN: Function =
    Function { name: "lti-link-assign", handler: Handler::Http(|c, r| Box::pin(api::lti::assign_link(c, r))) };
pub const LTI_ROSTER_SYNC: Function =
    Function { name: "lti-roster-sync", handler: Handler::Http(|c, r| Box::pin(api::lti::roster_sync(c, r))) };
pub const LTI_ROSTER_SYNC_GET: Function = Function {
    name: "lti-roster-sync-get",
    handler: Handler::Http(|c, r| Box::pin(api::lti::roster_sync_status(c, r))),
};
pub const LTI_ROSTER_SYNC_WORKER: Function = Function {
    name: "lti-roster-sync-worker",
    handler: Handler::Queue(|c, m| Box::pin(crate::integrations::lti::roster::work(c, m))),
};
pub const QUEST_GET: Function =
    Function { name: "quest-get", handler: Handler::Http(|c, r| Box::pin(api::learning::get_quest(c, r))) };
pub const QUEST_TASK_SUBMIT: Function =
    Function { name: "quest-task-submit", handler: Handler::Http(|c, r| Box::pin(api::learning::submit_task(c, r))) };
pub const ME_AUTHORIZATIONS: Function = Function {
    name: "me-authorizations",
    handler: Handler::Http(|c, r| Box::pin(api::oauth::my_authorizations(c, r))),
};
pub const ME_AUTHORIZATION_REVOKE: Function = Function {
    name: "me-authorization-revoke",
    handler: Handler::Http(|c, r| Box::pin(api::oauth::revoke_authorization(c, r))),
};

/// Every function, for the dev gateway and the consistency test.
pub const ALL: &[Function] = &[
    HEALTH,
    AUTH_ME,
    AUTH_REFRESH,
    AUTH_LOGOUT,
    ADMIN_QUESTS_CREATE,
    ADMIN_QUESTS_LIST,
    ADMIN_BADGES_CREATE,
    COMPLETIONS_GRADE,
    ME_QUESTS,
    SPARK_SSO,
    SPARK_TOKEN,
    SPARK_WEBHOOK_SUBMISSION,
    SPARK_SUBMISSION_WORKER,
    SPARK_PENDING_SUBMISSIONS,
    SPARK_PENDING_EXPIRY,
    GRADE_PASSBACK,
    WEBHOOKS_SUBSCRIPTIONS_CREATE,
    WEBHOOKS_SUBSCRIPTIONS_LIST,
    WEBHOOKS_SUBSCRIPTION_GET,
    WEBHOOKS_SUBSCRIPTION_UPDATE,
    WEBHOOKS_SUBSCRIPTION_DELETE,
    WEBHOOKS_DELIVERIES_LIST,
    WEBHOOKS_DELIVERY_REDELIVER,
    WEBHOOKS_TEST,
    WEBHOOK_DELIVER,
    CLEVER_DISTRICTS_PUT,
    CLEVER_DISTRICTS_LIST,
    CLEVER_SYNC_REQUEST,
    CLEVER_SYNC_HISTORY,
    CLEVER_HEALTH,
    CLEVER_HEALTH_PROBE,
    CLEVER_SYNC_SCHEDULER,
    CLEVER_SYNC_WORKER,
    EVENTS_DISPATCH,
    OUTBOX_RELAY,
    AUTH_EMAIL_START,
    AUTH_EMAIL_VERIFY,
    OBSERVERS_INVITATIONS_CREATE,
    OBSERVERS_INVITATIONS_LIST,
    OBSERVERS_INVITATION_CANCEL,
    OBSERVERS_INVITATION_ACCEPT,
    OBSERVERS_PENDING,
    OBSERVERS_LIST,
    OBSERVERS_UPDATE,
    OBSERVERS_REMOVE,
    OBSERVERS_STUDENTS,
    OBSERVERS_PORTFOLIO,
    OBSERVERS_COMMENTS_CREATE,
    OBSERVERS_COMMENTS_LIST,
    ME_COMMENTS,
    ME_COMMENT_UPDATE,
    PAGE_SIGN_IN,
    PAGE_SIGN_IN_CONFIRM,
    PAGE_INVITATION,
    EMAIL_SEND,
    OAUTH_METADATA,
    OAUTH_JWKS,
    OAUTH_AUTHORIZE,
    OAUTH_TOKEN,
    OAUTH_REVOKE,
    OAUTH_INTROSPECT,
    OAUTH_CLIENTS_CREATE,
    OAUTH_CLIENTS_LIST,
    OAUTH_CLIENT_GET,
    OAUTH_CLIENT_UPDATE,
    OAUTH_CLIENT_DELETE,
    LTI_REGISTRATIONS_CREATE,
    LTI_REGISTRATIONS_LIST,
    LTI_REGISTRATION_GET,
    LTI_REGISTRATION_UPDATE,
    LTI_REGISTRATION_DELETE,
    LTI_LOGIN,
    LTI_LAUNCH,
    LTI_TOKEN,
    LTI_JWKS,
    LTI_KEY_ROTATE,
    LTI_DEEP_LINKING,
    LTI_LINKS_LIST,
    LTI_LINK_ASSIGN,
    LTI_ROSTER_SYNC,
    LTI_ROSTER_SYNC_GET,
    LTI_ROSTER_SYNC_WORKER,
    QUEST_GET,
    QUEST_TASK_SUBMIT,
    ME_AUTHORIZATIONS,
    ME_AUTHORIZATION_REVOKE,
];

pub fn by_name(name: &str) -> Option<Function> {
    ALL.iter().find(|f| f.name == name).copied()
}

/// Consumer of the events queue: hands each event to what follows from it (grade passback, webhook
/// deliveries, Spark's submissions kept for a newly mapped assignment), then records it once in its
/// organization's activity log. Fan-out first, record last: a failure retries the whole event, and
/// every step is idempotent.
async fn dispatch_event(ctx: Arc<Context>, message: SqsMessage) -> Result<(), QueueError> {
    let event = events::parse(&message)?;
    crate::integrations::passback::enqueue(&ctx, &event).await?;
    crate::integrations::webhooks::delivery::fan_out(&ctx, &event).await?;
    crate::integrations::spark::submissions::release_pending(&ctx, &event).await?;
    events::record(&ctx, &event).await
}

/// Consumer of the email queue: sends one queued email by the part of the hub that asked for it.
async fn send_email(ctx: Arc<Context>, message: SqsMessage) -> Result<(), QueueError> {
    let sent = match crate::runtime::jobs::parse(&message)? {
        EmailJob::SignIn { email, next, browser } => {
            crate::domain::auth::email_sign_in::send_link(&ctx, &email, next.as_deref(), browser.as_deref()).await
        }
        EmailJob::Invitation { invitation_id } => {
            crate::integrations::observers::invitations::send_invitation(&ctx, &invitation_id).await
        }
    };
    crate::runtime::email::jobs::outcome(sent)
}
