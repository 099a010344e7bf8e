//! Circuit breakers of outbound destinations (the LMS of one registration, Spark's API, a webhook
//! receiver, a file host), and each destination's share of the workers.
//!
//! **Breaker.** A destination that failed or hung [`FAILURES_TO_OPEN`] times within [`WINDOW_SECS`]
//! is left alone for a pause of [`FIRST_PAUSE_SECS`], doubled each time it opens again without a
//! success between, at most [`MAX_PAUSE_SECS`]. Its jobs wait out the pause without calling it, so
//! they hold no worker while every other organization's jobs flow. After a pause one job at a time is
//! the probe (the others wait up to [`PROBE_SECS`] more): a success closes the breaker; a failure
//! opens it again at once.
//!
//! **Share.** Before a breaker can know that a destination hangs, its calls must time out; so each
//! share (a destination, or all the destinations of one owner) has at most a few calls in flight at
//! once, a share of its worker's instances. The jobs past it wait on the queue, longer each time, and
//! a destination that starts hanging holds no more than its share while its first failures are
//! counted.

use aws_lambda_events::sqs::SqsMessage;

use crate::Context;
use crate::runtime::jobs::{self, QueueError};
use crate::store::breakers::BreakerState;

pub const FAILURES_TO_OPEN: i64 = 3;
pub const WINDOW_SECS: i64 = 60;
pub const FIRST_PAUSE_SECS: i64 = 60;
pub const MAX_PAUSE_SECS: i64 = 900;
/// How long a job waits for a probe's outcome.
pub const PROBE_SECS: i64 = 30;
/// The first wait on the queue of a job whose share is full (after [`BUSY_RETRIES_MS`] in the
/// worker); each later one is as long as it has waited so far, plus a tenth, at most [`PROBE_SECS`].
pub const BUSY_SECS: i64 = 2;
/// The pauses in the worker of a job whose share is full, the first time only: a healthy
/// destination's calls end within moments, and a burst need not go round the queue.
const BUSY_RETRIES_MS: [u64; 3] = [50, 150, 300];

/// Where a job's calls go.
#[derive(Clone, Debug)]
pub struct Destination {
    /// The breaker's key: what fails together (`lti:<registration>`, `webhook:<org>:<host:port>`...).
    pub breaker: String,
    /// The share's key: what may hold at most `max_in_flight` calls at once (the destination itself,
    /// or all of one organization's receivers).
    pub share: String,
    pub max_in_flight: i64,
    /// The longest a job holds its ticket (its calls' budget): a probe has the destination to itself
    /// that long.
    pub longest_call_secs: i64,
}

impl Destination {
    /// A destination that is its own share.
    pub fn new(key: String, max_in_flight: i64, longest_call_secs: i64) -> Self {
        Self { share: key.clone(), breaker: key, max_in_flight, longest_call_secs }
    }
}

/// What a job may do about its destination.
#[derive(Debug)]
pub enum Admission {
    /// Call it; report how it went with [`record`], or give the place back with [`release`].
    Call(Ticket),
    /// The destination is paused for this many seconds more.
    Paused(i64),
    /// Its share has its most calls in flight.
    Busy,
}

/// A call's permission, and the breaker as it stood.
#[derive(Debug)]
pub struct Ticket {
    destination: Destination,
    state: BreakerState,
    /// This call is the probe after a pause, which claimed the destination until this time.
    probe: Option<i64>,
    /// The minute whose count of calls in flight holds this call.
    started_in: Option<i64>,
}

/// Whether a job may call `destination` now. A breaker or share that cannot be read lets no call
/// through: the job waits a moment on the queue (its destination is not to blame).
pub async fn admit(ctx: &Context, destination: &Destination) -> Admission {
    let now = ctx.clock.now();
    let store = ctx.store();
    let key = destination.breaker.as_str();
    let state = match store.breaker(key, now).await {
        Ok(state) => state,
        Err(e) => {
            tracing::warn!(destination = key, error = %e, "breaker not read; waiting");
            return Admission::Busy;
        }
    };
    let probe = match state.open_until {
        Some(until) if until > now => return Admission::Paused(until - now),
        // Paused before: one job probes, the others wait for its outcome.
        Some(_) => {
            let until = now + destination.longest_call_secs;
            match store.claim_breaker_probe(key, now, until).await {
                Ok(true) => Some(until),
                Ok(false) => return Admission::Paused(PROBE_SECS),
                Err(e) => {
                    tracing::warn!(destination = key, error = %e, "breaker probe not claimed; waiting");
                    return Admission::Busy;
                }
            }
        }
        None => None,
    };
    // Every call, the probe too, takes a place in its share.
    let in_flight_before = if destination.share == destination.breaker {
        Ok(state.calls_last_minute)
    } else {
        store.breaker(&destination.share, now).await.map(|s| s.calls_last_minute)
    };
    let minute = now / 60;
    let taken = match in_flight_before {
        Ok(calls) if calls < destination.max_in_flight => {
            store.start_breaker_call(&destination.share, minute, destination.max_in_flight - calls, now).await
        }
        Ok(_) => Ok(false),
        Err(e) => Err(e),
    };
    match taken {
        Ok(true) => {
            Admission::Call(Ticket { destination: destination.clone(), state, probe, started_in: Some(minute) })
        }
        outcome => {
            if let Err(e) = outcome {
                tracing::warn!(share = destination.share, error = %e, "call in flight not counted; waiting");
            }
            if let Some(until) = probe {
                release_probe(ctx, key, until).await;
            }
            Admission::Busy
        }
    }
}

/// [`admit`] for a queued job: `Some(ticket)` to call the destination now; `None` when the job has
/// been put back on `queue_url` to wait (its receives untouched; the caller reports the message done).
/// A job that has waited [`jobs::MAX_DEFERRAL_SECS`] in all is hidden for the wait instead and
/// reported failed, so its receives count toward the dead-letter queue and its alarm.
pub async fn admit_job(
    ctx: &Context,
    destination: &Destination,
    queue_url: &str,
    message: &SqsMessage,
) -> Result<Option<Ticket>, QueueError> {
    let waited = jobs::deferred_for(ctx, message);
    let mut admission = admit(ctx, destination).await;
    if waited == 0 {
        for pause_ms in BUSY_RETRIES_MS {
            if !matches!(admission, Admission::Busy) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
            admission = admit(ctx, destination).await;
        }
    }
    let base = match admission {
        Admission::Call(ticket) => return Ok(Some(ticket)),
        Admission::Paused(seconds) => seconds,
        // A destination whose calls hang keeps its share full until its breaker opens: its jobs back
        // off meanwhile.
        Admission::Busy => waited.clamp(BUSY_SECS, PROBE_SECS * 9 / 10),
    };
    // Jobs set aside together come back apart.
    let seconds = base + rand::random_range(0..=base / 10);
    if jobs::defer(ctx, queue_url, message, seconds).await? {
        tracing::info!(destination = destination.breaker, seconds, "job deferred: its destination is paused or busy");
        return Ok(None);
    }
    jobs::hide(ctx, queue_url, message, seconds).await;
    tracing::warn!(destination = destination.breaker, "job waited a day for its destination; counted as a failure");
    Err(QueueError(format!("{} has been paused or busy for a day", destination.breaker)))
}

/// A call that could not be tried (our own failure, not the destination's): nothing is counted, and a
/// probe leaves the destination to the next job.
pub async fn release(ctx: &Context, ticket: Ticket) {
    finish(ctx, &ticket).await;
    if let Some(until) = ticket.probe {
        release_probe(ctx, &ticket.destination.breaker, until).await;
    }
}

/// Gives up this job's probe claim (and no later job's).
async fn release_probe(ctx: &Context, destination: &str, until: i64) {
    if let Err(e) = ctx.store().release_breaker_probe(destination, until).await {
        tracing::warn!(destination, error = %e, "breaker probe not released");
    }
}

/// Records how a call went: a success closes the breaker; failures open it (see the module doc).
/// The outcome is counted before the call's place is freed, so no job takes the place of a failed
/// call before its failure can open the breaker.
pub async fn record(ctx: &Context, ticket: Ticket, succeeded: bool) {
    let destination = ticket.destination.breaker.as_str();
    let state = &ticket.state;
    let store = ctx.store();
    let now = ctx.clock.now();
    let outcome = if succeeded {
        let untouched = state.open_until.is_none() && state.failures == 0 && state.openings == 0;
        // A call that started before the breaker opened cannot close it: only the probe's success does.
        if untouched { Ok(()) } else { store.close_breaker(destination, ticket.probe).await }
    } else {
        let failures = if state.openings > 0 {
            Ok(FAILURES_TO_OPEN)
        } else {
            store.count_breaker_failure(destination, now, now - WINDOW_SECS).await
        };
        match failures {
            Ok(failures) if failures >= FAILURES_TO_OPEN => {
                let pause = (FIRST_PAUSE_SECS << state.openings.clamp(0, 8)).min(MAX_PAUSE_SECS);
                store.open_breaker(destination, now, now + pause).await.map(|opened| {
                    if opened {
                        tracing::warn!(
                            alert = "destination_paused",
                            destination,
                            pause,
                            "a destination keeps failing or hanging: its jobs wait"
                        );
                    }
                })
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    };
    if let Err(e) = outcome {
        tracing::warn!(destination, error = %e, "breaker not updated");
    }
    finish(ctx, &ticket).await;
}

/// Takes the call back from its minute's count of calls in flight.
async fn finish(ctx: &Context, ticket: &Ticket) {
    if let Some(minute) = ticket.started_in
        && let Err(e) = ctx.store().finish_breaker_call(&ticket.destination.share, minute).await
    {
        tracing::warn!(share = ticket.destination.share, error = %e, "call in flight not taken back");
    }
}
