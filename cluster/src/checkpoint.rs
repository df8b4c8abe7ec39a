//! Rule-engine checkpoints per partition in the object store `vigil_checkpoints`.
//!
//! Object `p<N>` holds the latest checkpoint of partition N; the stream sequence it covers
//! and the owner's fencing token are in the object's metadata. A save writes the new
//! chunks, then the object's description, then drops the old chunks, so a reader sees the
//! previous checkpoint or the new one, never a mix (the SHA-256 digest is checked on load).
//! Last save wins: the object store has no conditional write, so an owner saves only while
//! its lease is valid, and a loader can compare the fencing token with its own.

use std::collections::HashMap;

use async_nats::jetstream::object_store::{self, GetErrorKind, ObjectMetadata};
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::{BoxError, Nats};

/// The object store bucket of checkpoints.
pub const CHECKPOINT_BUCKET: &str = "vigil_checkpoints";
const SEQUENCE_KEY: &str = "vigil-covered-seq";
const FENCE_KEY: &str = "vigil-fence";
const CHUNK_SIZE: usize = 256 << 10;

/// Errors of checkpoint storage.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The stored checkpoint is larger than the caller accepts.
    #[error("checkpoint of partition {partition} is {size} bytes, more than the {max} accepted")]
    TooLarge {
        /// The partition.
        partition: u16,
        /// Its size.
        size: usize,
        /// The limit given.
        max: usize,
    },
    /// The object lacks vigil's metadata.
    #[error("checkpoint of partition {partition} is not vigil's: {detail}")]
    Malformed {
        /// The partition.
        partition: u16,
        /// What is wrong.
        detail: String,
    },
    /// An object store request failed.
    #[error("{op} in object store {CHECKPOINT_BUCKET} failed: {source}")]
    Nats {
        /// What was being done.
        op: &'static str,
        /// The client's error.
        source: BoxError,
    },
}

/// A loaded checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The stream sequence the state covers: replay starts after it.
    pub sequence: u64,
    /// The fencing token of the owner that saved it.
    pub fence: u64,
    /// The state blob.
    pub data: Bytes,
}

/// The checkpoint store.
#[derive(Clone)]
pub struct Checkpoints {
    store: object_store::ObjectStore,
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoints").field("bucket", &CHECKPOINT_BUCKET).finish()
    }
}

fn object_name(partition: u16) -> String {
    format!("p{partition}")
}

impl Checkpoints {
    /// Opens the bucket, creating it if needed.
    pub async fn open(nats: &Nats, replicas: usize) -> Result<Checkpoints, CheckpointError> {
        let js = nats.jetstream();
        if let Ok(store) = js.get_object_store(CHECKPOINT_BUCKET).await {
            return Ok(Checkpoints { store });
        }
        let config = object_store::Config {
            bucket: CHECKPOINT_BUCKET.to_owned(),
            description: Some("vigil: rule-engine checkpoints per partition".to_owned()),
            num_replicas: replicas.max(1),
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        };
        match js.create_object_store(config).await {
            Ok(store) => Ok(Checkpoints { store }),
            Err(create) => match js.get_object_store(CHECKPOINT_BUCKET).await {
                Ok(store) => Ok(Checkpoints { store }),
                Err(_) => Err(CheckpointError::Nats { op: "create bucket", source: create.into() }),
            },
        }
    }

    /// Saves `data` as partition `partition`'s checkpoint covering stream sequences up to
    /// `sequence`, by the owner with fencing token `fence` (replacing the previous one).
    pub async fn save(&self, partition: u16, sequence: u64, fence: u64, data: &[u8]) -> Result<(), CheckpointError> {
        let metadata =
            HashMap::from([(SEQUENCE_KEY.to_owned(), sequence.to_string()), (FENCE_KEY.to_owned(), fence.to_string())]);
        let meta = ObjectMetadata {
            name: object_name(partition),
            description: Some(format!("rule state of partition {partition} up to sequence {sequence}")),
            chunk_size: Some(CHUNK_SIZE),
            metadata,
            headers: None,
        };
        let mut reader = data;
        self.store
            .put(meta, &mut reader)
            .await
            .map_err(|err| CheckpointError::Nats { op: "save checkpoint", source: err.into() })?;
        Ok(())
    }

    /// The latest checkpoint of `partition`, refusing one larger than `max_bytes`; `None`
    /// if none was saved.
    pub async fn load(&self, partition: u16, max_bytes: usize) -> Result<Option<Checkpoint>, CheckpointError> {
        let mut object = match self.store.get(object_name(partition)).await {
            Ok(object) => object,
            Err(err) if err.kind() == GetErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(CheckpointError::Nats { op: "load checkpoint", source: err.into() }),
        };
        let info = object.info().clone();
        if info.size > max_bytes {
            return Err(CheckpointError::TooLarge { partition, size: info.size, max: max_bytes });
        }
        let number = |key: &str| -> Result<u64, CheckpointError> {
            info.metadata.get(key).and_then(|text| text.parse().ok()).ok_or_else(|| CheckpointError::Malformed {
                partition,
                detail: format!("metadata {key} missing or not a number"),
            })
        };
        let sequence = number(SEQUENCE_KEY)?;
        let fence = number(FENCE_KEY)?;
        let mut data = Vec::with_capacity(info.size);
        // Bounded even if the object grew after its description was read.
        let limit = u64::try_from(max_bytes).unwrap_or(u64::MAX).saturating_add(1);
        (&mut object)
            .take(limit)
            .read_to_end(&mut data)
            .await
            .map_err(|err| CheckpointError::Nats { op: "read checkpoint", source: err.into() })?;
        if data.len() > max_bytes {
            return Err(CheckpointError::TooLarge { partition, size: data.len(), max: max_bytes });
        }
        if data.len() != info.size {
            return Err(CheckpointError::Malformed {
                partition,
                detail: format!("read {} bytes, its description says {}", data.len(), info.size),
            });
        }
        Ok(Some(Checkpoint { sequence, fence, data: Bytes::from(data) }))
    }

    /// Deletes partition `partition`'s checkpoint (e.g. after the partition count changed).
    pub async fn delete(&self, partition: u16) -> Result<(), CheckpointError> {
        match self.store.delete(object_name(partition)).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
            Err(err) => Err(CheckpointError::Nats { op: "delete checkpoint", source: err.into() }),
        }
    }
}
