//! The `VIGIL_EVENTS` stream: one subject per partition, limits retention, discard new.

use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
use async_nats::jetstream::{self, ErrorCode, stream};

use crate::publish::{Publisher, PublisherConfig};
use crate::reader::{PartitionReader, ReaderConfig};
use crate::{BoxError, Nats};

/// The stream that holds accepted event batches.
pub const EVENT_STREAM: &str = "VIGIL_EVENTS";
/// Partition `p` is the subjects `vigil.events.<p>.<org>.<node>`.
pub const EVENT_SUBJECT_PREFIX: &str = "vigil.events";

/// The subjects of partition `partition`: `vigil.events.<p>.>`.
pub fn partition_subject(partition: u16) -> String {
    format!("{EVENT_SUBJECT_PREFIX}.{partition}.>")
}

/// The subject of a batch of org `org`'s events published by node `node`
/// to partition `partition`. The org and the node are in the subject so
/// that the server's permissions can bind a collector to its name and org.
pub fn batch_subject(partition: u16, org: u32, node: &str) -> String {
    format!("{EVENT_SUBJECT_PREFIX}.{partition}.{org}.{node}")
}

/// The partition, org and node of a batch subject.
pub fn parse_batch_subject(subject: &str) -> Option<(u16, u32, &str)> {
    let rest = subject.strip_prefix(EVENT_SUBJECT_PREFIX)?.strip_prefix('.')?;
    let mut parts = rest.splitn(3, '.');
    let partition = parts.next()?.parse().ok()?;
    let org = parts.next()?.parse().ok()?;
    let node = parts.next().filter(|n| !n.is_empty() && !n.contains('.'))?;
    Some((partition, org, node))
}

/// What the event stream must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Number of partitions (subjects `vigil.events.0` .. `vigil.events.<partitions - 1>`).
    pub partitions: u16,
    /// Copies kept by a JetStream cluster (1 on a single server).
    pub replicas: usize,
    /// Size limit of the stream; when it is reached new publishes are refused (discard
    /// new), so publishers see backpressure and nothing is dropped silently. Must be > 0.
    pub max_bytes: u64,
    /// Window in which a repeated `Nats-Msg-Id` is not stored again. Must cover the longest
    /// time a publisher keeps retrying a batch.
    pub duplicate_window: Duration,
    /// Age after which messages are removed even if nobody purged them; `None` keeps them
    /// until purged (the default: an owner purges what it has stored and checkpointed).
    pub max_age: Option<Duration>,
}

impl StreamSpec {
    /// A spec with `partitions` partitions, one replica, 1 GiB, a 2 min duplicate window.
    pub fn new(partitions: u16) -> StreamSpec {
        StreamSpec {
            partitions,
            replicas: 1,
            max_bytes: 1 << 30,
            duplicate_window: Duration::from_secs(120),
            max_age: None,
        }
    }

    fn subjects(&self) -> Vec<String> {
        (0..self.partitions).map(partition_subject).collect()
    }

    fn to_config(&self) -> Result<stream::Config, StreamError> {
        if self.partitions == 0 {
            return Err(StreamError::InvalidSpec("partitions must be at least 1".into()));
        }
        let max_bytes = i64::try_from(self.max_bytes).ok().filter(|&bytes| bytes > 0).ok_or_else(|| {
            StreamError::InvalidSpec(format!("max_bytes must be 1..=i64::MAX, not {}", self.max_bytes))
        })?;
        if self.replicas == 0 {
            return Err(StreamError::InvalidSpec("replicas must be at least 1".into()));
        }
        Ok(stream::Config {
            name: EVENT_STREAM.to_owned(),
            description: Some("vigil: accepted event batches, one subject per partition".to_owned()),
            subjects: self.subjects(),
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::New,
            storage: stream::StorageType::File,
            max_bytes,
            max_messages: -1,
            max_messages_per_subject: -1,
            max_age: self.max_age.unwrap_or_default(),
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
            ..Default::default()
        })
    }
}

/// The server cannot set aside the file storage a stream's size limit asks for.
///
/// JetStream reserves each stream's `max_bytes` against the server's
/// `max_file_store`, which, unless configured, is 75 % of the disk free under
/// `store_dir` when the server started. A nearly full disk therefore refuses
/// vigil's streams before a byte is written; the bare server error
/// ("insufficient storage resources available") does not say so.
#[derive(Debug, thiserror::Error)]
#[error(
    "the NATS server cannot reserve {mib} MiB of JetStream file storage for stream {stream}: its \
     `jetstream {{ max_file_store }}` (unless set: 75 % of the disk free under store_dir when the server \
     started) is too small for the limits of vigil's streams. Free disk space and restart nats-server, set \
     max_file_store, or lower cluster.stream_max_mb ({source})"
)]
pub struct NoStorage {
    /// The stream that could not be created or resized.
    pub stream: String,
    /// The size limit it asked for, MiB.
    pub mib: u64,
    /// The server's error.
    pub source: BoxError,
}

/// `err` as [`NoStorage`] when it says the server has too little JetStream
/// storage left for `max_bytes`, else as it is.
pub(crate) fn no_storage(stream: &str, max_bytes: i64, err: CreateStreamError) -> Result<NoStorage, CreateStreamError> {
    let short = matches!(err.kind(), CreateStreamErrorKind::JetStream(e)
        if [ErrorCode::STORAGE_RESOURCES_EXCEEDED, ErrorCode::INSUFFICIENT_RESOURCES].contains(&e.error_code()));
    if !short {
        return Err(err);
    }
    let mib = u64::try_from(max_bytes).unwrap_or(0).div_ceil(1 << 20);
    Ok(NoStorage { stream: stream.to_owned(), mib, source: err.into() })
}

/// Errors of stream set-up, inspection and purge.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The spec cannot be turned into a stream.
    #[error("invalid event stream spec: {0}")]
    InvalidSpec(String),
    /// `VIGIL_EVENTS` exists with a layout vigil cannot use as asked.
    #[error("stream {EVENT_STREAM} exists but is incompatible: {0} (delete it or use its settings)")]
    Incompatible(String),
    /// `VIGIL_EVENTS` does not exist (the supervisor creates it).
    #[error("stream {EVENT_STREAM} does not exist (the supervisor creates it)")]
    Missing,
    /// A partition number beyond the stream's partitions.
    #[error("partition {partition} does not exist: the stream has {partitions} partitions")]
    NoSuchPartition {
        /// The partition asked for.
        partition: u16,
        /// How many there are.
        partitions: u16,
    },
    /// The server has too little JetStream storage left for the stream's size limit.
    #[error(transparent)]
    NoStorage(#[from] NoStorage),
    /// A JetStream request failed.
    #[error("{op} on stream {EVENT_STREAM} failed: {source}")]
    Nats {
        /// What was being done.
        op: &'static str,
        /// The client's error.
        source: BoxError,
    },
}

fn nats_err(op: &'static str) -> impl FnOnce(BoxError) -> StreamError {
    move |source| StreamError::Nats { op, source }
}

/// Counts of the event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Sequence of the oldest stored message (0 when empty at creation).
    pub first_sequence: u64,
    /// Sequence of the newest message ever stored.
    pub last_sequence: u64,
}

/// A handle on `VIGIL_EVENTS`: publishers, readers and purges of its partitions.
#[derive(Clone, Debug)]
pub struct EventStream {
    jetstream: jetstream::Context,
    stream: stream::Stream,
    partitions: u16,
}

/// Creates `VIGIL_EVENTS` as `spec` says, or checks an existing one. An existing stream
/// with other subjects (another partition count), retention, discard policy or storage is
/// an [`StreamError::Incompatible`] error; differing limits (`max_bytes`, duplicate window,
/// `max_age`, replicas) are updated to the spec, so raising a limit is a restart away.
pub async fn ensure_event_stream(nats: &Nats, spec: &StreamSpec) -> Result<EventStream, StreamError> {
    let wanted = spec.to_config()?;
    let js = nats.jetstream();
    match js.get_stream(EVENT_STREAM).await {
        Ok(mut existing) => {
            let info = existing.info().await.map_err(|err| nats_err("stream info")(err.into()))?;
            let have = info.config.clone();
            check_compatible(&have, &wanted)?;
            let limits_differ = have.max_bytes != wanted.max_bytes
                || have.duplicate_window != wanted.duplicate_window
                || have.max_age != wanted.max_age
                || have.num_replicas != wanted.num_replicas;
            if limits_differ {
                let update = stream::Config {
                    max_bytes: wanted.max_bytes,
                    duplicate_window: wanted.duplicate_window,
                    max_age: wanted.max_age,
                    num_replicas: wanted.num_replicas,
                    ..have
                };
                js.update_stream(update).await.map_err(|err| {
                    match no_storage(EVENT_STREAM, wanted.max_bytes, err) {
                        Ok(short) => StreamError::NoStorage(short),
                        Err(err) => nats_err("update stream limits")(err.into()),
                    }
                })?;
            }
        }
        Err(err) if is_stream_not_found(&err) => {
            let max_bytes = wanted.max_bytes;
            js.create_stream(wanted).await.map_err(|err| match no_storage(EVENT_STREAM, max_bytes, err) {
                Ok(short) => StreamError::NoStorage(short),
                Err(err) => nats_err("create stream")(err.into()),
            })?;
        }
        Err(err) => return Err(nats_err("look up stream")(err.into())),
    }
    open_event_stream(nats).await
}

/// Opens an existing `VIGIL_EVENTS` (workers and collectors; the supervisor creates it).
pub async fn open_event_stream(nats: &Nats) -> Result<EventStream, StreamError> {
    let js = nats.jetstream();
    let stream = match js.get_stream(EVENT_STREAM).await {
        Ok(stream) => stream,
        Err(err) if is_stream_not_found(&err) => return Err(StreamError::Missing),
        Err(err) => return Err(nats_err("look up stream")(err.into())),
    };
    let partitions = partitions_of(&stream.cached_info().config.subjects)?;
    Ok(EventStream { jetstream: js.clone(), stream, partitions })
}

/// Opens `VIGIL_EVENTS`, waiting while it does not exist yet (the
/// supervisor creates it; collectors and workers may start first). Says so
/// once on standard error, as `who`.
pub async fn wait_for_event_stream(nats: &Nats, who: &str) -> Result<EventStream, StreamError> {
    let mut said = false;
    loop {
        match open_event_stream(nats).await {
            Err(StreamError::Missing) => {
                if !said {
                    eprintln!("vigil {who}: waiting for the supervisor to create the event stream");
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

fn is_stream_not_found(err: &jetstream::context::GetStreamError) -> bool {
    matches!(
        err.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(api)
            if api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// The partition count of a stream whose subjects are exactly `vigil.events.<0..N>.>`.
fn partitions_of(subjects: &[String]) -> Result<u16, StreamError> {
    let count = u16::try_from(subjects.len())
        .map_err(|_| StreamError::Incompatible(format!("{} subjects, more than vigil's partitions", subjects.len())))?;
    let expected: Vec<String> = (0..count).map(partition_subject).collect();
    let mut sorted = subjects.to_vec();
    sorted.sort_by_key(|subject| {
        subject
            .strip_prefix(EVENT_SUBJECT_PREFIX)
            .and_then(|s| s.strip_prefix('.'))
            .and_then(|s| s.strip_suffix(".>"))
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    if count == 0 || sorted != expected {
        return Err(StreamError::Incompatible(format!(
            "subjects {subjects:?} are not {EVENT_SUBJECT_PREFIX}.0.> .. {EVENT_SUBJECT_PREFIX}.<partitions - 1>.> \
             (a stream of an older vigil: let the workers drain it, then delete it)"
        )));
    }
    Ok(count)
}

fn check_compatible(have: &stream::Config, wanted: &stream::Config) -> Result<(), StreamError> {
    let have_partitions = partitions_of(&have.subjects)?;
    let wanted_partitions = wanted.subjects.len();
    if usize::from(have_partitions) != wanted_partitions {
        return Err(StreamError::Incompatible(format!(
            "it has {have_partitions} partitions, {wanted_partitions} were asked for"
        )));
    }
    if have.retention != wanted.retention {
        return Err(StreamError::Incompatible(format!(
            "retention is {:?}, vigil needs limits (a work queue cannot be replayed)",
            have.retention
        )));
    }
    if have.discard != wanted.discard || have.discard_new_per_subject {
        return Err(StreamError::Incompatible(format!(
            "discard policy is {:?}{}, vigil needs discard new (old events must never be dropped silently)",
            have.discard,
            if have.discard_new_per_subject { " per subject" } else { "" }
        )));
    }
    if have.storage != wanted.storage {
        return Err(StreamError::Incompatible(format!("storage is {:?}, vigil needs file storage", have.storage)));
    }
    if have.max_messages_per_subject > 0 || have.max_messages > 0 {
        return Err(StreamError::Incompatible(format!(
            "message count limits are set (max_msgs {}, per subject {}); vigil limits bytes only",
            have.max_messages, have.max_messages_per_subject
        )));
    }
    if have.sealed || have.deny_purge {
        return Err(StreamError::Incompatible("it is sealed or denies purge; owners purge what they stored".into()));
    }
    Ok(())
}

impl EventStream {
    /// Number of partitions.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The JetStream context it uses.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    pub(crate) fn check_partition(&self, partition: u16) -> Result<(), StreamError> {
        if partition < self.partitions {
            Ok(())
        } else {
            Err(StreamError::NoSuchPartition { partition, partitions: self.partitions })
        }
    }

    /// Current counts of the stream.
    pub async fn state(&self) -> Result<StreamState, StreamError> {
        let mut stream = self.stream.clone();
        let info = stream.info().await.map_err(|err| nats_err("stream info")(err.into()))?;
        Ok(StreamState {
            messages: info.state.messages,
            bytes: info.state.bytes,
            first_sequence: info.state.first_sequence,
            last_sequence: info.state.last_sequence,
        })
    }

    /// Deletes partition `partition`'s messages with a stream sequence below `sequence`
    /// (the owner calls it once those events are stored and its checkpoint covers them).
    /// Returns how many messages were removed.
    pub async fn purge_partition_below(&self, partition: u16, sequence: u64) -> Result<u64, StreamError> {
        self.check_partition(partition)?;
        if sequence <= 1 {
            return Ok(0);
        }
        let response = self
            .stream
            .purge()
            .filter(partition_subject(partition))
            .sequence(sequence)
            .await
            .map_err(|err| nats_err("purge partition")(err.into()))?;
        Ok(response.purged)
    }

    /// A publisher onto this stream's partitions.
    pub fn publisher(&self, config: PublisherConfig) -> Publisher {
        Publisher::new(self, config)
    }

    /// A reader of `partition` from stream sequence `start_sequence` on (1 = from the
    /// beginning).
    pub fn reader(
        &self,
        partition: u16,
        start_sequence: u64,
        config: ReaderConfig,
    ) -> Result<PartitionReader, StreamError> {
        self.check_partition(partition)?;
        Ok(PartitionReader::new(self.jetstream.clone(), partition, start_sequence, config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_count_comes_from_exact_subjects() {
        let subjects: Vec<String> = (0..4).rev().map(partition_subject).collect();
        assert_eq!(partitions_of(&subjects).unwrap(), 4);
        assert!(partitions_of(&["vigil.events.*".to_owned()]).is_err());
        assert!(partitions_of(&["vigil.events.0".to_owned(), "vigil.events.2".to_owned()]).is_err());
        assert!(partitions_of(&[]).is_err());
        let old = ["vigil.events.0".to_owned(), "vigil.events.1".to_owned()];
        assert!(partitions_of(&old).unwrap_err().to_string().contains("older vigil"));
    }

    #[test]
    fn batch_subjects_name_partition_org_and_node() {
        let s = batch_subject(3, 17, "edge-a");
        assert_eq!(s, "vigil.events.3.17.edge-a");
        assert_eq!(parse_batch_subject(&s), Some((3, 17, "edge-a")));
        assert_eq!(parse_batch_subject("vigil.events.3.17"), None);
        assert_eq!(parse_batch_subject("vigil.events.3.x.edge-a"), None);
        assert_eq!(parse_batch_subject("vigil.events.3.17.a.b"), None);
    }

    #[test]
    fn spec_is_checked() {
        assert!(StreamSpec { partitions: 0, ..StreamSpec::new(1) }.to_config().is_err());
        assert!(StreamSpec { max_bytes: 0, ..StreamSpec::new(1) }.to_config().is_err());
        assert!(StreamSpec { max_bytes: u64::MAX, ..StreamSpec::new(1) }.to_config().is_err());
        let config = StreamSpec::new(3).to_config().unwrap();
        assert_eq!(config.subjects, ["vigil.events.0.>", "vigil.events.1.>", "vigil.events.2.>"]);
        assert_eq!(config.discard, stream::DiscardPolicy::New);
        assert_eq!(config.retention, stream::RetentionPolicy::Limits);
        assert_eq!(config.max_age, Duration::ZERO);
    }
}
