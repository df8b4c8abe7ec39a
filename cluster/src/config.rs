//! `[cluster]`: the settings the cluster roles share.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[cluster]` of a config file (`vigil supervisor|collector|worker`;
/// `vigil run` ignores it).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// NATS server URL(s), comma-separated (`nats://127.0.0.1:4222`).
    pub nats: Option<String>,
    /// Require TLS to NATS (implied by the three files below and by a
    /// `tls://` URL); the server certificate is verified against the
    /// system's public roots unless `nats_ca_file` names others.
    pub nats_tls: bool,
    /// PEM file of the CA(s) the NATS server's certificate must chain to.
    pub nats_ca_file: Option<PathBuf>,
    /// PEM certificate (chain) this node presents to NATS, when the server
    /// verifies clients (`tls { verify: true }`); with `nats_key_file`.
    pub nats_cert_file: Option<PathBuf>,
    /// PEM private key of `nats_cert_file`.
    pub nats_key_file: Option<PathBuf>,
    /// This node's NATS credentials (`vigil node add` writes them; a
    /// `.creds` file): the server then knows the node by its own key and
    /// lets it do only what its role may. The node's name, org binding and
    /// event-id slot come from it.
    pub creds_file: Option<PathBuf>,
    /// The supervisor's key directory (`vigil cluster init --dir`): it
    /// connects with `supervisor.creds` from there and pushes revocations
    /// with `system.creds`.
    pub keys_dir: Option<PathBuf>,
    /// A collector's disk buffer: while its link to NATS is down, event
    /// batches are appended here (synced) and sent in order, with their
    /// message ids, when it is back. Unset: only the in-memory window.
    pub spool_dir: Option<PathBuf>,
    /// The spool's size limit, MiB; when full the senders are held back.
    pub spool_max_mb: u64,
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
            nats_tls: false,
            nats_ca_file: None,
            nats_cert_file: None,
            nats_key_file: None,
            creds_file: None,
            keys_dir: None,
            spool_dir: None,
            spool_max_mb: 1024,
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
            .field("nats_tls", &self.nats_tls)
            .field("nats_ca_file", &self.nats_ca_file)
            .field("nats_cert_file", &self.nats_cert_file)
            .field("nats_key_file", &self.nats_key_file)
            .field("creds_file", &self.creds_file)
            .field("keys_dir", &self.keys_dir)
            .field("spool_dir", &self.spool_dir)
            .field("spool_max_mb", &self.spool_max_mb)
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
        if self.spool_max_mb == 0 {
            return Err("cluster.spool_max_mb must be positive".into());
        }
        if self.stream_max_mb == 0 {
            return Err("cluster.stream_max_mb must be positive".into());
        }
        if self.nats_cert_file.is_some() != self.nats_key_file.is_some() {
            return Err("cluster.nats_cert_file and cluster.nats_key_file go together".into());
        }
        if let Some(node) = &self.node
            && !crate::valid_node_name(node)
        {
            return Err(format!("cluster.node {node:?}: 1-64 letters, digits, '-' or '_'"));
        }
        Ok(())
    }

    /// Whether connections to NATS must use TLS.
    pub fn nats_requires_tls(&self) -> bool {
        self.nats_tls
            || self.nats_ca_file.is_some()
            || self.nats_cert_file.is_some()
            || self.nats.as_deref().is_some_and(|u| u.split(',').any(|u| u.trim().starts_with("tls://")))
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
    fn tls_settings_are_checked_and_imply_tls() {
        let plain = ClusterConfig { nats: Some("nats://10.0.0.1:4222".into()), ..ClusterConfig::default() };
        assert!(!plain.nats_requires_tls());
        let url = ClusterConfig { nats: Some("nats://a:4222, tls://b:4222".into()), ..ClusterConfig::default() };
        assert!(url.nats_requires_tls());
        let ca = ClusterConfig { nats_ca_file: Some("ca.pem".into()), ..plain.clone() };
        assert!(ca.nats_requires_tls() && ca.validate().is_ok());
        let half = ClusterConfig { nats_cert_file: Some("node.pem".into()), ..plain };
        assert_eq!(half.validate().unwrap_err(), "cluster.nats_cert_file and cluster.nats_key_file go together");
    }

    #[test]
    fn debug_output_hides_nats_credentials() {
        let c = ClusterConfig { nats: Some("nats://vigil:s3cret@10.0.0.1:4222".into()), ..ClusterConfig::default() };
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("10.0.0.1:4222"), "{shown}");
    }
}
