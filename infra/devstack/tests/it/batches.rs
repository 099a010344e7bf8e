//! A queue consumer's batch under the invocation's deadline: a message that hangs is given back alone,
//! hidden for its backoff; the others of its batch are reported as they ended.

use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use lambda_http::{LambdaEvent, Service};
use serde_json::json;

use crate::common::TestStack;

/// A consumer whose messages say what to do: `hang` never ends, `fail` fails, anything else succeeds.
fn obedient(
    _: std::sync::Arc<hub::Context>,
    message: SqsMessage,
) -> lambda_http::BoxFuture<'static, Result<(), hub::runtime::jobs::QueueError>> {
    Box::pin(async move {
        match message.body.as_deref() {
            Some("hang") => std::future::pending().await,
            Some("fail") => Err(hub::runtime::jobs::QueueError("asked to fail".into())),
            _ => Ok(()),
        }
    })
}

#[tokio::test]
async fn a_hanging_message_is_given_back_alone_before_the_deadline_with_a_backoff() {
    let t = TestStack::new("batchdeadline").await;
    let queue_url = t.stack.refs["GradePassbackQueue"].clone();
    let queue_arn = t.stack.arns["GradePassbackQueue"].clone();
    // The hanging job is a real message of the queue, so that its backoff can be seen.
    let sqs = t.ctx.sqs().clone();
    sqs.send_message().queue_url(&queue_url).message_body("hang").send().await.unwrap();
    let received = sqs.receive_message().queue_url(&queue_url).visibility_timeout(1).send().await.unwrap();
    let receipt = received.messages()[0].receipt_handle().unwrap().to_string();
    let record = |id: &str, body: &str, receipt: &str| {
        json!({"messageId": id, "receiptHandle": receipt, "body": body, "attributes": {"ApproximateReceiveCount": "1"},
               "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": "us-east-1"})
    };
    let event: SqsEvent = serde_json::from_value(json!({"Records": [
        record("m-ok", "ok", "r1"), record("m-hang", "hang", &receipt), record("m-fail", "fail", "r3"),
    ]}))
    .unwrap();
    let mut context = lambda_http::Context::default();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    context.deadline = now_ms + 4_000;
    let mut service = hub::entry::queue_service(t.ctx.clone(), "batch-test", obedient);
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), service.call(LambdaEvent::new(event, context))).await;
    let Ok(response) = ended.expect("the batch ends by its deadline");
    assert!(started.elapsed() < Duration::from_secs(4), "done before the invocation's deadline");
    let mut failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    failed.sort();
    assert_eq!(failed, ["m-fail", "m-hang"], "the hanging message and the failed one; the good one is done");
    // The hanging message is hidden for its backoff (30 s), not handed out again in a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = sqs.receive_message().queue_url(&queue_url).wait_time_seconds(1).send().await.unwrap();
    assert!(again.messages().is_empty(), "still hidden");
}
