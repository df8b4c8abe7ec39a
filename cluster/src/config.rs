//! `[cluster]`: the settings the cluster roles share.

use std::time::Duration;

use serde::Deserialize;

/// `[cluster]` of a config file (`vigil supervisor|collector|worker`;
/// `vigil run` ignores it).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// NATS server URL(s), comma-separated (`nats://127.0.0.1:4222`).
    pub nats: Option<String>,
    /// This node's name (collectors and workers): letters, digits, `-`, `_`.
    pub node: Option<String>,
    /// Partitions of the event stream (the supervisor creates it; fixed
    /// once it exists). Each org's events go to one partition.
    pub partitions: u16,
    /// Length of an EPS interval, seconds (SPEC §3: 180). The supervisor's
    /// value reaches the collectors.
    pub interval_secs: u64,
    /// Partition lease TTL, seconds: a dead worker's partitions move to a
    /// live one within it (plus a renew period).
    pub lease_ttl_secs: f64,
    /// How much of each partition the stream keeps for a new owner to
    /// rebuild rule windows from, seconds (≥ the longest rule window).
    pub replay_secs: u64,
    /// Seconds between checkpoints of each partition's rule-engine state
    /// (a new owner restores the last one and replays only what follows).
    pub checkpoint_secs: f64,
    /// Seconds between heartbeats.
    pub heartbeat_secs: f64,
    /// A node silent this long is flagged (state `alert`), seconds.
    pub missed_heartbeat_secs: f64,
    /// Size limit of the event stream, MiB: when full, collectors push back.
    pub stream_max_mb: u64,
    /// Run cross-org rules: collectors also publish every batch to the
    /// cross-org partition, whose owner correlates all orgs' events (and
    /// stores none). Set on the supervisor; it reaches every node.
    pub cross_org: bool,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            nats: None,
            node: None,
            partitions: 8,
            interval_secs: 180,
            lease_ttl_secs: 10.0,
            replay_secs: 900,
            checkpoint_secs: 30.0,
            heartbeat_secs: 2.0,
            missed_heartbeat_secs: 10.0,
            stream_max_mb: 1024,
            cross_org: false,
        }
    }
}

/// The NATS URL may hold credentials: `Debug` shows it redacted.
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("nats", &self.nats.as_deref().map(parsers::redact_url))
            .field("node", &self.node)
            .field("partitions", &self.partitions)
            .field("interval_secs", &self.interval_secs)
            .field("lease_ttl_secs", &self.lease_ttl_secs)
            .field("replay_secs", &self.replay_secs)
            .field("checkpoint_secs", &self.checkpoint_secs)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("missed_heartbeat_secs", &self.missed_heartbeat_secs)
            .field("stream_max_mb", &self.stream_max_mb)
            .field("cross_org", &self.cross_org)
            .finish()
    }
}

impl ClusterConfig {
    /// Checks the values a file or flag may get wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1024).contains(&self.partitions) {
            return Err("cluster.partitions must be 1-1024".into());
        }
        if !(1..=86_400).contains(&self.interval_secs) {
            return Err("cluster.interval_secs must be 1-86400".into());
        }
        if !(1.0..=600.0).contains(&self.lease_ttl_secs) {
            return Err("cluster.lease_ttl_secs must be 1-600".into());
        }
        if !(0.2..=60.0).contains(&self.heartbeat_secs) || self.missed_heartbeat_secs < 2.0 * self.heartbeat_secs {
            return Err("cluster.heartbeat_secs must be 0.2-60 and missed_heartbeat_secs at least twice it".into());
        }
        if !(0.1..=86_400.0).contains(&self.checkpoint_secs) {
            return Err("cluster.checkpoint_secs must be 0.1-86400".into());
        }
        if self.stream_max_mb == 0 {
            return Err("cluster.stream_max_mb must be positive".into());
        }
        if let Some(node) = &self.node
            && !crate::valid_node_name(node)
        {
            return Err(format!("cluster.node {node:?}: 1-64 letters, digits, '-' or '_'"));
        }
        Ok(())
    }

    /// The lease TTL.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.lease_ttl_secs)
    }

    /// The checkpoint period.
    pub fn checkpoint_every(&self) -> Duration {
        Duration::from_secs_f64(self.checkpoint_secs)
    }

    /// The heartbeat period.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_secs)
    }

    /// When a silent node is flagged.
    pub fn missed_heartbeat(&self) -> Duration {
        Duration::from_secs_f64(self.missed_heartbeat_secs)
    }
}

/// What the supervisor tells every node through the control bucket
/// (`settings`), so collectors and the supervisor share one interval.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ClusterSettings {
    /// Length of an EPS interval, seconds.
    pub interval_secs: u64,
    /// Batches go to the cross-org partition too (cross-org rules run).
    #[serde(default)]
    pub cross_org: bool,
}

/// The partitions of an event stream with `total` subjects: the org
/// partitions `0..total - 1`, and the last, the cross-org partition.
pub fn org_partitions(total: u16) -> u16 {
    total.saturating_sub(1).max(1)
}

/// The cross-org partition of a stream with `total` subjects.
pub fn cross_partition(total: u16) -> u16 {
    total.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_nats_credentials() {
        let c = ClusterConfig { nats: Some("nats://vigil:s3cret@10.0.0.1:4222".into()), ..ClusterConfig::default() };
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("10.0.0.1:4222"), "{shown}");
    }
}
