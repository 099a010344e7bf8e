//! `hub`: every behaviour of the integration hub. The Lambda mains in `functions/` only pick a
//! [`functions::Function`] and hand it to [`entry`]; the dev gateway in `infra/` serves the same
//! functions in-process, so what runs locally is what runs on Lambda.
//!
//! # Layers
//! Dependencies run one way, down this list (DESIGN.md §1a); a module may use its own layer and the
//! ones below it, never one above, and no import cycle exists anywhere (the `layers` test checks both
//! over the `crate::` and `super::` paths of every file):
//!
//! | layer | modules | what it is |
//! |---|---|---|
//! | wiring | [`functions`], [`entry`] | the catalogue of Lambda functions: routes, workers and schedules, and which consumer reads which queue |
//! | surface | [`api`], [`pages`] | HTTP endpoints and the pages the hub serves |
//! | integrations | [`integrations`] (`spark`, `lti`, `clever`, `oauth`, `observers`, `webhooks`, `passback`) | one outside party each |
//! | core | [`domain`] (`auth`, `learning`, `tenancy`) | accounts, learning, tenancy: what integrations feed; it speaks to them only by domain events |
//! | runtime | [`runtime`] (`context`, `events`, `jobs`, `email`, `ratelimit`) | what a function runs with; queues and the bus know no consumer |
//! | store | [`store`] | DynamoDB items and key design; it owns its record types |
//! | support | [`support`] (`config`, `crypto`, `http`, `html`, `outbound`, `secrets`, `logging`, `error`, `text`) | leaf helpers |

pub mod api;
pub mod domain;
pub mod entry;
pub mod functions;
pub mod integrations;
#[cfg(test)]
mod layers;
pub mod pages;
pub mod runtime;
pub mod store;
pub mod support;

pub use runtime::context::Context;
pub use support::config::Config;
pub use support::error::{ApiError, ErrorBody};
