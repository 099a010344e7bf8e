//! What a function runs with: the context built once per cold start, the event bus and its outbox,
//! job queues, the email sender and rate limits. Queues, the bus and the sender know nothing of their
//! consumers: the functions catalogue (`functions.rs`) wires consumers to their queues.

pub mod breaker;
pub mod context;
pub mod email;
pub mod events;
pub mod jobs;
pub mod ratelimit;
