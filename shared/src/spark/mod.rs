//! Spark LMS: single sign-on (signed JWT → one-time code → token exchange), signed submission
//! webhooks (inline, or queued for the submission worker when files come by URL) (grades go back through [`crate::passback`]).

pub mod sso;
pub mod submission_jobs;
pub mod webhook;
