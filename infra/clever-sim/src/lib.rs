//! A local Clever API for tests, benchmarks and `make dev`: district tokens, the Data API v3.0 with
//! paging, the Events API, rate-limit headers, and faults on demand (429 bursts, 5xx, stalls, token
//! rotation, events disabled or expired, failure midway through a sync).

pub mod server;
pub mod world;

pub use server::{Faults, RateLimit, Simulator};
pub use world::{DistrictSpec, World};
