//! Circuit breakers of outbound destinations (the LMS of one registration, Spark's API, a webhook
//! receiver). A destination that failed or hung [`FAILURES_TO_OPEN`] times within [`WINDOW_SECS`]
//! is left alone for a pause of [`FIRST_PAUSE_SECS`], doubled each time it opens again without a
//! success between, at most [`MAX_PAUSE_SECS`]. Its jobs wait out the pause without calling it, so
//! they hold no worker while every other organization's jobs flow. After a pause one job at a time is
//! the probe (the others wait up to [`PROBE_SECS`] more): a success closes the breaker; a failure
//! opens it again at once.

use crate::Context;
use crate::store::breakers::BreakerState;

pub const FAILURES_TO_OPEN: i64 = 3;
pub const WINDOW_SECS: i64 = 60;
pub const FIRST_PAUSE_SECS: i64 = 60;
pub const MAX_PAUSE_SECS: i64 = 900;
/// How long a probe has the destination to itself (longer than any job's calls take).
pub const PROBE_SECS: i64 = 30;

/// What a job may do about its destination.
#[derive(Debug)]
pub enum Admission {
    /// Call it; report how it went with [`record`].
    Call(Ticket),
    /// The destination is paused for this many seconds more.
    Wait(i64),
}

/// A call's permission, and the breaker as it stood.
#[derive(Debug)]
pub struct Ticket {
    destination: String,
    state: BreakerState,
    /// This call is the probe after a pause.
    probe: bool,
}

/// Whether a job may call `destination` now. A store failure lets the call through: the breaker
/// protects others' throughput, it never stops a job on its own failure.
pub async fn admit(ctx: &Context, destination: &str) -> Admission {
    let state = match ctx.store().breaker(destination).await {
        Ok(state) => state,
        Err(e) => {
            tracing::warn!(destination, error = %e, "breaker not read; calling");
            BreakerState::default()
        }
    };
    let now = ctx.clock.now();
    let ticket = |probe| Ticket { destination: destination.to_string(), state: state.clone(), probe };
    match state.open_until {
        Some(until) if until > now => Admission::Wait(until - now),
        // Paused before: one job probes, the others wait for its outcome.
        Some(_) => match ctx.store().claim_breaker_probe(destination, now, now + PROBE_SECS).await {
            Ok(true) => Admission::Call(ticket(true)),
            Ok(false) => Admission::Wait(PROBE_SECS),
            Err(e) => {
                tracing::warn!(destination, error = %e, "breaker probe not claimed; calling");
                Admission::Call(ticket(true))
            }
        },
        None => Admission::Call(ticket(false)),
    }
}

/// A call that could not be tried (our own failure, not the destination's): nothing is counted, and a
/// probe leaves the destination to the next job.
pub async fn release(ctx: &Context, ticket: Ticket) {
    if ticket.probe
        && let Err(e) = ctx.store().release_breaker_probe(&ticket.destination).await
    {
        tracing::warn!(destination = ticket.destination, error = %e, "breaker probe not released");
    }
}

/// Records how a call went: a success closes the breaker; failures open it (see the module doc).
pub async fn record(ctx: &Context, ticket: Ticket, succeeded: bool) {
    let Ticket { destination, state, .. } = ticket;
    let store = ctx.store();
    let now = ctx.clock.now();
    let outcome = if succeeded {
        if state == BreakerState::default() { Ok(()) } else { store.close_breaker(&destination).await }
    } else {
        let reopen = state.openings > 0;
        let failures = if reopen {
            Ok(FAILURES_TO_OPEN)
        } else {
            store.count_breaker_failure(&destination, now, now - WINDOW_SECS).await
        };
        match failures {
            Ok(failures) if failures >= FAILURES_TO_OPEN => {
                let pause = (FIRST_PAUSE_SECS << state.openings.clamp(0, 8)).min(MAX_PAUSE_SECS);
                match store.open_breaker(&destination, now, now + pause).await {
                    Ok(true) => {
                        tracing::warn!(
                            alert = "destination_paused",
                            destination,
                            pause,
                            "a destination keeps failing or hanging: its jobs wait"
                        );
                        Ok(())
                    }
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    };
    if let Err(e) = outcome {
        tracing::warn!(destination, error = %e, "breaker not updated");
    }
}
