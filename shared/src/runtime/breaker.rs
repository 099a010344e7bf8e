//! Circuit breakers of outbound destinations (the LMS of one registration, Spark's API, a webhook
//! receiver). A destination that failed or hung [`FAILURES_TO_OPEN`] times within [`WINDOW_SECS`]
//! is left alone for a pause of [`FIRST_PAUSE_SECS`], doubled each time it opens again without a
//! success between, at most [`MAX_PAUSE_SECS`]. Its jobs wait out the pause without calling it, so
//! they hold no worker while every other organization's jobs flow. After a pause one job at a time is
//! the probe (the others wait up to [`PROBE_SECS`] more): a success closes the breaker; a failure
//! opens it again at once.
//!
//! Before a breaker can know that a destination hangs, its calls must time out; so each destination
//! also has at most a few calls in flight at once (the caller's `max_in_flight`, a share of its
//! workers): the jobs past it wait [`BUSY_SECS`] on the queue, and a destination that starts hanging
//! holds no more than that share while its first failures are counted.

use aws_lambda_events::sqs::SqsMessage;

use crate::Context;
use crate::runtime::jobs::{self, QueueError};
use crate::store::breakers::BreakerState;

pub const FAILURES_TO_OPEN: i64 = 3;
pub const WINDOW_SECS: i64 = 60;
pub const FIRST_PAUSE_SECS: i64 = 60;
pub const MAX_PAUSE_SECS: i64 = 900;
/// How long a probe has the destination to itself (longer than any job's calls take).
pub const PROBE_SECS: i64 = 30;
/// How long a job first waits on the queue when its destination has its most calls in flight
/// already (after [`BUSY_RETRIES_MS`] in the worker); each time again, as long as it waited so far.
pub const BUSY_SECS: i64 = 1;
/// The pauses of a queued job, in the worker, before it waits [`BUSY_SECS`] on the queue.
const BUSY_RETRIES_MS: [u64; 3] = [50, 150, 300];

/// What a job may do about its destination.
#[derive(Debug)]
pub enum Admission {
    /// Call it; report how it went with [`record`].
    Call(Ticket),
    /// The destination is paused for this many seconds more.
    Wait(i64),
}

/// A call's permission, and the breaker as it stood.
#[derive(Clone, Debug)]
pub struct Ticket {
    destination: String,
    state: BreakerState,
    /// This call is the probe after a pause.
    probe: bool,
    /// The minute whose count of calls in flight holds this call.
    started_in: Option<i64>,
}

/// Whether a job may call `destination` now, with at most `max_in_flight` calls to it at once. A
/// store failure lets the call through: the breaker protects others' throughput, it never stops a
/// job on its own failure.
pub async fn admit(ctx: &Context, destination: &str, max_in_flight: i64) -> Admission {
    let now = ctx.clock.now();
    let state = match ctx.store().breaker(destination, now).await {
        Ok(state) => state,
        Err(e) => {
            tracing::warn!(destination, error = %e, "breaker not read; calling");
            BreakerState::default()
        }
    };
    let ticket =
        |probe, started_in| Ticket { destination: destination.to_string(), state: state.clone(), probe, started_in };
    match state.open_until {
        Some(until) if until > now => Admission::Wait(until - now),
        // Paused before: one job probes, the others wait for its outcome.
        Some(_) => match ctx.store().claim_breaker_probe(destination, now, now + PROBE_SECS).await {
            Ok(true) => Admission::Call(ticket(true, None)),
            Ok(false) => Admission::Wait(PROBE_SECS),
            Err(e) => {
                tracing::warn!(destination, error = %e, "breaker probe not claimed; calling");
                Admission::Call(ticket(true, None))
            }
        },
        None => {
            let minute = now / 60;
            let room = max_in_flight - state.calls_last_minute;
            if room <= 0 {
                return Admission::Wait(BUSY_SECS);
            }
            match ctx.store().start_breaker_call(destination, minute, room, now).await {
                Ok(true) => Admission::Call(ticket(false, Some(minute))),
                Ok(false) => Admission::Wait(BUSY_SECS),
                Err(e) => {
                    tracing::warn!(destination, error = %e, "call in flight not counted; calling");
                    Admission::Call(ticket(false, None))
                }
            }
        }
    }
}

/// [`admit`] for a queued job: `Some(ticket)` to call the destination now; `None` when it is paused
/// and the job has been put back on `queue_url` for the rest of the pause (its receives untouched;
/// the caller reports the message done). A job paused for [`jobs::MAX_DEFERRAL_SECS`] in all is let
/// through, so its own retry schedule, not the breaker, decides when it gives up.
pub async fn admit_job(
    ctx: &Context,
    destination: &str,
    max_in_flight: i64,
    queue_url: &str,
    message: &SqsMessage,
) -> Result<Option<Ticket>, QueueError> {
    let mut admission = admit(ctx, destination, max_in_flight).await;
    // A destination at its most calls usually frees a place within moments (its calls are quick);
    // a short wait here keeps a healthy burst from a round trip through the queue.
    for pause_ms in BUSY_RETRIES_MS {
        if !matches!(admission, Admission::Wait(BUSY_SECS)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
        admission = admit(ctx, destination, max_in_flight).await;
    }
    match admission {
        Admission::Call(ticket) => Ok(Some(ticket)),
        Admission::Wait(seconds) => {
            // Still busy: a job that waited before waits as long again (a destination whose calls
            // hang keeps its jobs busy until its breaker opens; they back off meanwhile).
            let seconds = if seconds == BUSY_SECS {
                jobs::deferred_for(ctx, message).clamp(BUSY_SECS, PROBE_SECS)
            } else {
                seconds
            };
            if jobs::defer(ctx, queue_url, message, seconds).await? {
                tracing::info!(destination, seconds, "job deferred: its destination is paused");
                return Ok(None);
            }
            let state = ctx.store().breaker(destination, ctx.clock.now()).await.unwrap_or_default();
            Ok(Some(Ticket { destination: destination.to_string(), state, probe: false, started_in: None }))
        }
    }
}

/// A call that could not be tried (our own failure, not the destination's): nothing is counted, and a
/// probe leaves the destination to the next job.
pub async fn release(ctx: &Context, ticket: Ticket) {
    finish(ctx, &ticket).await;
    if ticket.probe
        && let Err(e) = ctx.store().release_breaker_probe(&ticket.destination).await
    {
        tracing::warn!(destination = ticket.destination, error = %e, "breaker probe not released");
    }
}

/// Records how a call went: a success closes the breaker; failures open it (see the module doc).
pub async fn record(ctx: &Context, ticket: Ticket, succeeded: bool) {
    // The outcome is counted before the call's place is freed, so no job takes the place of a
    // failed call before its failure can open the breaker.
    let finished = Ticket { state: BreakerState::default(), ..ticket.clone() };
    let Ticket { destination, state, .. } = ticket;
    let store = ctx.store();
    let now = ctx.clock.now();
    let outcome = if succeeded {
        let closed = BreakerState { calls_last_minute: state.calls_last_minute, ..BreakerState::default() };
        if state == closed { Ok(()) } else { store.close_breaker(&destination).await }
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
    finish(ctx, &finished).await;
}

/// Takes the call back from its minute's count of calls in flight.
async fn finish(ctx: &Context, ticket: &Ticket) {
    if let Some(minute) = ticket.started_in
        && let Err(e) = ctx.store().finish_breaker_call(&ticket.destination, minute).await
    {
        tracing::warn!(destination = ticket.destination, error = %e, "call in flight not taken back");
    }
}
