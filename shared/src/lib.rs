//! `hub`: every behaviour of the integration hub. The Lambda mains in `functions/` only pick a
//! [`functions::Function`] and hand it to [`entry`]; the dev gateway in `infra/` serves the same
//! functions in-process, so what runs locally is what runs on Lambda.

pub mod api;
pub mod auth;
pub mod clever;
pub mod config;
pub mod context;
pub mod crypto;
pub mod email;
pub mod entry;
pub mod error;
pub mod events;
pub mod files;
pub mod functions;
pub mod http;
pub mod jobs;
pub mod learning;
pub mod logging;
pub mod lti;
pub mod oauth;
pub mod observers;
pub mod outbound;
pub mod pages;
pub mod passback;
pub mod ratelimit;
pub mod secrets;
pub mod spark;
pub mod store;
pub mod tenancy;
pub mod webhooks;

pub use config::Config;
pub use context::Context;
pub use error::ApiError;
