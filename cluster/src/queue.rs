//! Work queues: small messages many nodes publish and one durable consumer takes, each
//! message until it is acknowledged (detections: workers → supervisor). A message is
//! removed from the stream when its consumer acknowledges it, so a consumer that dies
//! before acknowledging gets it again when it comes back; consumers make processing
//! idempotent.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, Consumer, DeliverPolicy};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::stream::{NoStorage, no_storage};
use crate::{BoxError, Nats};

/// The stream of rule detections (incident updates), workers → supervisor.
pub const DETECTION_STREAM: &str = "VIGIL_DETECTIONS";
/// Subjects `vigil.detections.<node>`.
pub const DETECTION_SUBJECT_PREFIX: &str = "vigil.detections";

/// Errors of a work queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The server has too little JetStream storage left for the queue's size limit.
    #[error(transparent)]
    NoStorage(#[from] NoStorage),
    /// A JetStream request failed.
    #[error("{op} on stream {stream} failed: {source}")]
    Nats {
        /// What was being done.
        op: &'static str,
        /// The stream.
        stream: String,
        /// The client's error.
        source: BoxError,
    },
}

/// A work-queue stream (`name`, subjects `<prefix>.>`).
#[derive(Clone, Debug)]
pub struct WorkQueue {
    jetstream: jetstream::Context,
    name: String,
    prefix: String,
}

/// A message taken from a work queue; acknowledge it once processed.
pub struct Taken {
    /// The payload.
    pub payload: Bytes,
    /// The subject it was published on.
    pub subject: String,
    /// How many times it has been delivered (1 the first time).
    pub delivered: i64,
    message: jetstream::Message,
}

impl std::fmt::Debug for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Taken").field("subject", &self.subject).field("delivered", &self.delivered).finish()
    }
}

impl Taken {
    /// Acknowledges it: the stream drops it.
    pub async fn ack(&self) -> Result<(), QueueError> {
        self.message.double_ack().await.map_err(|source| QueueError::Nats {
            op: "ack",
            stream: String::from("work queue"),
            source,
        })
    }
}

impl WorkQueue {
    /// Opens the queue, creating its stream (file storage, work-queue retention, limited
    /// to `max_bytes`, discard new) if needed.
    pub async fn ensure(
        nats: &Nats,
        name: &str,
        prefix: &str,
        max_bytes: i64,
        replicas: usize,
    ) -> Result<WorkQueue, QueueError> {
        let js = nats.jetstream();
        let config = stream::Config {
            name: name.to_owned(),
            description: Some(format!("vigil: work queue {prefix}.>")),
            subjects: vec![format!("{prefix}.>")],
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::New,
            storage: stream::StorageType::File,
            max_bytes,
            duplicate_window: Duration::from_secs(120),
            num_replicas: replicas.max(1),
            ..Default::default()
        };
        js.get_or_create_stream(config).await.map_err(|err| match no_storage(name, max_bytes, err) {
            Ok(short) => QueueError::NoStorage(short),
            Err(err) => QueueError::Nats { op: "create stream", stream: name.to_owned(), source: err.into() },
        })?;
        Ok(WorkQueue { jetstream: js.clone(), name: name.to_owned(), prefix: prefix.to_owned() })
    }

    /// The detection queue.
    pub async fn detections(nats: &Nats, replicas: usize) -> Result<WorkQueue, QueueError> {
        WorkQueue::ensure(nats, DETECTION_STREAM, DETECTION_SUBJECT_PREFIX, 256 << 20, replicas).await
    }

    fn err(&self, op: &'static str) -> impl FnOnce(BoxError) -> QueueError + '_ {
        move |source| QueueError::Nats { op, stream: self.name.clone(), source }
    }

    /// Publishes `payload` on `<prefix>.<suffix>` with message id `msg_id` and waits for
    /// JetStream to store it, retrying (same id, so never stored twice within the
    /// duplicate window) until `give_up_after`.
    pub async fn publish(
        &self,
        suffix: &str,
        msg_id: &str,
        payload: Bytes,
        give_up_after: Duration,
    ) -> Result<u64, QueueError> {
        let subject = format!("{}.{suffix}", self.prefix);
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            let message = PublishMessage::build().message_id(msg_id).payload(payload.clone());
            let outcome = match self.jetstream.send_publish(subject.clone(), message).await {
                Ok(ack) => ack.await.map(|a| a.sequence).map_err(BoxError::from),
                Err(err) => Err(err.into()),
            };
            match outcome {
                Ok(sequence) => return Ok(sequence),
                Err(err) if started.elapsed() + backoff > give_up_after => return Err(self.err("publish")(err)),
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// The durable consumer `durable` (made if needed): every message once, redelivered
    /// when not acknowledged within `ack_wait`.
    pub async fn consumer(&self, durable: &str, ack_wait: Duration) -> Result<QueueConsumer, QueueError> {
        let config = PullConfig {
            durable_name: Some(durable.to_owned()),
            name: Some(durable.to_owned()),
            description: Some(format!("vigil: consumer of {}", self.name)),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            max_ack_pending: 4_096,
            ..Default::default()
        };
        let consumer = self
            .jetstream
            .create_consumer_on_stream(config, self.name.as_str())
            .await
            .map_err(|err| self.err("create consumer")(err.into()))?;
        Ok(QueueConsumer { consumer, stream: self.name.clone() })
    }
}

/// A durable consumer of a [`WorkQueue`].
pub struct QueueConsumer {
    consumer: Consumer<PullConfig>,
    stream: String,
}

impl std::fmt::Debug for QueueConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueConsumer").field("stream", &self.stream).finish_non_exhaustive()
    }
}

impl QueueConsumer {
    /// Up to `max` messages, waiting at most `wait` for the first.
    pub async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Taken>, QueueError> {
        let err = |op| {
            let stream = self.stream.clone();
            move |source: BoxError| QueueError::Nats { op, stream, source }
        };
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max.max(1))
            .expires(wait.max(Duration::from_millis(100)))
            .messages()
            .await
            .map_err(|e| err("fetch")(e.into()))?;
        let mut taken = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| err("fetch")(e))?;
            let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
            taken.push(Taken {
                payload: message.payload.clone(),
                subject: message.subject.to_string(),
                delivered,
                message,
            });
        }
        Ok(taken)
    }
}
