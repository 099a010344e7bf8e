//! Spark LMS: single sign-on (signed JWT → one-time code → token exchange), signed submission
//! webhooks (inline, or queued for the submission worker when files come by URL) (grades go back through grade passback).

pub mod pending;
pub mod sso;
pub mod submission_jobs;
pub mod submissions;
pub mod webhook;
