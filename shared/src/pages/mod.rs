//! The few HTML pages the hub serves itself (DESIGN.md §3b): server-rendered, no script, one
//! stylesheet allowed by its hash in a strict Content-Security-Policy, CSRF tokens on every form,
//! never framed, never cached, and no referrer (their URLs may carry a one-time code).

pub mod consent;
pub mod invitation;
pub mod sign_in;

/// The form of the pages that act on an emailed code (confirm a sign-in, accept an invitation), as
/// the OpenAPI document describes it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CodeForm {
    code: String,
    csrf: String,
}
