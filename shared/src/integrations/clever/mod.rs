//! Clever roster sync: [`client`] (district tokens, Data API pages, events, Clever's retry rules),
//! [`roster`] (what we keep of each entity, normalized comparison), [`events`] (what a page of events
//! changes), [`sync`] (full and incremental school syncs with history), [`metrics`] (sync results as
//! CloudWatch metrics) and [`summary`] (a run's summary on SNS).

pub mod client;
pub mod districts;
pub mod events;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod roster;
pub mod summary;
pub mod sync;
