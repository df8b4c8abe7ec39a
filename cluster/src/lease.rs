//! Partition ownership by lease on the KV bucket `vigil_leases`.
//!
//! The bucket keeps one value per key (history 1) and its `max_age` is the lease TTL, so a
//! key nobody renews is removed *by the server*: no clock of any other machine is trusted.
//! Acquiring is a KV `create` (it succeeds only when the key is absent, deleted or expired);
//! renewing is a KV `update` that expects the revision the holder last wrote, so it fails
//! as soon as someone else took the partition. Revisions are stream sequences and only
//! grow: the revision at acquisition is the lease's fencing token.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;

use crate::control::ensure_bucket;
use crate::{BoxError, Nats};

/// The KV bucket holding partition leases.
pub const LEASE_BUCKET: &str = "vigil_leases";

/// Errors of lease operations.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease is no longer ours: it expired, or another owner holds it. The holder must
    /// stop working on the partition.
    #[error("lease on partition {partition} lost{}", holder.as_ref().map(|h| format!(" to {h}")).unwrap_or_default())]
    Lost {
        /// The partition.
        partition: u16,
        /// Who holds it now, if anybody.
        holder: Option<String>,
    },
    /// An owner name must be non-empty and on one line.
    #[error("invalid lease owner {0:?}: it must be non-empty and on one line")]
    InvalidOwner(String),
    /// The bucket exists with another TTL.
    #[error("lease bucket {LEASE_BUCKET} has a TTL of {have:?}, {wanted:?} was asked for (all nodes must agree)")]
    TtlMismatch {
        /// TTL of the existing bucket.
        have: Duration,
        /// TTL asked for.
        wanted: Duration,
    },
    /// A KV request failed; the outcome is unknown. A holder keeps the partition only
    /// while [`Lease::is_valid`].
    #[error("{op} on lease bucket {LEASE_BUCKET} failed: {source}")]
    Nats {
        /// What was being done.
        op: &'static str,
        /// The client's error.
        source: BoxError,
    },
}

/// Ownership of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    partition: u16,
    owner: String,
    value: Bytes,
    fence: u64,
    revision: u64,
    valid_until: Instant,
}

impl Lease {
    /// The partition owned.
    pub fn partition(&self) -> u16 {
        self.partition
    }

    /// The owner name given at acquisition.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Fencing token: the KV revision at acquisition. Every later acquisition of the
    /// partition has a larger one, so storage can refuse writes of a stale owner.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// The KV revision of the last successful acquire or renew.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Until when the lease surely still holds: TTL after the last successful acquire or
    /// renew was *sent* (the server counts from when it received it, which is later).
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// Whether the lease surely still holds now. Stop working on the partition when it
    /// does not, even if the server cannot be reached to say so.
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }
}

/// Who holds a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The owner name.
    pub owner: String,
    /// The KV revision of its last acquire or renew.
    pub revision: u64,
}

/// The lease bucket.
#[derive(Clone, Debug)]
pub struct Leases {
    kv: kv::Store,
    ttl: Duration,
}

fn key(partition: u16) -> String {
    format!("p{partition}")
}

fn owner_of(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    text.split('\n').next().unwrap_or_default().to_owned()
}

impl Leases {
    /// Opens the bucket, creating it with `ttl` as its `max_age` if needed. Renew more
    /// often than `ttl` (e.g. every `ttl / 3`).
    pub async fn open(nats: &Nats, ttl: Duration, replicas: usize) -> Result<Leases, LeaseError> {
        let config = kv::Config {
            bucket: LEASE_BUCKET.to_owned(),
            description: "vigil: partition ownership leases".to_owned(),
            history: 1,
            max_age: ttl,
            num_replicas: replicas.max(1),
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let kv = ensure_bucket(nats.jetstream(), config)
            .await
            .map_err(|source| LeaseError::Nats { op: "open bucket", source })?;
        let status = kv.status().await.map_err(|err| LeaseError::Nats { op: "bucket status", source: err.into() })?;
        if status.max_age() != ttl {
            return Err(LeaseError::TtlMismatch { have: status.max_age(), wanted: ttl });
        }
        Ok(Leases { kv, ttl })
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes partition `partition` for `owner` if nobody holds it (the key is absent,
    /// released or expired); `None` if somebody does.
    pub async fn try_acquire(&self, partition: u16, owner: &str) -> Result<Option<Lease>, LeaseError> {
        if owner.is_empty() || owner.contains(['\n', '\r']) {
            return Err(LeaseError::InvalidOwner(owner.to_owned()));
        }
        let value = Bytes::from(format!("{owner}\n{}", crate::unique_token()));
        let sent = Instant::now();
        let lease = |revision| Lease {
            partition,
            owner: owner.to_owned(),
            value: value.clone(),
            fence: revision,
            revision,
            valid_until: sent + self.ttl,
        };
        match self.kv.create(key(partition), value.clone()).await {
            Ok(revision) => Ok(Some(lease(revision))),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => Ok(None),
            Err(err) => {
                // The answer was lost: the key tells whether the create went through.
                match self.kv.entry(key(partition)).await {
                    Ok(Some(entry)) if entry.operation == Operation::Put && entry.value == value => {
                        Ok(Some(lease(entry.revision)))
                    }
                    _ => Err(LeaseError::Nats { op: "acquire", source: err.into() }),
                }
            }
        }
    }

    /// Extends the lease by the TTL. [`LeaseError::Lost`] means another owner has the
    /// partition or the lease expired: stop working on it.
    pub async fn renew(&self, lease: &mut Lease) -> Result<(), LeaseError> {
        let sent = Instant::now();
        let err = match self.kv.update(key(lease.partition), lease.value.clone(), lease.revision).await {
            Ok(revision) => {
                lease.revision = revision;
                lease.valid_until = sent + self.ttl;
                return Ok(());
            }
            Err(err) => err,
        };
        let wrong_revision = err.kind() == UpdateErrorKind::WrongLastRevision;
        // Our own earlier renew may have gone through unanswered: the value (with its
        // per-acquisition token) is then still ours, at a newer revision.
        let entry = self
            .kv
            .entry(key(lease.partition))
            .await
            .map_err(|source| LeaseError::Nats { op: "renew", source: source.into() })?;
        match entry {
            Some(entry) if entry.operation == Operation::Put && entry.value == lease.value => {
                let revision = self
                    .kv
                    .update(key(lease.partition), lease.value.clone(), entry.revision)
                    .await
                    .map_err(|source| LeaseError::Nats { op: "renew", source: source.into() })?;
                lease.revision = revision;
                lease.valid_until = sent + self.ttl;
                Ok(())
            }
            Some(entry) if entry.operation == Operation::Put => {
                Err(LeaseError::Lost { partition: lease.partition, holder: Some(owner_of(&entry.value)) })
            }
            _ if wrong_revision => Err(LeaseError::Lost { partition: lease.partition, holder: None }),
            // The key is gone (expired) but the update failed for another reason.
            _ => Err(LeaseError::Nats { op: "renew", source: err.into() }),
        }
    }

    /// Gives the partition up (only if the lease is still ours).
    pub async fn release(&self, lease: Lease) -> Result<(), LeaseError> {
        match self.kv.delete_expect_revision(key(lease.partition), Some(lease.revision)).await {
            Ok(()) => Ok(()),
            Err(err) => match self.holder(lease.partition).await? {
                // Someone else holds it, or nobody does: nothing of ours left to release.
                Some(holder) if holder.revision != lease.revision => Ok(()),
                None => Ok(()),
                Some(_) => Err(LeaseError::Nats { op: "release", source: err.into() }),
            },
        }
    }

    /// Who holds `partition` now, if anybody.
    pub async fn holder(&self, partition: u16) -> Result<Option<Holder>, LeaseError> {
        let entry = self
            .kv
            .entry(key(partition))
            .await
            .map_err(|source| LeaseError::Nats { op: "read lease", source: source.into() })?;
        Ok(entry
            .filter(|entry| entry.operation == Operation::Put)
            .map(|entry| Holder { owner: owner_of(&entry.value), revision: entry.revision }))
    }
}
