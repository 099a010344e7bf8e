//! HTTP endpoints. Each handler takes the shared context and a request and returns a response or
//! an [`crate::ApiError`]; routing is API Gateway's job (template.yaml), one function per route.

pub mod auth;
pub mod clever;
pub mod health;
pub mod learning;
pub mod lti;
pub mod oauth;
pub mod observers;
pub mod openapi;
pub mod spark;
pub mod webhooks;

/// `{"status": ...}`: what an action did (`logged_out`, `graded`...).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct StatusBody {
    pub status: String,
}
