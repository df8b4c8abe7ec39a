//! Small control values (org table, EPS budgets) in a KV bucket, with watches.

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::{BoxError, Nats};

/// Opens KV bucket `config.bucket`, creating it with `config` if it does not exist.
pub(crate) async fn ensure_bucket(jetstream: &jetstream::Context, config: kv::Config) -> Result<kv::Store, BoxError> {
    if let Ok(store) = jetstream.get_key_value(config.bucket.clone()).await {
        return Ok(store);
    }
    let bucket = config.bucket.clone();
    match jetstream.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another node may have created it meanwhile.
        Err(create) => jetstream.get_key_value(bucket).await.map_err(|_| create.into()),
    }
}

/// Errors of the control bucket.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// A KV request failed.
    #[error("{op} on KV bucket {bucket} failed: {source}")]
    Nats {
        /// What was being done.
        op: &'static str,
        /// The bucket.
        bucket: String,
        /// The client's error.
        source: BoxError,
    },
}

/// A value change seen by a [`KvWatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvUpdate {
    /// The key.
    pub key: String,
    /// Its revision.
    pub revision: u64,
    /// The new value; `None` when the key was deleted.
    pub value: Option<Bytes>,
}

/// A KV bucket for control values: the supervisor puts, nodes get and watch. One value per
/// key is kept (history 1).
#[derive(Clone, Debug)]
pub struct ControlKv {
    kv: kv::Store,
    bucket: String,
}

impl ControlKv {
    /// Opens bucket `bucket` (letters, digits, `-`, `_`), creating it if needed.
    pub async fn open(nats: &Nats, bucket: &str, replicas: usize) -> Result<ControlKv, KvError> {
        ControlKv::open_bucket(nats, bucket, replicas, None).await
    }

    /// Opens bucket `bucket` whose keys expire `ttl` after their last write (presence
    /// keys), creating it if needed.
    pub async fn open_with_ttl(
        nats: &Nats,
        bucket: &str,
        replicas: usize,
        ttl: std::time::Duration,
    ) -> Result<ControlKv, KvError> {
        ControlKv::open_bucket(nats, bucket, replicas, Some(ttl)).await
    }

    async fn open_bucket(
        nats: &Nats,
        bucket: &str,
        replicas: usize,
        ttl: Option<std::time::Duration>,
    ) -> Result<ControlKv, KvError> {
        let config = kv::Config {
            bucket: bucket.to_owned(),
            description: if ttl.is_some() { "vigil: presence values" } else { "vigil: control values" }.to_owned(),
            history: 1,
            max_age: ttl.unwrap_or_default(),
            num_replicas: replicas.max(1),
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let kv = ensure_bucket(nats.jetstream(), config).await.map_err(|source| KvError::Nats {
            op: "open bucket",
            bucket: bucket.to_owned(),
            source,
        })?;
        Ok(ControlKv { kv, bucket: bucket.to_owned() })
    }

    /// Stores `value` under `key` only if the key is absent (or deleted): the new
    /// revision, or `None` when somebody else's value is there.
    pub async fn create(&self, key: &str, value: Bytes) -> Result<Option<u64>, KvError> {
        match self.kv.create(key, value.clone()).await {
            Ok(revision) => Ok(Some(revision)),
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(err) => match self.kv.entry(key).await {
                // The answer was lost: our own value there means the create went through.
                Ok(Some(entry)) if entry.operation == kv::Operation::Put && entry.value == value => {
                    Ok(Some(entry.revision))
                }
                _ => Err(self.err("create")(err.into())),
            },
        }
    }

    /// Replaces `key`'s value only if it is still at `revision` (compare and set): the
    /// new revision, or `None` when somebody wrote in between.
    pub async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<Option<u64>, KvError> {
        match self.kv.update(key, value.clone(), revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(err) => match self.kv.entry(key).await {
                Ok(Some(entry)) if entry.operation == kv::Operation::Put && entry.value == value => {
                    Ok(Some(entry.revision))
                }
                _ => Err(self.err("update")(err.into())),
            },
        }
    }

    /// Every key of the bucket that starts with `prefix`.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let mut keys = self.kv.keys().await.map_err(|err| self.err("list keys")(err.into()))?;
        let mut found = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|err| self.err("list keys")(err.into()))?;
            if key.starts_with(prefix) {
                found.push(key);
            }
        }
        Ok(found)
    }

    fn err(&self, op: &'static str) -> impl FnOnce(BoxError) -> KvError + '_ {
        move |source| KvError::Nats { op, bucket: self.bucket.clone(), source }
    }

    /// Stores `value` under `key`; returns the new revision.
    pub async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.kv.put(key, value).await.map_err(|err| self.err("put")(err.into()))
    }

    /// The current value of `key` and its revision.
    pub async fn get(&self, key: &str) -> Result<Option<(u64, Bytes)>, KvError> {
        let entry = self.kv.entry(key).await.map_err(|err| self.err("get")(err.into()))?;
        Ok(entry.filter(|entry| entry.operation == kv::Operation::Put).map(|entry| (entry.revision, entry.value)))
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.kv.delete(key).await.map_err(|err| self.err("delete")(err.into()))
    }

    /// Watches `key` (or a pattern such as `budget.*`): first its current value, if any,
    /// then every change as it happens (pushed by the server, no polling).
    pub async fn watch(&self, key: &str) -> Result<KvWatch, KvError> {
        let watch = self.kv.watch_with_history(key).await.map_err(|err| self.err("watch")(err.into()))?;
        Ok(KvWatch { watch, bucket: self.bucket.clone() })
    }
}

/// Changes of watched keys.
pub struct KvWatch {
    watch: kv::Watch,
    bucket: String,
}

impl std::fmt::Debug for KvWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvWatch").field("bucket", &self.bucket).finish_non_exhaustive()
    }
}

impl KvWatch {
    /// The next change; `None` when the watch ended.
    pub async fn next(&mut self) -> Option<Result<KvUpdate, KvError>> {
        let entry = self.watch.next().await?;
        Some(
            entry
                .map(|entry| KvUpdate {
                    key: entry.key,
                    revision: entry.revision,
                    value: (entry.operation == kv::Operation::Put).then_some(entry.value),
                })
                .map_err(|err| KvError::Nats { op: "watch", bucket: self.bucket.clone(), source: err.into() }),
        )
    }
}
