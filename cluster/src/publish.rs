//! Publishing event batches with a bounded in-flight window and idempotent retries.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, ErrorCode};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::stream::{EventStream, batch_subject};

/// How a [`Publisher`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherConfig {
    /// At most this many batches published and not yet acknowledged; `publish` waits for
    /// room (backpressure). At least 1.
    pub max_in_flight: usize,
    /// How long to wait for JetStream's acknowledgement of one attempt.
    pub ack_timeout: Duration,
    /// Transient failures (ack timeout, no responders while the server restarts, a dropped
    /// connection) are retried with the same message id until this much time has passed
    /// since the first attempt; keep it below the stream's duplicate window.
    pub retry_for: Duration,
    /// First pause between attempts; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest pause between attempts.
    pub backoff_max: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            max_in_flight: 64,
            ack_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(60),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// Why a batch was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The stream reached its size limit and refused the batch (discard new): nothing was
    /// stored; publish it again (same id) later.
    #[error("stream is full: the batch was refused ({0})")]
    StreamFull(String),
    /// The batch is larger than the server's maximum payload.
    #[error("batch too large for the server: {0}")]
    TooLarge(String),
    /// Partition beyond the stream's partitions.
    #[error("partition {partition} does not exist: the stream has {partitions} partitions")]
    NoSuchPartition {
        /// The partition asked for.
        partition: u16,
        /// How many there are.
        partitions: u16,
    },
    /// The message id is empty.
    #[error("a batch needs a non-empty message id")]
    EmptyMessageId,
    /// Transient failures went on for longer than `retry_for`.
    #[error("not acknowledged after {attempts} attempts over {elapsed:?}: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Time since the first attempt.
        elapsed: Duration,
        /// The last failure.
        last: String,
    },
    /// JetStream refused the batch for another reason.
    #[error("JetStream refused the batch: {0}")]
    Refused(String),
    /// The publishing task ended without an answer (the runtime is shutting down).
    #[error("the publishing task ended before the batch was acknowledged")]
    Abandoned,
}

/// JetStream's acknowledgement of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The stream sequence the batch is stored at.
    pub sequence: u64,
    /// The batch had been stored already (same message id within the duplicate window);
    /// `sequence` is the original's.
    pub duplicate: bool,
}

/// Resolves once the batch is acknowledged by JetStream (or finally failed). Dropping it
/// does not cancel the publish.
#[derive(Debug)]
pub struct PublishHandle {
    receiver: oneshot::Receiver<Result<Acked, PublishError>>,
}

impl Future for PublishHandle {
    type Output = Result<Acked, PublishError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver).poll(cx).map(|result| result.unwrap_or(Err(PublishError::Abandoned)))
    }
}

/// Counters of a [`Publisher`] (all its clones), for /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Batches handed to `publish`.
    pub published: u64,
    /// Batches acknowledged (duplicates included).
    pub acked: u64,
    /// Attempts repeated after a transient failure.
    pub retried: u64,
    /// Batches that finally failed.
    pub failed: u64,
    /// Batches published and not yet acknowledged or failed.
    pub in_flight: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    acked: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    jetstream: jetstream::Context,
    window: Arc<Semaphore>,
    counters: Counters,
    config: PublisherConfig,
    partitions: u16,
}

/// Publishes batches to `vigil.events.<partition>.<org>.<node>`. Cheap to clone; clones share the window
/// and the counters.
///
/// Batches go out in the order `publish` is called; a batch that has to be retried may be
/// stored after batches published later (its message id tells readers who sent it).
#[derive(Debug, Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

/// Keeps a window slot and the in-flight count until the batch is settled.
struct Slot {
    inner: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Failure {
    Transient(String),
    Fatal(PublishError),
}

impl Publisher {
    pub(crate) fn new(stream: &EventStream, config: PublisherConfig) -> Publisher {
        let max_in_flight = config.max_in_flight.max(1);
        let config = PublisherConfig { max_in_flight, ..config };
        // A context of its own: its ack timeout is ours, and its own in-flight limit never
        // binds before our window does.
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .max_ack_inflight(max_in_flight.saturating_mul(2))
            .backpressure_on_inflight(true)
            .build(stream.jetstream().client());
        Publisher {
            inner: Arc::new(Inner {
                jetstream,
                window: Arc::new(Semaphore::new(max_in_flight)),
                counters: Counters::default(),
                config,
                partitions: stream.partitions(),
            }),
        }
    }

    /// Publishes one batch of org `org`'s events from node `node` to `partition`, with
    /// message id `msg_id` (unique per batch, e.g. `"<node>/<seq>"`; a retry must reuse it). Waits while `max_in_flight` batches are
    /// unacknowledged, sends the batch, and returns a handle that resolves to its stream
    /// sequence once JetStream has stored it. Transient failures are retried in the
    /// background with the same id.
    pub async fn publish(
        &self,
        partition: u16,
        org: u32,
        node: &str,
        msg_id: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PublishHandle, PublishError> {
        let inner = &self.inner;
        if partition >= inner.partitions {
            return Err(PublishError::NoSuchPartition { partition, partitions: inner.partitions });
        }
        if msg_id.is_empty() {
            return Err(PublishError::EmptyMessageId);
        }
        let permit = inner.window.clone().acquire_owned().await.map_err(|_| PublishError::Abandoned)?;
        inner.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        inner.counters.published.fetch_add(1, Ordering::Relaxed);
        let slot = Slot { inner: inner.clone(), _permit: permit };

        let subject = batch_subject(partition, org, node);
        let message = PublishMessage::build().headers(headers).message_id(msg_id).payload(payload);
        let started = Instant::now();
        // The first send happens here, so batches leave in call order.
        let first = inner.jetstream.send_publish(subject.clone(), message.clone()).await;
        let (sender, receiver) = oneshot::channel();
        tokio::spawn(async move {
            let result = settle(&slot.inner, subject, message, started, first).await;
            let counter = if result.is_ok() { &slot.inner.counters.acked } else { &slot.inner.counters.failed };
            counter.fetch_add(1, Ordering::Relaxed);
            drop(slot);
            // The caller may have dropped the handle; the counters still tell.
            let _ = sender.send(result);
        });
        Ok(PublishHandle { receiver })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PublisherStats {
        let counters = &self.inner.counters;
        PublisherStats {
            published: counters.published.load(Ordering::Relaxed),
            acked: counters.acked.load(Ordering::Relaxed),
            retried: counters.retried.load(Ordering::Relaxed),
            failed: counters.failed.load(Ordering::Relaxed),
            in_flight: counters.in_flight.load(Ordering::Relaxed),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &PublisherConfig {
        &self.inner.config
    }
}

/// Waits for the ack of the first attempt, retrying transient failures with backoff.
async fn settle(
    inner: &Inner,
    subject: String,
    message: PublishMessage,
    started: Instant,
    first: Result<PublishAckFuture, jetstream::context::PublishError>,
) -> Result<Acked, PublishError> {
    let config = &inner.config;
    let mut attempt = first;
    let mut attempts: u32 = 1;
    let mut backoff = config.backoff_min;
    loop {
        let outcome = match attempt {
            Ok(ack) => ack.await.map_err(classify),
            Err(err) => Err(classify(err)),
        };
        let last = match outcome {
            Ok(ack) => return Ok(Acked { sequence: ack.sequence, duplicate: ack.duplicate }),
            Err(Failure::Fatal(err)) => return Err(err),
            Err(Failure::Transient(last)) => last,
        };
        let elapsed = started.elapsed();
        if elapsed + backoff > config.retry_for {
            return Err(PublishError::GaveUp { attempts, elapsed, last });
        }
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(config.backoff_max);
        inner.counters.retried.fetch_add(1, Ordering::Relaxed);
        attempts = attempts.saturating_add(1);
        attempt = inner.jetstream.send_publish(subject.clone(), message.clone()).await;
    }
}

/// Sorts a client error into "retry with the same id" and "tell the caller".
fn classify(err: jetstream::context::PublishError) -> Failure {
    match err.kind() {
        // No ack in time, the connection went away, nobody answered (the server restarts
        // or JetStream is not ready yet): the batch may or may not be stored; a retry with
        // the same id is deduplicated.
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxAckPending => Failure::Transient(err.to_string()),
        PublishErrorKind::MaxPayloadExceeded => Failure::Fatal(PublishError::TooLarge(err.to_string())),
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            Failure::Fatal(PublishError::Refused(err.to_string()))
        }
        PublishErrorKind::Other => match api_error(&err) {
            Some(api) => classify_api(api),
            // Not an answer from JetStream (the send itself failed): transient.
            None => Failure::Transient(err.to_string()),
        },
    }
}

fn api_error(err: &jetstream::context::PublishError) -> Option<&jetstream::Error> {
    let source: &(dyn std::error::Error + 'static) = std::error::Error::source(err)?;
    source.downcast_ref::<jetstream::Error>()
}

fn classify_api(api: &jetstream::Error) -> Failure {
    let code = api.error_code();
    let text = api.to_string();
    if code == ErrorCode::CLUSTER_NOT_AVAILABLE
        || code == ErrorCode::CLUSTER_NOT_ACTIVE
        || code == ErrorCode::CLUSTER_NOT_LEADER
        || code == ErrorCode::CLUSTER_NO_PEERS
        || code == ErrorCode::CLUSTER_INCOMPLETE
    {
        return Failure::Transient(text);
    }
    let lower = text.to_ascii_lowercase();
    let full = code == ErrorCode::STORAGE_RESOURCES_EXCEEDED
        || code == ErrorCode::INSUFFICIENT_RESOURCES
        || code == ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
        || (code == ErrorCode::STREAM_STORE_FAILED && lower.contains("maximum"));
    if full {
        Failure::Fatal(PublishError::StreamFull(text))
    } else if code == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM {
        Failure::Fatal(PublishError::TooLarge(text))
    } else {
        Failure::Fatal(PublishError::Refused(text))
    }
}
