//! Recording Spark submissions: a verified one is answered from its first outcome, kept until a quest
//! maps its assignment, queued when its files come by URL, or recorded now; the submission worker and
//! the consumer of `quest.mapped` record the queued and the kept ones.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsMessage;
use futures_util::StreamExt;

use super::submission_jobs::{self, JobMessage, MAX_ATTEMPTS};
use super::webhook::{FileRef, Outcome, SOURCE, SubmissionPayload, UploadedPart, idempotency_key};
use crate::domain::learning::quests::QUEST_MAPPED;
use crate::domain::learning::submissions::{self, Recorded, Submission};
use crate::domain::learning::{EvidenceBlock, LmsMapping, Quest, StoredFile};
use crate::runtime::breaker::{self, Destination};
use crate::runtime::events::DomainEvent;
use crate::runtime::jobs::QueueError;
use crate::store::submission_jobs::JobStatus;
use crate::support::crypto::{random_token, sha256_hex};
use crate::support::outbound::OutboundError;
use crate::{ApiError, Context, domain::learning::files, runtime::jobs};

/// Whole submissions are at most this large.
const MAX_SUBMISSION_BYTES: u64 = 200 * 1024 * 1024;
/// Time for all the files of one submission (the submission worker's timeout is 300 s).
const FILES_BUDGET: std::time::Duration = std::time::Duration::from_secs(240);
/// The first retry's delay of a queued submission; each later one doubles it.
const RETRY_BASE_SECS: i64 = 30;

/// Takes a verified, validated submission: answers a duplicate with its first outcome, keeps one
/// for an unmapped assignment, queues one whose files come by URL, and records the rest now.
/// `parts` are the files a multipart request carried.
pub async fn accept(ctx: &Context, p: &SubmissionPayload, parts: &[UploadedPart]) -> Result<Outcome, ApiError> {
    let store = ctx.store();
    let key = idempotency_key(p);
    if let Some(completion_id) = store.submission_completion(SOURCE, &key).await? {
        return Ok(Outcome::Recorded(Recorded { completion_id, duplicate: true }));
    }
    let user_id = student(ctx, p).await?;
    let Some(quest) = mapped_quest(ctx, p).await? else {
        if !parts.is_empty() {
            return Err(ApiError::not_found(
                "quest_not_found",
                "No quest maps this assignment yet; only submissions whose files come by URL can wait for one",
            ));
        }
        let payload = serde_json::to_string(p).map_err(ApiError::internal)?;
        let organization = crate::domain::tenancy::organization_of(ctx, SOURCE).ok();
        store.save_pending_submission(&mapping_of(p), &key, &payload, organization.as_deref(), ctx.clock.now()).await?;
        tracing::info!(
            user_id,
            course = p.spark_course_id,
            assignment = p.spark_assignment_id,
            "submission pending: no quest maps the assignment"
        );
        return Ok(Outcome::Pending);
    };
    if p.submission_files.iter().any(|f| f.url.is_some()) {
        return submission_jobs::queue(ctx, &key, p).await;
    }
    record_with_files(ctx, &user_id, &quest, &key, p, parts, &mut FileHosts::default()).await.map(Outcome::Recorded)
}

/// What a queued submission needs before its files are fetched.
enum Prepared {
    /// Recorded already (a retry of the sender, or of this job).
    Done(Recorded),
    Ready {
        user_id: String,
        quest: Box<Quest>,
        key: String,
    },
}

/// Everything about a queued submission that needs no file host: recorded already, its student, its quest.
async fn prepare(ctx: &Context, p: &SubmissionPayload) -> Result<Prepared, ApiError> {
    let key = idempotency_key(p);
    if let Some(completion_id) = ctx.store().submission_completion(SOURCE, &key).await? {
        return Ok(Prepared::Done(Recorded { completion_id, duplicate: true }));
    }
    let user_id = student(ctx, p).await?;
    let Some(quest) = mapped_quest(ctx, p).await? else {
        return Err(ApiError::not_found("quest_not_found", "No quest maps this assignment any more"));
    };
    Ok(Prepared::Ready { user_id, quest: Box::new(quest), key })
}

/// A ticket from each file host of the submission; `None` when one of them set the job aside (the
/// tickets taken before are given back).
async fn admit_file_hosts(
    ctx: &Context,
    p: &SubmissionPayload,
    queue: &str,
    message: &SqsMessage,
) -> Result<Option<Vec<(String, breaker::Ticket)>>, QueueError> {
    let hosts: std::collections::BTreeSet<String> =
        p.submission_files.iter().filter_map(|f| f.url.as_deref()).map(file_host).collect();
    let mut tickets = Vec::new();
    for host in hosts {
        let longest = FILES_BUDGET.as_secs() as i64 + 30;
        let destination = Destination::new(host.clone(), MAX_CALLS_PER_FILE_HOST, longest);
        match breaker::admit_job(ctx, &destination, queue, message).await {
            Ok(Some(ticket)) => tickets.push((host, ticket)),
            waiting => {
                for (_, ticket) in tickets {
                    breaker::release(ctx, ticket).await;
                }
                return waiting.map(|_| None);
            }
        }
    }
    Ok(Some(tickets))
}

/// The hub user of the submission's Spark student.
async fn student(ctx: &Context, p: &SubmissionPayload) -> Result<String, ApiError> {
    ctx.store().user_id_by_identity(crate::integrations::spark::sso::PROVIDER, &p.spark_user_id).await?.ok_or_else(
        || {
            ApiError::not_found(
                "user_not_found",
                "No user has this Spark id yet: the student must sign in through Spark SSO first",
            )
        },
    )
}

fn mapping_of(p: &SubmissionPayload) -> LmsMapping {
    LmsMapping {
        platform: SOURCE.into(),
        course_id: p.spark_course_id.clone(),
        assignment_id: p.spark_assignment_id.clone(),
    }
}

/// The quest that maps the submission's assignment, when it belongs to Spark's organization: a
/// mapping in any other organization (left from before that rule) is ignored.
async fn mapped_quest(ctx: &Context, p: &SubmissionPayload) -> Result<Option<Quest>, ApiError> {
    let Some(quest) = ctx.store().quest_by_lms(&mapping_of(p)).await? else { return Ok(None) };
    match crate::domain::tenancy::admit(ctx, SOURCE, &quest.organization_id) {
        Ok(()) => Ok(Some(quest)),
        Err(_) => {
            tracing::warn!(
                alert = "integration_tenant_mismatch",
                quest_id = quest.id,
                organization_id = quest.organization_id,
                "a quest outside Spark's organization maps a Spark assignment; submission not recorded in it"
            );
            Ok(None)
        }
    }
}

/// The part of `events-dispatch`'s 30 s one event's release may take; the rest follows in a
/// continuation of the event.
const RELEASE_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);
/// Pending submissions read at a time (each up to a JSON body of 1 MB: a 128 MB function reads pages).
const RELEASE_PAGE: i32 = 25;

/// Consumer of `quest.mapped`: a quest now maps a Spark assignment, so the submissions kept for it
/// are taken, a page at a time. Idempotent (each one is removed once recorded; recording is
/// idempotent). Out of time, it queues the event again and returns: a backlog continues, it is not a
/// failure. A submission that still fails is an error: the event is retried, then dead-lettered (its
/// alarm), and the submission stays kept.
pub async fn release_pending(ctx: &Context, event: &DomainEvent) -> Result<(), QueueError> {
    if event.event_type != QUEST_MAPPED || event.data["platform"] != SOURCE {
        return Ok(());
    }
    let store_error = |e: crate::store::StoreError| QueueError(e.to_string());
    let quest_id = event.data["quest_id"].as_str().unwrap_or_default();
    let Some(quest) = ctx.store().get_quest(quest_id).await.map_err(store_error)? else { return Ok(()) };
    let Some(mapping) = quest.lms.as_ref().filter(|m| m.platform == SOURCE) else { return Ok(()) };
    let deadline = std::time::Instant::now() + RELEASE_BUDGET;
    let mut processed = 0;
    loop {
        let (page, more) = ctx.store().pending_submissions(mapping, RELEASE_PAGE).await.map_err(store_error)?;
        let mut failing = 0;
        for (sk, payload) in page {
            if std::time::Instant::now() > deadline {
                tracing::info!(quest_id = quest.id, processed, "pending submissions: more than one run takes");
                return crate::runtime::events::requeue(ctx, event).await;
            }
            let outcome = match serde_json::from_str::<SubmissionPayload>(&payload) {
                Ok(p) => accept(ctx, &p, &[]).await,
                Err(e) => Err(ApiError::internal(e)),
            };
            match outcome {
                Ok(Outcome::Pending) => failing += 1,
                Ok(_) => {
                    processed += 1;
                    ctx.store().delete_pending_submission(mapping, &sk).await.map_err(store_error)?;
                }
                Err(e) => {
                    failing += 1;
                    tracing::warn!(quest_id = quest.id, error = %e, "pending submission still failing; kept");
                }
            }
        }
        if failing > 0 {
            return Err(QueueError(format!("{failing} pending submission(s) of quest {} still failing", quest.id)));
        }
        if !more {
            tracing::info!(quest_id = quest.id, processed, "pending submissions released");
            return Ok(());
        }
    }
}

async fn record_with_files(
    ctx: &Context,
    user_id: &str,
    quest: &Quest,
    key: &str,
    p: &SubmissionPayload,
    parts: &[UploadedPart],
    hosts: &mut FileHosts,
) -> Result<Recorded, ApiError> {
    let mut blocks = Vec::new();
    if let Some(text) = p.submission_text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        blocks.push(EvidenceBlock {
            order: 1,
            block_type: crate::domain::learning::BlockType::Text,
            text: Some(text.into()),
            file: None,
        });
    }
    let mut stored = Vec::new();
    let result = async {
        // Bounded well inside the worker's timeout, so a slow host fails this attempt cleanly (its
        // stored files removed below) instead of the Lambda being killed mid-way.
        let files = store_files(ctx, user_id, &p.submission_files, parts, &mut blocks, &mut stored, hosts);
        tokio::time::timeout(FILES_BUDGET, files)
            .await
            .map_err(|_| files::FileError::Download("the files took too long to download".into()))??;
        let lms_ref = serde_json::json!({ "platform": SOURCE, "user_id": p.spark_user_id, "course_id": p.spark_course_id,
                                          "assignment_id": p.spark_assignment_id });
        let submission =
            Submission { source: SOURCE, key, user_id, quest, task_id: None, evidence: &blocks, grade: p.grade.as_ref(), lms_ref: Some(lms_ref) };
        submissions::record(ctx, &submission).await
    }
    .await;
    match result {
        Ok(recorded) if !recorded.duplicate => Ok(recorded),
        other => {
            // A failure, or a concurrent duplicate that won: these files belong to nothing.
            files::delete(ctx, &stored).await;
            other
        }
    }
}

/// Stores every file of a submission (downloaded by URL, or from its multipart part), in order.
async fn store_files(
    ctx: &Context,
    user_id: &str,
    refs: &[FileRef],
    parts: &[UploadedPart],
    blocks: &mut Vec<EvidenceBlock>,
    stored: &mut Vec<String>,
    hosts: &mut FileHosts,
) -> Result<(), ApiError> {
    if let Some(unlisted) = parts.iter().find(|p| !refs.iter().any(|r| r.part.as_deref() == Some(p.name.as_str()))) {
        return Err(ApiError::bad_request(
            "invalid_payload",
            format!("part {} is not listed in the metadata", unlisted.name),
        ));
    }
    let mut client = None;
    let mut total = 0u64;
    for file in refs {
        let budget = files::MAX_FILE_BYTES.min(MAX_SUBMISSION_BYTES - total);
        let key = format!("evidence/{user_id}/{}", random_token(32));
        let (size, sniffed) = match (&file.url, &file.part) {
            (Some(url), _) => {
                if client.is_none() {
                    client =
                        Some(ctx.outbound(Some(ctx.config.spark_storage_domains.clone())).map_err(ApiError::internal)?);
                }
                let client = client.as_ref().expect("set above");
                // Noted before the fetch: the files' budget may cut it short.
                hosts.in_progress = Some(file_host(url));
                let fetched = fetch(ctx, client, url, &key, budget).await;
                let host = hosts.in_progress.take().expect("set above");
                match fetched.held_a_worker() {
                    Some(true) => hosts.hung.insert(host),
                    Some(false) => hosts.answered.insert(host),
                    None => false,
                };
                fetched.stored()?
            }
            (None, Some(name)) => {
                let part = parts.iter().find(|p| &p.name == name).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_payload",
                        format!("the metadata lists part {name}, which was not sent"),
                    )
                })?;
                let expected = file.sha256.as_deref().unwrap_or_default().to_ascii_lowercase();
                if sha256_hex(&part.bytes) != expected {
                    return Err(ApiError::bad_request(
                        "file_hash_mismatch",
                        format!("part {name} does not match its sha256"),
                    ));
                }
                let chunk = futures_util::stream::once(std::future::ready(Ok::<_, std::convert::Infallible>(
                    part.bytes.clone(),
                )));
                files::stream_to_s3(ctx, &key, chunk, budget).await?
            }
            (None, None) => return Err(ApiError::bad_request("invalid_payload", "a file has neither url nor part")),
        };
        stored.push(key.clone());
        total += size;
        let filename = file.filename.clone().filter(|f| !f.trim().is_empty()).unwrap_or_else(|| "file".into());
        blocks.push(EvidenceBlock {
            order: blocks.len() as u32 + 1,
            block_type: sniffed.block,
            text: None,
            file: Some(StoredFile {
                key,
                filename: filename.chars().take(255).collect(),
                content_type: sniffed.content_type.into(),
                size,
            }),
        });
    }
    Ok(())
}

/// Downloads from one file host at once: three of the worker's 5 instances (Spark is one
/// organization; the share keeps a hanging host from holding the files of its other hosts).
const MAX_CALLS_PER_FILE_HOST: i64 = 3;

/// A file host's breaker (see [`crate::runtime::breaker`]): one per host and port.
fn file_host(url: &str) -> String {
    format!("files:{}", crate::support::outbound::host_and_port(url))
}

/// What the file hosts of one submission did, for their breakers.
#[derive(Default)]
struct FileHosts {
    /// Hosts that answered every time.
    answered: std::collections::HashSet<String>,
    /// Hosts that held the worker without answering, at least once.
    hung: std::collections::HashSet<String>,
    /// The host being fetched from (left set when the files' budget cut the fetch short).
    in_progress: Option<String>,
}

impl FileHosts {
    /// Tells each host's breaker how its calls went.
    async fn record(self, ctx: &Context, tickets: Vec<(String, breaker::Ticket)>) {
        for (host, ticket) in tickets {
            if self.hung.contains(&host) || self.in_progress.as_ref() == Some(&host) {
                breaker::record(ctx, ticket, false).await;
            } else if self.answered.contains(&host) {
                breaker::record(ctx, ticket, true).await;
            } else {
                breaker::release(ctx, ticket).await;
            }
        }
    }
}

/// How one file went.
enum Fetch {
    Stored(u64, files::Sniffed),
    /// Our guard refused the URL: the host was not called.
    Refused(ApiError),
    /// The host gave no answer in time (a timeout, a dropped connection, a body that stopped).
    NoAnswer(files::FileError),
    /// The host answered, and the file was not stored (a status, too large, a refused type).
    Answered(ApiError),
    /// Our own failure (storage).
    Ours(files::FileError),
}

impl Fetch {
    /// What the fetch tells its host's breaker: `Some(true)` when the host held the worker without
    /// answering, `Some(false)` when it answered, `None` when it was not reached or we failed.
    fn held_a_worker(&self) -> Option<bool> {
        match self {
            Fetch::NoAnswer(_) => Some(true),
            Fetch::Stored(..) | Fetch::Answered(_) => Some(false),
            Fetch::Refused(_) | Fetch::Ours(_) => None,
        }
    }

    fn stored(self) -> Result<(u64, files::Sniffed), ApiError> {
        match self {
            Fetch::Stored(size, sniffed) => Ok((size, sniffed)),
            Fetch::Refused(e) | Fetch::Answered(e) => Err(e),
            Fetch::NoAnswer(e) | Fetch::Ours(e) => Err(e.into()),
        }
    }
}

/// Downloads one file through the SSRF guard, streaming it into `key`.
async fn fetch(
    ctx: &Context,
    client: &crate::support::outbound::OutboundClient,
    url: &str,
    key: &str,
    budget: u64,
) -> Fetch {
    let refused = |e: &OutboundError| {
        Fetch::Refused(ApiError::new(
            http::StatusCode::UNPROCESSABLE_ENTITY,
            "file_url_not_allowed",
            format!("File URLs must be https on Spark's storage hosts: {e}"),
        ))
    };
    let request = match client.get(url) {
        Ok(request) => request,
        Err(e) => return refused(&e),
    };
    // `OutboundError` carries no URL: a presigned URL is a credential and must not reach an answer or a log.
    let response = match request.send().await.map_err(OutboundError::from) {
        Ok(response) => response,
        Err(e) if e.is_refused() => return refused(&e),
        Err(e) => return Fetch::NoAnswer(files::FileError::Download(e.to_string())),
    };
    if !response.status().is_success() {
        let status = response.status().as_u16();
        return Fetch::Answered(files::FileError::Download(format!("status {status}")).into());
    }
    if response.content_length().is_some_and(|len| len > budget) {
        return Fetch::Answered(files::FileError::TooLarge(budget).into());
    }
    let body = response.bytes_stream().map(|chunk| chunk.map_err(reqwest::Error::without_url));
    match files::stream_to_s3(ctx, key, body, budget).await {
        Ok((size, sniffed)) => Fetch::Stored(size, sniffed),
        Err(e @ files::FileError::Download(_)) => Fetch::NoAnswer(e),
        Err(e @ files::FileError::Storage(_)) => Fetch::Ours(e),
        Err(e) => Fetch::Answered(e.into()),
    }
}

/// The worker: one queued submission.
pub async fn work(ctx: Arc<Context>, message: SqsMessage) -> Result<(), QueueError> {
    let job: JobMessage = jobs::parse(&message)?;
    let store = ctx.store();
    let store_error = |e: crate::store::StoreError| QueueError(e.to_string());
    let Some(item) = store.submission_job(&job.key).await.map_err(store_error)? else {
        tracing::warn!("submission job message without its job; dropped");
        return Ok(());
    };
    if item.status != JobStatus::Processing {
        return Ok(());
    }
    let payload: SubmissionPayload =
        serde_json::from_str(&item.payload).map_err(|e| QueueError(format!("malformed job payload: {e}")))?;
    let attempt = jobs::receive_count(&message);
    let queue = ctx
        .config
        .submission_queue_url
        .as_deref()
        .ok_or_else(|| QueueError("submission queue not configured".into()))?;
    let processed = match prepare(&ctx, &payload).await {
        // Every file host of the submission admits it before anything is downloaded.
        Ok(Prepared::Ready { user_id, quest, key }) => match admit_file_hosts(&ctx, &payload, queue, &message).await {
            Ok(None) => return Ok(()),
            Ok(Some(tickets)) => {
                let mut outcomes = FileHosts::default();
                let recorded = record_with_files(&ctx, &user_id, &quest, &key, &payload, &[], &mut outcomes).await;
                outcomes.record(&ctx, tickets).await;
                recorded.map(Outcome::Recorded)
            }
            // Its file hosts have been paused or busy for a day: an attempt spent, the last one fails it.
            Err(e) if attempt < MAX_ATTEMPTS => return Err(e),
            Err(e) => Err(ApiError::unavailable(e.0)),
        },
        Ok(Prepared::Done(recorded)) => Ok(Outcome::Recorded(recorded)),
        Err(e) => Err(e),
    };
    let end = match processed {
        Ok(Outcome::Recorded(r)) => JobStatus::Completed { completion_id: r.completion_id },
        Ok(Outcome::Pending | Outcome::Processing { .. }) => {
            JobStatus::Failed { error: "quest_not_found: no quest maps this assignment any more".into() }
        }
        Err(e) if is_permanent(&e) => JobStatus::Failed { error: format!("{}: {}", e.code, e.message) },
        Err(e) if attempt >= MAX_ATTEMPTS => {
            JobStatus::Failed { error: format!("{}: gave up after {attempt} attempts", e.code) }
        }
        Err(e) => {
            let delay = RETRY_BASE_SECS << (attempt.saturating_sub(1)).min(10);
            tracing::warn!(
                submission_id = item.submission_id,
                attempt,
                code = e.code,
                delay,
                "submission retried later"
            );
            jobs::hide(&ctx, queue, &message, delay).await;
            return Err(QueueError(format!("{}: {}", e.code, e.message)));
        }
    };
    store.finish_submission_job(&job.key, &end, ctx.clock.now()).await.map_err(store_error)?;
    match &end {
        JobStatus::Completed { completion_id } => {
            tracing::info!(submission_id = item.submission_id, completion_id, "queued submission recorded")
        }
        JobStatus::Failed { error } => {
            tracing::error!(
                alert = "submission_failed",
                submission_id = item.submission_id,
                error,
                "queued submission failed"
            )
        }
        JobStatus::Processing => {}
    }
    if matches!(end, JobStatus::Failed { .. }) && attempt >= MAX_ATTEMPTS {
        // Leave it to the queue's redrive policy: the message goes to the dead-letter queue.
        return Err(QueueError("submission failed after its last attempt".into()));
    }
    Ok(())
}

/// Failures that another attempt cannot fix (the submission itself is refused).
fn is_permanent(e: &ApiError) -> bool {
    e.status.is_client_error() && e.status != http::StatusCode::TOO_MANY_REQUESTS
}
