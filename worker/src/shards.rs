//! `vigil run`'s worker on several threads: the orgs are split into
//! shards (org id modulo the shard count), and each shard is a whole
//! [`WorkerNode`] of its own (reorder buffers and rule windows, Arrow
//! columns, Parquet writers), like a cluster worker's partitions. An org's
//! events all go to one shard, in the order the collector accepted them, so
//! its correlation is the same on any number of shards.
//!
//! Cross-org rules need every org's events in one engine: a rule set with
//! any runs on one shard.

use std::sync::Arc;

use collector::Clock;
use collector::metrics::{Exposition, label};
use collector::node::{EventSink, SinkClosed};
use crossbeam_channel::{Receiver, Sender};
use parsers::{DetectionSink, Event};
use rules::{EngineConfig, RuleSet};
use serde::Deserialize;

use crate::events::WorkerError;
use crate::node::{StorageConfig, WorkerNode, WorkerSetup};

/// Shards at most.
pub const MAX_SHARDS: usize = 64;

/// Batches waiting for the worker, over all shards (as one worker had).
const QUEUED_BATCHES: usize = 16;

/// `[worker]` (`vigil run`; a cluster worker's threads are its partitions).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShardConfig {
    /// Worker threads, each with its share of the orgs.
    pub shards: usize,
}

impl Default for ShardConfig {
    fn default() -> ShardConfig {
        ShardConfig { shards: 2 }
    }
}

impl ShardConfig {
    /// Checks the values a file or flag may get wrong.
    pub fn validate(&self) -> Result<(), WorkerError> {
        if !(1..=MAX_SHARDS).contains(&self.shards) {
            return Err(WorkerError::Config(format!("worker.shards must be 1-{MAX_SHARDS}, not {}", self.shards)));
        }
        Ok(())
    }
}

/// The shard of an event of org `org` among `shards`.
pub fn shard_of(event: &Event, shards: usize) -> usize {
    event.org_id.map_or(0, |org| org.0 as usize % shards.max(1))
}

/// The collector's side: splits each batch by shard, keeping each org's
/// events in order, and hands every part to its shard's queue (waiting
/// while it is full: the backpressure reaches the senders as before).
pub struct ShardSender {
    queues: Vec<Sender<Vec<Event>>>,
}

impl EventSink for ShardSender {
    fn send(&mut self, mut events: Vec<Event>) -> Result<(), SinkClosed> {
        let n = self.queues.len();
        if n > 1 {
            // Shard 0 keeps the batch's own allocation; the others get one
            // each, filled in order.
            let share = events.len() / n + 1;
            let mut others: Vec<Vec<Event>> = (1..n).map(|_| Vec::new()).collect();
            for event in events.extract_if(.., |e| shard_of(e, n) != 0) {
                let part = &mut others[shard_of(&event, n) - 1];
                if part.capacity() == 0 {
                    part.reserve(share);
                }
                part.push(event);
            }
            for (queue, part) in self.queues[1..].iter().zip(others) {
                if !part.is_empty() {
                    queue.send(part).map_err(|_| SinkClosed)?;
                }
            }
            if events.is_empty() {
                return Ok(());
            }
        }
        self.queues[0].send(events).map_err(|_| SinkClosed)
    }
}

/// The worker side of a [`ShardSender`]: one queue per shard.
pub struct ShardQueues(Vec<Receiver<Vec<Event>>>);

/// The queues between the collector and `shards` worker shards (one if
/// `rules` has cross-org rules that `engine` runs). Together they hold as
/// many batches as one worker's queue did.
pub fn shard_queues(shards: usize, rules: &RuleSet, engine: &EngineConfig) -> (ShardSender, ShardQueues) {
    let cross_org = engine.cross_org && rules.rules().iter().any(|r| matches!(r.scope, rules::Scope::CrossOrg));
    let n = if cross_org { 1 } else { shards.clamp(1, MAX_SHARDS) };
    let depth = (QUEUED_BATCHES / n).max(2);
    let (queues, receivers) = (0..n).map(|_| crossbeam_channel::bounded::<Vec<Event>>(depth)).unzip();
    (ShardSender { queues }, ShardQueues(receivers))
}

/// The shards of `vigil run`'s worker.
pub struct ShardedWorker {
    nodes: Vec<WorkerNode>,
}

impl ShardedWorker {
    /// Starts a worker thread per queue of `queues`, with `setup` split
    /// between them: the memory bounds (`storage.max_buffer_mb`,
    /// `rules.max_buffer_mb`, `rules.max_keys`) are divided, so the process
    /// holds what one worker held. Shard 0 keeps the node's name in its file
    /// names and compacts every shard's files; the others are `<node>-s<i>`.
    pub fn start<K>(
        setup: WorkerSetup,
        queues: ShardQueues,
        clock: Arc<dyn Clock>,
        sink: K,
    ) -> Result<ShardedWorker, WorkerError>
    where
        K: DetectionSink + Clone,
    {
        if setup.durable.is_some() || setup.restored.is_some() || setup.checkpoints.is_some() {
            return Err(WorkerError::Config(
                "a sharded worker keeps no source positions, restored engine or checkpoints (a cluster worker's \
                 partitions do)"
                    .into(),
            ));
        }
        let n = queues.0.len();
        let part = |v: usize| (v / n).max(1);
        let mut nodes = Vec::with_capacity(n);
        for (i, rx) in queues.0.into_iter().enumerate() {
            let shard = WorkerSetup {
                node: if i == 0 { setup.node.clone() } else { format!("{}-s{i}", setup.node) },
                data_dir: setup.data_dir.clone(),
                storage: StorageConfig {
                    max_buffer_mb: part(setup.storage.max_buffer_mb),
                    compact_after_secs: if i == 0 { setup.storage.compact_after_secs } else { 0 },
                    ..setup.storage.clone()
                },
                rules: setup.rules.clone(),
                engine: EngineConfig {
                    max_buffer_bytes: part(setup.engine.max_buffer_bytes),
                    max_window_keys: part(setup.engine.max_window_keys),
                    ..setup.engine.clone()
                },
                durable: None,
                handoff: setup.handoff,
                restored: None,
                checkpoints: None,
                labels: match (&setup.labels, n) {
                    (labels, 1) => labels.clone(),
                    (Some(l), _) => Some(format!("{l},shard=\"{i}\"")),
                    (None, _) => Some(format!("node=\"{}\",shard=\"{i}\"", label(&setup.node))),
                },
            };
            nodes.push(WorkerNode::start(shard, clock.clone(), rx, sink.clone())?);
        }
        Ok(ShardedWorker { nodes })
    }

    /// The number of shards running.
    pub fn shards(&self) -> usize {
        self.nodes.len()
    }

    /// Waits for every shard to finish (the sender was dropped and all was
    /// written); the events written in all, or the first shard's error.
    pub fn join(&self) -> Result<u64, WorkerError> {
        let mut written = 0;
        let mut first_error = None;
        for node in &self.nodes {
            match node.join() {
                Ok(n) => written += n,
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        first_error.map_or(Ok(written), Err)
    }

    /// Writes every shard's series (with a `shard` label when there are
    /// several).
    pub fn render_metrics(&self, m: &mut Exposition) {
        for node in &self.nodes {
            node.render_metrics(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parsers::OrgId;

    fn event(org: Option<u32>, id: u64) -> Event {
        let mut e = Event::empty(bytes::Bytes::new(), parsers::EventTime::from_unix_nanos(0));
        e.id = id;
        e.org_id = org.map(OrgId);
        e
    }

    #[test]
    fn a_batch_is_split_by_org_keeping_each_orgs_order() {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| crossbeam_channel::unbounded::<Vec<Event>>()).unzip();
        let mut sender = ShardSender { queues: txs };
        let batch: Vec<Event> = (0..30).map(|i| event(if i % 7 == 6 { None } else { Some(i % 5) }, i.into())).collect();
        sender.send(batch.clone()).unwrap();
        let mut seen = 0;
        for (shard, rx) in rxs.iter().enumerate() {
            let part = rx.try_recv().unwrap();
            assert!(rx.try_recv().is_err(), "one part per shard per batch");
            assert!(part.iter().all(|e| shard_of(e, 3) == shard), "shard {shard}: {part:?}");
            let ids: Vec<u64> = part.iter().map(|e| e.id).collect();
            let want: Vec<u64> = batch.iter().filter(|e| shard_of(e, 3) == shard).map(|e| e.id).collect();
            assert_eq!(ids, want, "shard {shard} keeps the batch's order");
            seen += part.len();
        }
        assert_eq!(seen, 30, "nothing lost or repeated");
        // Events without an org go to shard 0.
        assert_eq!(shard_of(&event(None, 1), 3), 0);
    }

    #[test]
    fn a_part_with_no_events_is_not_sent_and_one_shard_passes_batches_through() {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..2).map(|_| crossbeam_channel::unbounded::<Vec<Event>>()).unzip();
        let mut sender = ShardSender { queues: txs };
        sender.send(vec![event(Some(1), 1), event(Some(3), 2)]).unwrap();
        assert!(rxs[0].try_recv().is_err(), "no empty batch for shard 0");
        assert_eq!(rxs[1].try_recv().unwrap().len(), 2);

        let (tx, rx) = crossbeam_channel::unbounded::<Vec<Event>>();
        let mut one = ShardSender { queues: vec![tx] };
        let mut batch = Vec::with_capacity(100);
        batch.push(event(Some(9), 1));
        let at = batch.as_ptr() as usize;
        one.send(batch).unwrap();
        let got = rx.try_recv().unwrap();
        assert_eq!(got.as_ptr() as usize, at, "the same allocation, not a copy");
    }

    #[test]
    fn a_closed_shard_is_reported() {
        let (tx, rx) = crossbeam_channel::unbounded::<Vec<Event>>();
        drop(rx);
        let mut sender = ShardSender { queues: vec![tx] };
        assert_eq!(sender.send(vec![event(Some(1), 1)]), Err(SinkClosed));
    }

    #[test]
    fn the_shard_count_is_checked() {
        assert!(ShardConfig { shards: 0 }.validate().is_err());
        assert!(ShardConfig { shards: MAX_SHARDS + 1 }.validate().unwrap_err().to_string().contains("worker.shards"));
        assert!(ShardConfig::default().validate().is_ok());
    }
}
