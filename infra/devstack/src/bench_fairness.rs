//! `devstack bench-fairness`: what a hanging neighbour costs a healthy organization. Webhook
//! deliveries of organization `maple` to a receiver that answers at once go through the delivery
//! worker (`workers` concurrent instances, one delivery each, as the template's event source), first
//! alone, then queued behind `neighbour` deliveries of organization `lincoln` to a receiver that never
//! answers (every attempt waits for the 15 s timeout). The breaker of Lincoln's receiver
//! (`hub::runtime::breaker`) is what keeps Maple's figures close to the first run's.
//!
//! `devstack bench-outbound-cache`: the memory of the per-host outbound clients a warm instance keeps
//! when launches name ever new hosts (`lineitem`, `memberships_url`): resident memory after each
//! step of `hosts` distinct hosts, with the cache's bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;

use crate::bench::{BenchStack, admin_of, bench_stack, counting_receiver, function_context, tarpit};
use crate::template::Template;

pub struct Options {
    /// Maple's deliveries in each run.
    pub deliveries: usize,
    /// Lincoln's deliveries queued ahead of Maple's in the second run.
    pub neighbour: usize,
    /// Concurrent worker instances (the template's `MaximumConcurrency`).
    pub workers: usize,
}

pub async fn run(template: &Template, sdk: &SdkConfig, options: Options) -> anyhow::Result<()> {
    let BenchStack { gateway, stack, .. } = bench_stack(template, sdk, &[]).await?;
    let (healthy, received) = counting_receiver().await?;
    let (hanging, held) = tarpit().await?;
    let admin_api = function_context(template, &stack, sdk, "webhooks-subscriptions-create")?;
    for (org, url) in [("maple", healthy), ("lincoln", format!("{hanging}/hooks"))] {
        let new = serde_json::from_value(json!({"url": url, "event_types": ["*"]}))?;
        hub::integrations::webhooks::subscriptions::create(&admin_api, &admin_of(org), new)
            .await
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    }
    let dispatch = function_context(template, &stack, sdk, "events-dispatch")?;
    let fan_out = |org: &'static str, count: usize| {
        let dispatch = &dispatch;
        async move {
            for i in 0..count {
                let event = hub::runtime::events::DomainEvent::new(
                    "task.completed",
                    Some(org.into()),
                    json!({"user_id": format!("u-{i}"), "task_id": "t", "xp_awarded": 10}),
                    dispatch.clock.now(),
                );
                hub::integrations::webhooks::delivery::fan_out(dispatch, &event)
                    .await
                    .map_err(|e| anyhow::anyhow!(e.to_string()))?;
            }
            anyhow::Ok(())
        }
    };
    // Each worker instance polls until Maple's deliveries of the run have all arrived.
    let deliver_until = |target: usize| {
        let (gateway, received) = (gateway.clone(), received.clone());
        async move {
            let started = Instant::now();
            let workers = (0..options.workers.max(1)).map(|_| {
                let (gateway, received) = (gateway.clone(), received.clone());
                async move {
                    while received.load(Ordering::SeqCst) < target {
                        gateway.poll("webhook-deliver", 1).await?;
                    }
                    anyhow::Ok(())
                }
            });
            let first = async {
                while received.load(Ordering::SeqCst) <= target - options.deliveries {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                started.elapsed()
            };
            let (done, first) = tokio::join!(futures_util::future::try_join_all(workers), first);
            done?;
            anyhow::Ok((first, started.elapsed()))
        }
    };

    println!(
        "{:<30} {:>7} {:>12} {:>9} {:>12} {:>14}",
        "run (webhook deliveries)", "maple", "first after", "all after", "maple per s", "lincoln calls"
    );
    fan_out("maple", options.deliveries).await?;
    let alone = deliver_until(options.deliveries).await?;
    row("maple alone", options.deliveries, alone, &held);

    fan_out("lincoln", options.neighbour).await?;
    fan_out("maple", options.deliveries).await?;
    let shared = deliver_until(2 * options.deliveries).await?;
    row(&format!("behind {} hanging (lincoln)", options.neighbour), options.deliveries, shared, &held);

    let sqs = aws_sdk_sqs::Client::new(sdk);
    let queued = messages(&sqs, &stack.refs["WebhookDeliveryQueue"]).await?;
    let dead = messages(&sqs, &stack.refs["WebhookDeliveryDeadLetterQueue"]).await?;
    let (pending, succeeded, failed) = statuses(&dispatch, "lincoln").await?;
    println!(
        "lincoln's {} deliveries: {pending} pending (deferred or in backoff), {succeeded} succeeded, {failed} failed; \
         messages on the queue: {queued}; dead letters: {dead}",
        options.neighbour
    );
    let (pending, succeeded, failed) = statuses(&dispatch, "maple").await?;
    println!("maple's deliveries: {pending} pending, {succeeded} succeeded, {failed} failed");
    println!("slowdown of maple behind a hanging neighbour: {:.2}x", shared.1.as_secs_f64() / alone.1.as_secs_f64());
    Ok(())
}

fn row(name: &str, count: usize, (first, all): (Duration, Duration), held: &AtomicUsize) {
    let seconds = all.as_secs_f64();
    println!(
        "{name:<30} {count:>7} {:>10.2} s {seconds:>7.2} s {:>12.1} {:>14}",
        first.as_secs_f64(),
        count as f64 / seconds,
        held.load(Ordering::SeqCst)
    );
}

/// An organization's deliveries by status: (pending, succeeded, failed).
async fn statuses(ctx: &hub::Context, org: &str) -> anyhow::Result<(usize, usize, usize)> {
    use hub::integrations::webhooks::DeliveryStatus;
    let (mut counts, mut cursor) = ((0, 0, 0), None);
    loop {
        let (page, next) = ctx
            .store()
            .deliveries_of_organization(org, &Default::default(), 100, cursor.as_deref())
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for delivery in page {
            match delivery.status {
                DeliveryStatus::Pending => counts.0 += 1,
                DeliveryStatus::Succeeded => counts.1 += 1,
                DeliveryStatus::Failed => counts.2 += 1,
            }
        }
        match next {
            Some(next) => cursor = Some(next),
            None => return Ok(counts),
        }
    }
}

/// Messages on a queue: visible, in flight and delayed.
pub async fn messages(sqs: &aws_sdk_sqs::Client, queue: &str) -> anyhow::Result<usize> {
    let attributes =
        sqs.get_queue_attributes().queue_url(queue).attribute_names(QueueAttributeName::All).send().await?;
    let attributes = attributes.attributes.unwrap_or_default();
    let counts: Vec<usize> = [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
    ]
    .iter()
    .map(|name| attributes.get(name).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0))
    .collect();
    Ok(counts.iter().sum())
}

/// Resident memory after clients for `hosts` distinct hosts were asked of one context, at steps.
pub fn outbound_cache(hosts: usize) -> anyhow::Result<()> {
    let env: std::collections::HashMap<&str, &str> = [
        ("TABLE_NAME", "bench"),
        ("EVIDENCE_BUCKET", "bench"),
        ("EVENTS_QUEUE_URL", "http://127.0.0.1:1/queue/events"),
        ("ACCESS_TOKEN_SECRET_ID", "access"),
        ("REFRESH_TOKEN_SECRET_ID", "refresh"),
    ]
    .into();
    let config = hub::Config::from_lookup(|k| env.get(k).map(|v| v.to_string()))?;
    let sdk = SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
    let ctx = Arc::new(hub::Context::new(config, sdk));
    println!("{:>8} {:>10} {:>14}", "hosts", "RSS MiB", "µs per client");
    println!("{:>8} {:>10.1} {:>14}", 0, rss_mib(), "-");
    let mut done = 0;
    for step in [10, 100, 256, 1_000, 2_500, 5_000, 10_000, 20_000, 50_000].into_iter().filter(|s| *s <= hosts) {
        let started = Instant::now();
        for i in done..step {
            let url = format!("https://lms-{i}.example.org/api/lti/courses/1/lineitems");
            hub::integrations::lti::services::client_for(&ctx, &url).map_err(|e| anyhow::anyhow!(e.message))?;
        }
        let per = started.elapsed().as_secs_f64() * 1e6 / (step - done) as f64;
        done = step;
        println!("{step:>8} {:>10.1} {per:>14.0}", rss_mib());
    }
    println!("clients kept at most: {}", hub::runtime::context::MAX_OUTBOUND_CLIENTS);
    Ok(())
}

/// This process's resident memory (Linux), in MiB.
fn rss_mib() -> f64 {
    crate::runtime_api::proc_status_kib("self", "VmRSS").unwrap_or(0) as f64 / 1024.0
}
