//! Spark LMS: single sign-on (signed JWT → one-time code → token exchange). Submission webhooks and
//! grade passback come next (issue 3).

pub mod passback;
pub mod sso;
pub mod webhook;
