//! Reading one partition in stream order, in bounded pulls, across server restarts.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::pull::{Batch, Config as PullConfig};
use async_nats::jetstream::consumer::{AckPolicy, Consumer, DeliverPolicy};
use async_nats::jetstream::{self, Message};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::stream::{EVENT_STREAM, partition_subject};

/// How a [`PartitionReader`] pulls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderConfig {
    /// At most this many messages per pull (held in memory at once).
    pub max_messages: usize,
    /// At most this many bytes per pull. Must exceed the largest batch, or that batch is
    /// never delivered.
    pub max_bytes: usize,
    /// How long one pull waits for messages before the next one is sent.
    pub max_wait: Duration,
    /// Longest pause between attempts after a failure.
    pub backoff_max: Duration,
    /// After failing for this long without delivering anything, [`PartitionReader::next`]
    /// returns [`ReadError::Unavailable`] (the reader stays usable).
    pub give_up_after: Duration,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            max_messages: 256,
            max_bytes: 8 << 20,
            max_wait: Duration::from_secs(2),
            backoff_max: Duration::from_secs(1),
            give_up_after: Duration::from_secs(60),
        }
    }
}

/// A message of the partition.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its stream sequence.
    pub sequence: u64,
    /// The subject it was published on (`vigil.events.<p>.<org>.<node>`).
    pub subject: String,
    /// Its headers (including `Nats-Msg-Id`).
    pub headers: HeaderMap,
    /// The batch.
    pub payload: Bytes,
    /// Messages of the partition after this one, as the server counted at delivery.
    pub pending: u64,
}

impl Record {
    /// The `Nats-Msg-Id` the publisher gave the batch.
    pub fn msg_id(&self) -> Option<&str> {
        self.headers.get(async_nats::header::NATS_MESSAGE_ID).map(|value| value.as_str())
    }
}

/// A reader that could not get messages for a while.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// Pulls kept failing for `give_up_after`; calling `next` again keeps trying.
    #[error("partition {partition} unreadable for {duration:?}: {last}")]
    Unavailable {
        /// The partition.
        partition: u16,
        /// How long it has failed.
        duration: Duration,
        /// The last failure.
        last: String,
    },
}

/// Reads partition `p` of `VIGIL_EVENTS` in stream order from a start sequence.
///
/// It uses an ephemeral pull consumer without acks (in server memory, filtered on
/// `vigil.events.<p>`, starting at the next sequence to hand out) and pulls at most
/// `max_messages` / `max_bytes` at a time. Whenever the consumer goes away (server restart,
/// inactivity), a delivery is missing (consumer sequence gap) or a pull fails, it makes a
/// new consumer from the sequence after the last one it handed out, so nothing is skipped
/// or handed out twice.
pub struct PartitionReader {
    jetstream: jetstream::Context,
    partition: u16,
    config: ReaderConfig,
    next_sequence: u64,
    consumer: Option<Consumer<PullConfig>>,
    /// Consumer sequence of the last delivery of the current consumer.
    delivered: u64,
    batch: Option<Batch>,
    serial: u64,
    token: String,
    failing_since: Option<Instant>,
    backoff: Duration,
    recreated: u64,
    /// Messages the current pull has delivered.
    in_batch: u64,
    /// The server had nothing more for the last pull (see [`PartitionReader::caught_up`]).
    caught_up: bool,
}

impl std::fmt::Debug for PartitionReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionReader")
            .field("partition", &self.partition)
            .field("next_sequence", &self.next_sequence)
            .field("consumers_made", &self.recreated)
            .finish_non_exhaustive()
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);

impl PartitionReader {
    pub(crate) fn new(
        jetstream: jetstream::Context,
        partition: u16,
        start_sequence: u64,
        config: ReaderConfig,
    ) -> PartitionReader {
        let config = ReaderConfig {
            max_messages: config.max_messages.max(1),
            max_bytes: config.max_bytes.max(1),
            max_wait: config.max_wait.max(Duration::from_millis(100)),
            ..config
        };
        PartitionReader {
            jetstream,
            partition,
            config,
            next_sequence: start_sequence.max(1),
            consumer: None,
            delivered: 0,
            batch: None,
            serial: 0,
            token: crate::unique_token(),
            failing_since: None,
            backoff: BACKOFF_MIN,
            recreated: 0,
            in_batch: 0,
            caught_up: false,
        }
    }

    /// The partition it reads.
    pub fn partition(&self) -> u16 {
        self.partition
    }

    /// The sequence it reads from next: one after the last message handed out.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Whether everything the partition held at the last delivery has been
    /// handed out: the last message came with nothing pending after it, or
    /// the last pull ended empty. False before the first pull ends and
    /// while the server cannot be reached, so a reader that is behind (or
    /// cannot tell) never reports that it is not.
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// How many consumers it has made (1 + recoveries), for /metrics.
    pub fn consumers_made(&self) -> u64 {
        self.recreated
    }

    /// The next message of the partition, waiting for one to arrive. Cancel-safe: a
    /// message is taken off a pull only when it is returned.
    pub async fn next(&mut self) -> Result<Record, ReadError> {
        loop {
            if self.batch.is_none() {
                match self.pull().await {
                    Ok(batch) => {
                        self.batch = Some(batch);
                        self.in_batch = 0;
                    }
                    Err(err) => {
                        self.drop_consumer();
                        self.failed(err).await?;
                        continue;
                    }
                }
            }
            let Some(batch) = self.batch.as_mut() else { continue };
            // The server ends a pull after `max_wait`; no end a second later means the pull
            // was lost (the connection dropped).
            let outcome = tokio::time::timeout(self.config.max_wait + Duration::from_secs(1), batch.next()).await;
            match outcome {
                Ok(Some(Ok(message))) => {
                    if let Some(record) = self.accept(message) {
                        self.failing_since = None;
                        self.backoff = BACKOFF_MIN;
                        return Ok(record);
                    }
                }
                Ok(None) => {
                    // An empty pull: the server had nothing for it.
                    if self.in_batch == 0 {
                        self.caught_up = true;
                    }
                    self.batch = None;
                }
                Ok(Some(Err(err))) => {
                    // No responders (the consumer is gone), consumer deleted, leadership
                    // change...: start over from the next sequence.
                    self.batch = None;
                    self.drop_consumer();
                    self.failed(format!("pull failed: {err}")).await?;
                }
                Err(_) => {
                    self.batch = None;
                    self.caught_up = false;
                    self.failed("pull got no answer (connection lost?)".to_owned()).await?;
                }
            }
        }
    }

    /// The reader as a [`Stream`] of records (it never ends; errors are not fatal).
    pub fn into_stream(self) -> impl Stream<Item = Result<Record, ReadError>> + Send {
        futures_util::stream::unfold(self, |mut reader| async move {
            let item = reader.next().await;
            Some((item, reader))
        })
    }

    /// Sends the next pull request, making a consumer first if there is none.
    async fn pull(&mut self) -> Result<Batch, String> {
        if self.consumer.is_none() {
            self.serial += 1;
            let name = format!("vigil-read-p{}-{}-{}", self.partition, self.token, self.serial);
            let threshold = (self.config.max_wait * 4).max(Duration::from_secs(30));
            let config = PullConfig {
                name: Some(name),
                description: Some(format!("vigil partition reader of {}", partition_subject(self.partition))),
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: self.next_sequence },
                ack_policy: AckPolicy::None,
                filter_subject: partition_subject(self.partition),
                inactive_threshold: threshold,
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            };
            let consumer = self
                .jetstream
                .create_consumer_on_stream(config, EVENT_STREAM)
                .await
                .map_err(|err| format!("creating a consumer from sequence {}: {err}", self.next_sequence))?;
            self.consumer = Some(consumer);
            self.delivered = 0;
            self.recreated += 1;
        }
        let Some(consumer) = self.consumer.as_ref() else {
            return Err("no consumer".to_owned());
        };
        consumer
            .batch()
            .max_messages(self.config.max_messages)
            .max_bytes(self.config.max_bytes)
            .expires(self.config.max_wait)
            .messages()
            .await
            .map_err(|err| format!("pull request: {err}"))
    }

    /// Checks a delivery; `None` when it must not be handed out (a gap means the consumer
    /// is recreated).
    fn accept(&mut self, message: Message) -> Option<Record> {
        let (stream_sequence, consumer_sequence, pending) = match message.info() {
            Ok(info) => (info.stream_sequence, info.consumer_sequence, info.pending),
            Err(_) => (0, 0, 0),
        };
        if consumer_sequence != self.delivered + 1 {
            // A delivery was lost (or the reply subject unreadable): resume by sequence.
            self.batch = None;
            self.drop_consumer();
            return None;
        }
        self.delivered = consumer_sequence;
        self.in_batch += 1;
        self.caught_up = pending == 0;
        if stream_sequence < self.next_sequence {
            return None;
        }
        self.next_sequence = stream_sequence + 1;
        let (message, _acker) = message.split();
        Some(Record {
            sequence: stream_sequence,
            subject: message.subject.to_string(),
            headers: message.headers.unwrap_or_default(),
            payload: message.payload,
            pending,
        })
    }

    /// Forgets the consumer and deletes it in the background (it also expires on its own).
    fn drop_consumer(&mut self) {
        self.batch = None;
        self.caught_up = false;
        if let Some(consumer) = self.consumer.take() {
            let jetstream = self.jetstream.clone();
            let name = consumer.cached_info().name.clone();
            tokio::spawn(async move {
                let _ = jetstream.delete_consumer_from_stream(name, EVENT_STREAM).await;
            });
        }
    }

    async fn failed(&mut self, last: String) -> Result<(), ReadError> {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        let duration = since.elapsed();
        if duration >= self.config.give_up_after {
            self.failing_since = None;
            return Err(ReadError::Unavailable { partition: self.partition, duration, last });
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(self.config.backoff_max.max(BACKOFF_MIN));
        Ok(())
    }
}
