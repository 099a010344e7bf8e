//! The catalogue of Lambda functions: one entry per binary in `functions/src/bin`, named as in
//! template.yaml. Mains pick their entry; the dev gateway looks entries up by name. A consistency
//! test keeps this list, the binaries, template.yaml and `events/` in agreement.

use std::sync::Arc;

use lambda_http::{BoxFuture, Request};

use crate::Context;
use crate::api;
use crate::http::ApiResult;

/// An HTTP endpoint behind API Gateway (HTTP API, payload v2).
pub type HttpHandler = fn(Arc<Context>, Request) -> BoxFuture<'static, ApiResult>;

#[derive(Clone, Copy)]
pub enum Handler {
    Http(HttpHandler),
}

#[derive(Clone, Copy)]
pub struct Function {
    /// The binary name, also the `Binary` build property in template.yaml.
    pub name: &'static str,
    pub handler: Handler,
}

pub const HEALTH: Function = Function {
    name: "health",
    handler: Handler::Http(|c, r| Box::pin(api::health::health(c, r))),
};
pub const AUTH_ME: Function = Function {
    name: "auth-me",
    handler: Handler::Http(|c, r| Box::pin(api::auth::me(c, r))),
};
pub const AUTH_REFRESH: Function = Function {
    name: "auth-refresh",
    handler: Handler::Http(|c, r| Box::pin(api::auth::refresh(c, r))),
};
pub const AUTH_LOGOUT: Function = Function {
    name: "auth-logout",
    handler: Handler::Http(|c, r| Box::pin(api::auth::logout(c, r))),
};

/// Every function, for the dev gateway and the consistency test.
pub const ALL: &[Function] = &[HEALTH, AUTH_ME, AUTH_REFRESH, AUTH_LOGOUT];

pub fn by_name(name: &str) -> Option<Function> {
    ALL.iter().find(|f| f.name == name).copied()
}
