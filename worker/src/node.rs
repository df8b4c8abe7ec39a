//! The worker role, assembled: a [`BatchSource`] of accepted events → ids'
//! receive times, the rule engine, Arrow columns → Parquet; incident
//! updates → a [`DetectionSink`]. `vigil run` passes an in-process channel
//! and the supervisor's ingest queue; a cluster worker passes its NATS
//! JetStream partitions and a detection publisher.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use collector::Clock;
use collector::metrics::{Exposition, label};
use parsers::{DetectionSink, EventTime, IncidentUpdate};
use rules::{Engine, EngineConfig, RuleSet};
use serde::Deserialize;

use crate::events::{EventWriter, EventWriterConfig, WorkerError};
use crate::pipeline::{BatchSource, Detection, Worker, WorkerStats};

/// `[storage]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Milliseconds between writes of buffered events: the most a kill -9 can lose.
    pub flush_interval_ms: u64,
    /// Events per Parquet file at most.
    pub roll_rows: usize,
    /// Megabytes of events on their way to Parquet: columns being filled
    /// are sealed at half of it, and at most the other half wait for the disk.
    pub max_buffer_mb: usize,
    /// Files this old (seconds since last written) are merged into larger
    /// ones, sorted by time; 0: never (see `worker::compact`).
    pub compact_after_secs: u64,
    /// Seconds between compaction passes.
    pub compact_every_secs: u64,
    /// Nice steps the storage threads (Parquet writers, compaction) run
    /// below the process, so that on busy cores the rules go first (0–19;
    /// 0, the default: the same priority; see [`crate::priority`]).
    pub nice: u8,
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            flush_interval_ms: 1_000,
            roll_rows: 256 * 1024,
            max_buffer_mb: 128,
            compact_after_secs: 3_600,
            compact_every_secs: 300,
            nice: 0,
        }
    }
}

impl StorageConfig {
    /// Checks the values a file or flag may get wrong.
    pub fn validate(&self) -> Result<(), WorkerError> {
        if self.flush_interval_ms == 0 || self.roll_rows == 0 || self.max_buffer_mb == 0 {
            return Err(WorkerError::Config(
                "storage.flush_interval_ms, storage.roll_rows and storage.max_buffer_mb must be positive".into(),
            ));
        }
        if self.compact_every_secs == 0 {
            return Err(WorkerError::Config("storage.compact_every_secs must be positive".into()));
        }
        if self.nice > crate::priority::MAX_NICE {
            return Err(WorkerError::Config(format!(
                "storage.nice must be 0 to {} (nice steps below the rules), not {}",
                crate::priority::MAX_NICE,
                self.nice
            )));
        }
        Ok(())
    }
}

/// `[rules]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Run the built-in pack.
    pub builtin: bool,
    /// More rule files or directories (vigil rules and Sigma rules).
    pub paths: Vec<PathBuf>,
    /// Sigma log-source mappings to use instead of the built-in ones
    /// (docs/sigma.md).
    pub sigma_mappings: Option<PathBuf>,
    /// Seconds an event may arrive late and still be evaluated in order.
    pub lateness_secs: f64,
    /// Megabytes the records waiting out the lateness may hold; past it
    /// the oldest are released early (the lateness shrinks, counted).
    pub max_buffer_mb: usize,
    /// Window keys (rule, pattern, group value) held at most; past it the
    /// org with the most loses its stalest (counted).
    pub max_keys: usize,
}

impl Default for RulesConfig {
    fn default() -> RulesConfig {
        RulesConfig {
            builtin: true,
            paths: Vec::new(),
            sigma_mappings: None,
            lateness_secs: 10.0,
            max_buffer_mb: 256,
            max_keys: 500_000,
        }
    }
}

impl RulesConfig {
    /// Checks the values a file or flag may get wrong.
    pub fn validate(&self) -> Result<(), WorkerError> {
        if !(0.0..=3600.0).contains(&self.lateness_secs) {
            return Err(WorkerError::Config("rules.lateness_secs must be 0-3600".into()));
        }
        if self.max_buffer_mb == 0 || self.max_keys == 0 {
            return Err(WorkerError::Config("rules.max_buffer_mb and rules.max_keys must be positive".into()));
        }
        Ok(())
    }

    /// Compiles the configured rules: the set and its warnings, or every
    /// error found (all files are read, so one run reports them all).
    pub fn compile(&self) -> Result<(RuleSet, Vec<String>), Vec<String>> {
        let mut compiler = rules::Compiler::new();
        if let Some(path) = &self.sigma_mappings {
            let mappings = std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| rules::sigma::LogSources::parse(&text))
                .map_err(|e| vec![format!("rules.sigma_mappings {}: {e}", path.display())])?;
            compiler.set_log_sources(mappings);
        }
        if self.builtin {
            for (name, text) in rules::PACK {
                compiler.add_source(name, text);
            }
        }
        for p in &self.paths {
            compiler.add_path(p);
        }
        match compiler.finish() {
            Ok((set, warnings)) => Ok((set, warnings.iter().map(ToString::to_string).collect())),
            Err(diagnostics) => Err(diagnostics.iter().map(ToString::to_string).collect()),
        }
    }

    /// The engine settings these give.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            max_buffer_bytes: self.max_buffer_mb.saturating_mul(1 << 20),
            max_window_keys: self.max_keys,
            ..EngineConfig::for_lateness(Duration::from_secs_f64(self.lateness_secs))
        }
    }
}

/// A detection as the record store takes it.
pub fn update_of(d: &Detection, rules: &RuleSet) -> IncidentUpdate {
    let i = &d.incident;
    let key = i.key.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let ms = |t: EventTime| i64::try_from(t.unix_nanos() / 1_000_000).unwrap_or(0);
    IncidentUpdate {
        rule: i.rule.to_string(),
        org_id: i64::from(i.org_id.0),
        key,
        window_start_ms: ms(i.first_seen),
        title: i.title.clone(),
        description: rules.incident_description(&i.rule),
        tags: rules.rule_tags(&i.rule),
        severity: i.severity,
        count: i.count,
        first_seen_ms: ms(i.first_seen),
        last_seen_ms: ms(i.last_seen),
        event_ids: i.event_ids.clone(),
        received_at_ms: d.received_at.map(ms),
    }
}

/// Everything a worker is started with.
pub struct WorkerSetup {
    /// The node's name (in Parquet file names).
    pub node: String,
    /// The data directory (events go under `DIR/events/`).
    pub data_dir: PathBuf,
    /// Storage settings.
    pub storage: StorageConfig,
    /// The compiled rules.
    pub rules: Arc<RuleSet>,
    /// The engine settings.
    pub engine: EngineConfig,
    /// Told each source position once everything up to it is on disk.
    pub durable: Option<crate::pipeline::Durable>,
    /// At the end of the input, leave rule windows open (a partition
    /// handed to another owner) instead of closing them.
    pub handoff: bool,
    /// An engine restored from a checkpoint, used instead of a new one.
    pub restored: Option<Engine>,
    /// Checkpoints of the engine: at most this often, to this function.
    pub checkpoints: Option<(Duration, crate::pipeline::Checkpointer)>,
    /// The labels of its series (default: `node="<node>"`); a cluster
    /// worker's partitions use `node="<worker>",partition="<p>"`, so series
    /// keep their names across takeovers.
    pub labels: Option<String>,
}

impl WorkerSetup {
    /// A plain worker (`vigil run`'s): no source positions to report, a new
    /// engine, no checkpoints, windows closed at the end, the node's labels.
    pub fn new(
        node: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        storage: StorageConfig,
        rules: Arc<RuleSet>,
        engine: EngineConfig,
    ) -> WorkerSetup {
        WorkerSetup {
            node: node.into(),
            data_dir: data_dir.into(),
            storage,
            rules,
            engine,
            durable: None,
            handoff: false,
            restored: None,
            checkpoints: None,
            labels: None,
        }
    }
}

/// A running worker.
pub struct WorkerNode {
    labels: String,
    stats: Arc<WorkerStats>,
    thread: Mutex<Option<std::thread::JoinHandle<Result<u64, WorkerError>>>>,
    waiting: Arc<AtomicU64>,
    /// The compactor of this node's files (`vigil run`; a cluster worker
    /// compacts its partitions' committed files itself).
    compactor: Mutex<Option<crate::compact::Background>>,
    compact_stats: Option<Arc<crate::compact::CompactStats>>,
}

impl WorkerNode {
    /// Starts the worker thread reading `source` until it ends.
    pub fn start<S>(
        setup: WorkerSetup,
        clock: Arc<dyn Clock>,
        source: S,
        mut sink: impl DetectionSink,
    ) -> Result<WorkerNode, WorkerError>
    where
        S: BatchSource + Send + 'static,
    {
        setup.storage.validate()?;
        // Opened here, so an unwritable data directory fails the start.
        let config = EventWriterConfig {
            roll_rows: setup.storage.roll_rows,
            ..EventWriterConfig::new(&setup.data_dir, &setup.node)
        };
        let writer = EventWriter::open(config, clock.now())?;
        let stats = Arc::new(WorkerStats::default());
        let rules = setup.rules.clone();
        let engine = match setup.restored {
            Some(engine) => engine,
            None => Engine::new(setup.rules, setup.engine),
        };
        let mut worker = Worker::new(writer, engine, stats.clone())
            .with_max_buffer_bytes(setup.storage.max_buffer_mb.saturating_mul(1 << 20))
            .with_storage_nice(setup.storage.nice);
        if let Some(durable) = setup.durable {
            worker = worker.with_durable(durable);
        }
        if setup.handoff {
            worker = worker.with_handoff();
        }
        if let Some((every, checkpoint)) = setup.checkpoints {
            worker = worker.with_checkpoints(every, checkpoint);
        }
        let flush = Duration::from_millis(setup.storage.flush_interval_ms);
        let compactor = match (setup.handoff, setup.storage.compact_after_secs) {
            (false, after) if after > 0 => {
                let config = crate::compact::CompactConfig {
                    min_age: Duration::from_secs(after),
                    ..crate::compact::CompactConfig::new(setup.data_dir.join("events"), &setup.node)
                };
                let every = Duration::from_secs(setup.storage.compact_every_secs);
                let compactor = crate::compact::Compactor::new(config)?;
                Some(crate::compact::Background::start(compactor, clock.clone(), every, setup.storage.nice)?)
            }
            _ => None,
        };
        let compact_stats = compactor.as_ref().map(|c| c.stats().clone());
        let waiting = Arc::new(AtomicU64::new(0));
        let source = Counted { inner: source, waiting: waiting.clone() };
        let thread = std::thread::Builder::new()
            .name("vigil-worker".into())
            .spawn(move || {
                worker.run(&source, clock.as_ref(), flush, |detections| {
                    sink.deliver(detections.iter().map(|d| update_of(d, &rules)).collect());
                })
            })
            .map_err(|e| WorkerError::Io { path: "vigil-worker thread".into(), source: e })?;
        let labels = setup.labels.unwrap_or_else(|| format!("node=\"{}\"", label(&setup.node)));
        Ok(WorkerNode {
            labels,
            stats,
            thread: Mutex::new(Some(thread)),
            waiting,
            compactor: Mutex::new(compactor),
            compact_stats,
        })
    }

    /// The worker's counters.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// Waits for the worker to finish (its source ended and everything
    /// was written); the events written in all.
    pub fn join(&self) -> Result<u64, WorkerError> {
        if let Some(mut c) = self.compactor.lock().unwrap_or_else(PoisonError::into_inner).take() {
            c.stop();
        }
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        match thread {
            Some(t) => t.join().unwrap_or(Err(WorkerError::WriterFailed)),
            None => Ok(self.stats.stored.load(Ordering::Relaxed)),
        }
    }

    /// Writes the worker's series.
    pub fn render_metrics(&self, m: &mut Exposition) {
        let nl = self.labels.clone();
        let w = &self.stats;
        m.latency_summary(
            "vigil_event_to_detection_seconds",
            "From receiving the event that completes an incident's first hit to the rule engine handing the hit \
             over (the allowed lateness included; the record store's part is not).",
            &nl,
            &w.detection_latency.summary(),
        );
        m.latency_summary(
            "vigil_event_to_worker_seconds",
            "From receiving an event to the worker taking it, for the first event of each batch: the queueing \
             before the rule engine.",
            &nl,
            &w.queue_latency.summary(),
        );
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let one = |v: u64| [(nl.clone(), v)];
        let series: [(&'static str, &'static str, &'static str, u64); 13] = [
            ("vigil_events_stored_total", "counter", "Events written to Parquet.", n(&w.stored)),
            ("vigil_parquet_files_total", "counter", "Parquet files written.", n(&w.files)),
            ("vigil_parquet_bytes_total", "counter", "Parquet bytes written.", n(&w.bytes)),
            ("vigil_storage_write_errors_total", "counter", "Failed Parquet writes (retried).", n(&w.write_errors)),
            ("vigil_rule_state_bytes", "gauge", "Correlation engine state, estimated.", n(&w.rule_state_bytes)),
            (
                "vigil_rule_buffer_bytes",
                "gauge",
                "Correlation records waiting out the allowed lateness (part of vigil_rule_state_bytes).",
                n(&w.rule_buffer_bytes),
            ),
            (
                "vigil_rule_window_keys",
                "gauge",
                "Window keys (rule, pattern, group value) the engine holds.",
                n(&w.rule_window_keys),
            ),
            (
                "vigil_rule_evicted_keys",
                "gauge",
                "Window keys dropped at the rules.max_keys ceiling (the stalest of the org holding the most).",
                n(&w.rule_evicted_keys),
            ),
            (
                "vigil_rule_late_events",
                "gauge",
                "Events that arrived later than the allowed lateness: stored, not correlated.",
                n(&w.late_events),
            ),
            (
                "vigil_rule_future_events",
                "gauge",
                "Events stamped ahead of their receive time: correlated at their receive time.",
                n(&w.future_events),
            ),
            (
                "vigil_rule_behind_events",
                "gauge",
                "Events stamped further behind their receive time than half the allowed lateness (a slow clock, local time read as UTC): correlated at that bound, not dropped as late.",
                n(&w.behind_events),
            ),
            (
                "vigil_rule_early_releases",
                "gauge",
                "Records released before the allowed lateness had passed, because the reorder buffers reached rules.max_buffer_mb.",
                n(&w.early_releases),
            ),
            ("vigil_incident_updates_total", "counter", "Incident updates from the rule engine.", n(&w.incidents)),
        ];
        for (name, kind, help, value) in series {
            m.add(name, kind, help, one(value));
        }
        if let Some(c) = &self.compact_stats {
            c.render(m, &nl);
        }
        m.add(
            "vigil_queue_depth",
            "gauge",
            "Batches or updates waiting between stages.",
            [
                (format!("{nl},queue=\"worker\""), n(&self.waiting)),
                (format!("{nl},queue=\"buffered_events\""), n(&w.buffered)),
                (format!("{nl},queue=\"sealed_events\""), n(&w.sealed)),
            ],
        );
    }
}

/// A source that publishes its queue depth for /metrics each time it is
/// read.
struct Counted<S> {
    inner: S,
    waiting: Arc<AtomicU64>,
}

impl<S: BatchSource> BatchSource for Counted<S> {
    fn recv_timeout(&self, wait: Duration) -> Result<Vec<parsers::Event>, crossbeam_channel::RecvTimeoutError> {
        let got = self.inner.recv_timeout(wait);
        self.waiting.store(self.inner.waiting() as u64, Ordering::Relaxed);
        got
    }

    fn waiting(&self) -> usize {
        self.inner.waiting()
    }

    fn position(&self) -> u64 {
        self.inner.position()
    }

    fn replayed(&self) -> bool {
        self.inner.replayed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_settings_out_of_range_are_refused_by_name() {
        assert!(StorageConfig::default().validate().is_ok());
        let nice = StorageConfig { nice: 20, ..StorageConfig::default() }.validate().unwrap_err().to_string();
        assert!(nice.contains("storage.nice must be 0 to 19") && nice.contains("not 20"), "{nice}");
        let roll = StorageConfig { roll_rows: 0, ..StorageConfig::default() }.validate().unwrap_err().to_string();
        assert!(roll.contains("storage.roll_rows"), "{roll}");
        // The file's key: `[storage] nice`.
        let parsed: StorageConfig = toml::from_str("nice = 7").unwrap();
        assert_eq!(parsed, StorageConfig { nice: 7, ..StorageConfig::default() });
    }

    #[test]
    fn the_builtin_rules_compile_and_a_broken_file_reports_every_error() {
        let (set, _) = RulesConfig::default().compile().unwrap();
        assert!(!set.is_empty());
        let dir = std::env::temp_dir().join(format!("vigil-worker-node-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bad.yml"), "rules:\n  - id: x\n    nonsense: 1\n").unwrap();
        let bad = RulesConfig { builtin: false, paths: vec![dir.clone()], ..RulesConfig::default() };
        let errors = bad.compile().unwrap_err();
        assert!(!errors.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A Sigma rule of a log source only the configured mappings know is
    /// loaded with them; a bad mappings file is an error naming it.
    #[test]
    fn sigma_mappings_from_a_file() {
        let dir = std::env::temp_dir().join(format!("vigil-worker-sigma-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        std::fs::write(
            dir.join("rules/r.yml"),
            "title: T\nid: acme-app-1\nlogsource: {product: acme}\ndetection:\n  s: {Operation: wipe}\n  condition: s\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("map.yaml"),
            "- logsource: {product: acme}\n  filter: {app: acme}\n  fields: {Operation: ext.op}\n",
        )
        .unwrap();
        let config = |mappings: Option<PathBuf>| RulesConfig {
            builtin: false,
            paths: vec![dir.join("rules")],
            sigma_mappings: mappings,
            ..RulesConfig::default()
        };
        let (set, warnings) = config(None).compile().unwrap();
        assert!(
            set.is_empty() && warnings.iter().any(|w| w.contains("no mapping for log source acme")),
            "{warnings:?}"
        );
        let (set, _) = config(Some(dir.join("map.yaml"))).compile().unwrap();
        assert_eq!(set.len(), 1);
        std::fs::write(dir.join("bad.yaml"), "not: [a list").unwrap();
        let errors = config(Some(dir.join("bad.yaml"))).compile().unwrap_err();
        assert!(errors[0].starts_with("rules.sigma_mappings ") && errors[0].contains("bad.yaml"), "{errors:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
