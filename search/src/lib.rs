//! Event search: read-only SQL (DataFusion) over the Parquet files the
//! workers store, scoped to the orgs a caller sees.
//!
//! Each search builds its own session whose only table, `events`, is made
//! from the date directories of the caller's orgs that overlap the time
//! range (`layout.rs`): another org's files are never listed, so no query
//! can name, union or guess its way into them. The table is a view: the
//! stored columns (SPEC §2) with `id` as `event_id`, filtered to the time
//! range, so row-group statistics on `time` prune within the files.
//!
//! Every search is bounded: one statement that only reads
//! (`statement.rs`), a memory pool per query (no spilling to disk), a time
//! limit, a row limit, and a cap on searches running at once.

mod json;
mod layout;
mod statement;
mod udf;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::cache::cache_manager::{CacheManagerConfig, FileMetadataCache, FileStatisticsCache};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, Like, col, lit};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::metrics::MetricValue;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;

pub use json::Column;
pub use statement::MAX_SQL_BYTES;

/// Why a search gave no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// Not one read-only query (400).
    #[error("{0}")]
    Refused(String),
    /// The query does not plan or run: syntax, an unknown column, a type
    /// error, a bad argument (400).
    #[error("{0}")]
    Query(String),
    /// A request parameter is out of range (400).
    #[error("{0}")]
    Invalid(String),
    /// The query needed more memory than a search may use (422).
    #[error(
        "the query needs more than the {limit_mib} MiB a search may use; narrow the time range, select fewer columns, or aggregate"
    )]
    Memory {
        /// The limit, MiB.
        limit_mib: usize,
    },
    /// The query ran past the time limit (422).
    #[error("the query ran longer than the {limit_secs} s a search may take; narrow the time range or the filters")]
    TimedOut {
        /// The limit, seconds.
        limit_secs: u64,
    },
    /// As many searches as allowed are running (503).
    #[error("{running} searches are running, the most allowed at once; try again shortly")]
    Busy {
        /// Searches running.
        running: usize,
    },
    /// Reading the stored files failed (500; the detail goes to the log).
    #[error("reading stored events failed: {0}")]
    Internal(String),
}

/// Search limits and where the events are.
#[derive(Clone, Debug)]
pub struct SearchConfig {
    /// The events directory (`<data-dir>/events`): `org=<id>/date=<day>/*.parquet`.
    pub root: PathBuf,
    /// Most rows one answer holds.
    pub max_rows: usize,
    /// Memory one query may use, bytes.
    pub memory_limit: usize,
    /// How long one query may run.
    pub time_limit: Duration,
    /// Searches running at once; more are refused as busy.
    pub concurrency: usize,
}

impl SearchConfig {
    /// Defaults for the events under `root`: 10,000 rows, 256 MiB, 30 s,
    /// 4 at once.
    pub fn new(root: impl Into<PathBuf>) -> SearchConfig {
        SearchConfig {
            root: root.into(),
            max_rows: 10_000,
            memory_limit: 256 << 20,
            time_limit: Duration::from_secs(30),
            concurrency: 4,
        }
    }
}

/// The `[search]` section of the config file.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSettings {
    /// The events directory to search (default `<data-dir>/events`). In a
    /// cluster, the shared root the workers write under (their
    /// `--data-dir`'s `events`).
    pub events_dir: Option<PathBuf>,
    /// Most rows one answer holds.
    pub max_rows: usize,
    /// Memory one query may use, MiB.
    pub memory_mb: usize,
    /// How long one query may run, seconds.
    pub time_limit_secs: f64,
    /// Searches running at once.
    pub concurrency: usize,
}

impl Default for SearchSettings {
    fn default() -> SearchSettings {
        let d = SearchConfig::new("");
        SearchSettings {
            events_dir: None,
            max_rows: d.max_rows,
            memory_mb: d.memory_limit >> 20,
            time_limit_secs: d.time_limit.as_secs_f64(),
            concurrency: d.concurrency,
        }
    }
}

impl SearchSettings {
    /// The searcher's config for a node whose data directory is `data_dir`.
    pub fn to_config(&self, data_dir: &std::path::Path) -> Result<SearchConfig, SearchError> {
        if !(1..=100_000).contains(&self.max_rows) {
            return Err(SearchError::Invalid("search.max_rows must be 1-100000".into()));
        }
        if !(16..=1 << 20).contains(&self.memory_mb) {
            return Err(SearchError::Invalid("search.memory_mb must be 16-1048576".into()));
        }
        if !(0.1..=3600.0).contains(&self.time_limit_secs) {
            return Err(SearchError::Invalid("search.time_limit_secs must be 0.1-3600".into()));
        }
        if !(1..=256).contains(&self.concurrency) {
            return Err(SearchError::Invalid("search.concurrency must be 1-256".into()));
        }
        Ok(SearchConfig {
            root: self.events_dir.clone().unwrap_or_else(|| data_dir.join("events")),
            max_rows: self.max_rows,
            memory_limit: self.memory_mb << 20,
            time_limit: Duration::from_secs_f64(self.time_limit_secs),
            concurrency: self.concurrency,
        })
    }
}

/// A time range `[from, to)` in UTC nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    /// Start (inclusive).
    pub from: i64,
    /// End (exclusive).
    pub to: i64,
}

impl TimeRange {
    /// The range `[from, to)`; `to` at or before `from` is the empty range
    /// (no events, no buckets), not an error: every pair of times is a
    /// valid request.
    pub fn new(from: i64, to: i64) -> TimeRange {
        TimeRange { from, to: to.max(from) }
    }

    /// Whether it holds no time at all.
    pub fn is_empty(&self) -> bool {
        self.to <= self.from
    }
}

/// `POST /api/v1/search`.
#[derive(Clone, Debug)]
pub struct SqlQuery {
    /// One SELECT over `events`.
    pub sql: String,
    /// The time range `events` holds.
    pub range: TimeRange,
    /// Most rows to return.
    pub limit: usize,
}

/// What a search read and what it skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Parquet files in the date directories read.
    pub files: u64,
    /// Date directories (one org's day) read.
    pub partitions: u64,
    /// Date directories of the caller's orgs outside the time range, not read.
    pub partitions_pruned: u64,
    /// Files skipped whole by their statistics (`time` and other filters).
    pub files_pruned: u64,
    /// Row groups whose statistics could match the filters.
    pub row_groups: u64,
    /// Row groups skipped by their statistics (`time` and other filters).
    pub row_groups_pruned: u64,
    /// Rows read from the files.
    pub rows_scanned: u64,
    /// Bytes read from the files.
    pub bytes_read: u64,
    /// Wall time, milliseconds.
    pub elapsed_ms: u64,
}

/// A SQL answer.
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    /// The result columns.
    pub columns: Vec<Column>,
    /// The rows, each a list of values in column order.
    pub rows: Vec<Vec<Value>>,
    /// More rows matched than `limit`.
    pub truncated: bool,
    /// What was read.
    pub stats: Stats,
}

/// Simple filters (no SQL) for `GET /api/v1/events` and the histogram.
/// Text fields match exactly; `src_ip`/`dst_ip` take an address or a
/// network (`10.0.0.0/8`); `text` is a case-insensitive substring of the
/// message.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// `event_type`.
    pub event_type: Option<String>,
    /// `src_ip`: an address or a network.
    pub src_ip: Option<String>,
    /// `dst_ip`: an address or a network.
    pub dst_ip: Option<String>,
    /// `user`.
    pub user: Option<String>,
    /// `host`.
    pub host: Option<String>,
    /// A substring of `message`, any case.
    pub text: Option<String>,
}

/// Where a page of events ends: the last event's time and id (pages go
/// newest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Event time, UTC nanoseconds.
    pub time: i64,
    /// Event id.
    pub event_id: u64,
}

impl Cursor {
    /// The opaque text form: 16 hex digits of each, joined by `.`.
    pub fn encode(&self) -> String {
        format!("{:016x}.{:016x}", self.time as u64, self.event_id)
    }

    /// From [`Cursor::encode`]'s form.
    pub fn decode(text: &str) -> Result<Cursor, SearchError> {
        let bad = || SearchError::Invalid("`cursor` is not one this server gave".into());
        let hex = |s: &str| {
            (s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                .then(|| u64::from_str_radix(s, 16).ok())
                .flatten()
        };
        let (time, id) = text.split_once('.').ok_or_else(bad)?;
        Ok(Cursor { time: hex(time).ok_or_else(bad)? as i64, event_id: hex(id).ok_or_else(bad)? })
    }
}

/// A page of events, newest first.
#[derive(Clone, Debug, Serialize)]
pub struct EventPage {
    /// The events, as objects of their stored fields.
    pub items: Vec<serde_json::Map<String, Value>>,
    /// Where the next page starts; `null` on the last.
    pub next_cursor: Option<String>,
    /// What was read.
    pub stats: Stats,
}

/// Event counts per time bucket.
#[derive(Clone, Debug, Serialize)]
pub struct Histogram {
    /// The bucket width, seconds.
    pub interval_secs: u64,
    /// Every bucket of the range, oldest first (empty ones count 0).
    pub buckets: Vec<Bucket>,
    /// What was read.
    pub stats: Stats,
}

/// One histogram bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Its start, RFC 3339.
    pub time: String,
    /// Events in it.
    pub count: u64,
}

/// Most buckets a histogram may have.
pub const MAX_BUCKETS: i64 = 10_000;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct SearchCounters {
    /// Searches answered.
    pub answered: AtomicU64,
    /// Searches refused or failed on their input (4xx).
    pub rejected: AtomicU64,
    /// Searches that hit the memory or time limit.
    pub limited: AtomicU64,
    /// Searches refused because too many were running.
    pub busy: AtomicU64,
    /// Searches that failed reading files.
    pub failed: AtomicU64,
    /// Rows read from files.
    pub rows_scanned: AtomicU64,
    /// Bytes read from files.
    pub bytes_read: AtomicU64,
    /// Searches running now.
    pub running: AtomicU64,
}

/// Runs searches over one events directory.
#[derive(Debug, Clone)]
pub struct Searcher {
    config: Arc<SearchConfig>,
    permits: Arc<tokio::sync::Semaphore>,
    counters: Arc<SearchCounters>,
    runtime: Arc<QueryRuntime>,
    caches: Caches,
}

/// What sessions share: the Parquet footers (and page indexes) and the
/// per-file statistics already read, so a query does not read every
/// footer again — the cost that dominates a day of many small files.
/// Entries are keyed by path and checked against the file's size and
/// modification time, so a replaced file is read afresh. Sharing them
/// across callers tells nobody anything: a session only ever asks for
/// the files of its own orgs. (The listing cache is not shared: it never
/// expires, and each session names its files itself.)
#[derive(Clone)]
struct Caches {
    metadata: Arc<FileMetadataCache>,
    statistics: Arc<FileStatisticsCache>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

/// The stored schema with text read as string views: the Parquet reader
/// then points into the pages (dictionary pages included) instead of
/// copying every value, and grouping compares views. Answers name the
/// type `Utf8` all the same ([`json::columns`]).
fn table_schema() -> SchemaRef {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let stored = worker::events::schema();
    let fields: Vec<Field> = stored
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, stored.metadata().clone()))
}

/// Memory the shared footer cache may hold.
const METADATA_CACHE_BYTES: usize = 64 << 20;
/// Memory the shared statistics cache may hold.
const STATISTICS_CACHE_BYTES: usize = 32 << 20;

/// The threads queries run on: their own, so a heavy query never holds up
/// the API's runtime, and the caller's time limit fires (and stops the
/// query) however long the query keeps a thread.
#[derive(Debug)]
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside another
        // runtime (where the last searcher is often dropped).
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A running query's hold on a search slot, given back however the query
/// ends (also when aborted).
struct Slot {
    counters: Arc<SearchCounters>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counters.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The session of one search: its `events` table and what it selected.
struct Session {
    ctx: SessionContext,
    selection: layout::Selection,
}

impl Searcher {
    /// A searcher with `config`'s limits, and threads of its own for the
    /// queries.
    pub fn new(config: SearchConfig) -> Result<Searcher, SearchError> {
        let permits = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(config.concurrency.max(1));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("vigil-search")
            .enable_all()
            .build()
            .map_err(|e| SearchError::Internal(format!("cannot start the search threads: {e}")))?;
        Ok(Searcher {
            config: Arc::new(config),
            permits,
            counters: Arc::default(),
            runtime: Arc::new(QueryRuntime(Some(runtime))),
            caches: Caches {
                metadata: Arc::new(DefaultCache::new(METADATA_CACHE_BYTES).with_name("vigil search footers")),
                statistics: Arc::new(DefaultCache::new(STATISTICS_CACHE_BYTES).with_name("vigil search statistics")),
            },
        })
    }

    /// Its limits.
    pub fn config(&self) -> &SearchConfig {
        &self.config
    }

    /// Its counters.
    pub fn counters(&self) -> &Arc<SearchCounters> {
        &self.counters
    }

    /// Runs one SELECT over the events of `orgs` in `query.range`.
    pub async fn sql(&self, orgs: &[u32], query: &SqlQuery) -> Result<Answer, SearchError> {
        let limit = self.check_limit(query.limit)?;
        let (this, orgs, query) = (self.clone(), orgs.to_vec(), query.clone());
        self.bounded(async move {
            statement::check(&query.sql)?;
            let started = Instant::now();
            let session = this.session(&orgs, query.range).await?;
            let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
            let df = session.ctx.sql_with_options(&query.sql, options).await.map_err(|e| this.classify(e))?;
            this.collect(&session, df, limit, started).await
        })
        .await
    }

    /// A page of the events of `orgs` in `range` that pass `filter`,
    /// newest first, after `cursor`.
    pub async fn events(
        &self,
        orgs: &[u32],
        range: TimeRange,
        filter: &EventFilter,
        limit: usize,
        cursor: Option<Cursor>,
    ) -> Result<EventPage, SearchError> {
        let limit = self.check_limit(limit)?;
        let predicate = predicate(filter)?;
        let (this, orgs) = (self.clone(), orgs.to_vec());
        self.bounded(async move {
            let started = Instant::now();
            let (session, mut df) = this.filtered(&orgs, range, predicate).await?;
            if let Some(c) = cursor {
                let t = time_literal(c.time);
                df = df
                    .filter(col("time").lt(t.clone()).or(col("time").eq(t).and(col("event_id").lt(lit(c.event_id)))))
                    .map_err(|e| this.classify(e))?;
            }
            let df = df
                .sort(vec![col("time").sort(false, false), col("event_id").sort(false, false)])
                .map_err(|e| this.classify(e))?;
            let answer = this.collect(&session, df, limit, started).await?;
            page(answer)
        })
        .await
    }

    /// The events of `orgs` with these ids in `range`, oldest first (an
    /// incident's contributing events).
    pub async fn by_ids(&self, orgs: &[u32], range: TimeRange, ids: &[u64]) -> Result<EventPage, SearchError> {
        let ids: Vec<Expr> = ids.iter().take(self.config.max_rows).map(|id| lit(*id)).collect();
        let (this, orgs) = (self.clone(), orgs.to_vec());
        self.bounded(async move {
            let started = Instant::now();
            let session = this.session(&orgs, range).await?;
            let df = session
                .ctx
                .table("events")
                .await
                .and_then(|df| df.filter(col("event_id").in_list(ids, false)))
                .and_then(|df| df.sort(vec![col("time").sort(true, false), col("event_id").sort(true, false)]))
                .map_err(|e| this.classify(e))?;
            let answer = this.collect(&session, df, this.config.max_rows, started).await?;
            let mut page = page(answer)?;
            page.next_cursor = None;
            Ok(page)
        })
        .await
    }

    /// Counts of the events of `orgs` in `range` that pass `filter`, per
    /// bucket of `interval` seconds (buckets start at multiples of the
    /// interval since the Unix epoch).
    pub async fn histogram(
        &self,
        orgs: &[u32],
        range: TimeRange,
        filter: &EventFilter,
        interval_secs: u64,
    ) -> Result<Histogram, SearchError> {
        let width = i64::try_from(interval_secs)
            .ok()
            .and_then(|s| s.checked_mul(1_000_000_000))
            .filter(|w| *w > 0)
            .ok_or_else(|| SearchError::Invalid("`interval` must be at least one second".into()))?;
        // More than MAX_BUCKETS of the asked width: the narrowest whole
        // number of seconds that fits (the answer says which).
        let span = range.to.saturating_sub(range.from);
        let up = |n: i64, d: i64| n / d + i64::from(n % d > 0);
        let needed = up(up(span, MAX_BUCKETS), 1_000_000_000).saturating_mul(1_000_000_000);
        let width = width.max(needed);
        let interval_secs = u64::try_from(width / 1_000_000_000).unwrap_or(u64::MAX);
        let first = range.from.div_euclid(width).saturating_mul(width);
        let count = if range.is_empty() { 0 } else { up(range.to.saturating_sub(first), width) };
        let predicate = predicate(filter)?;
        let (this, orgs) = (self.clone(), orgs.to_vec());
        self.bounded(async move {
            let started = Instant::now();
            let (session, df) = this.filtered(&orgs, range, predicate).await?;
            let stride = lit(ScalarValue::IntervalMonthDayNano(Some(
                datafusion::arrow::datatypes::IntervalMonthDayNano::new(0, 0, width),
            )));
            let bucket = datafusion::functions::expr_fn::date_bin(stride, col("time"), time_literal(0));
            let df = df
                .aggregate(
                    vec![bucket.alias("bucket")],
                    vec![datafusion::functions_aggregate::expr_fn::count(lit(1)).alias("n")],
                )
                .map_err(|e| this.classify(e))?;
            let answer = this.collect(&session, df, MAX_BUCKETS as usize + 1, started).await?;
            let mut counts: HashMap<String, u64> = HashMap::new();
            for row in answer.rows {
                if let [Value::String(t), n] = row.as_slice() {
                    counts.insert(t.clone(), n.as_u64().unwrap_or(0));
                }
            }
            let buckets = (0..count)
                .map(|i| {
                    let time = rfc3339(first.saturating_add(i.saturating_mul(width)));
                    let count = counts.get(&time).copied().unwrap_or(0);
                    Bucket { time, count }
                })
                .collect();
            Ok(Histogram { interval_secs, buckets, stats: answer.stats })
        })
        .await
    }

    fn check_limit(&self, limit: usize) -> Result<usize, SearchError> {
        if limit == 0 || limit > self.config.max_rows {
            return Err(SearchError::Invalid(format!("`limit` must be 1 to {}", self.config.max_rows)));
        }
        Ok(limit)
    }

    /// Runs `work` on the query threads under the concurrency cap and the
    /// time limit, counting how it ended.
    async fn bounded<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, SearchError>> + Send + 'static,
    ) -> Result<T, SearchError> {
        let c = &self.counters;
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            c.busy.fetch_add(1, Ordering::Relaxed);
            return Err(SearchError::Busy { running: self.config.concurrency });
        };
        let Some(runtime) = self.runtime.0.as_ref() else {
            return Err(SearchError::Internal("the search threads are gone".into()));
        };
        c.running.fetch_add(1, Ordering::Relaxed);
        // The slot stays taken until the query has really stopped, not
        // only until its caller stopped waiting.
        let slot = Slot { counters: self.counters.clone(), _permit: permit };
        let mut task = runtime.spawn(async move {
            let result = work.await;
            drop(slot);
            result
        });
        let limit = self.config.time_limit;
        let result = match tokio::time::timeout(limit, &mut task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(SearchError::Internal(format!("the query stopped: {e}"))),
            Err(_) => {
                // Stops the query at its next batch (its stream is dropped).
                task.abort();
                Err(SearchError::TimedOut { limit_secs: limit.as_secs().max(1) })
            }
        };
        let counter = match &result {
            Ok(_) => &c.answered,
            Err(SearchError::Memory { .. } | SearchError::TimedOut { .. }) => &c.limited,
            Err(SearchError::Internal(_)) => &c.failed,
            Err(_) => &c.rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// A session over the events of `orgs` in `range`, and its `events`
    /// table under `predicate`.
    async fn filtered(
        &self,
        orgs: &[u32],
        range: TimeRange,
        predicate: Option<Expr>,
    ) -> Result<(Session, DataFrame), SearchError> {
        let session = self.session(orgs, range).await?;
        let mut df = session.ctx.table("events").await.map_err(|e| self.classify(e))?;
        if let Some(p) = predicate {
            df = df.filter(p).map_err(|e| self.classify(e))?;
        }
        Ok((session, df))
    }

    /// A session whose `events` table holds the events of `orgs` in `range`.
    async fn session(&self, orgs: &[u32], range: TimeRange) -> Result<Session, SearchError> {
        let root = self.config.root.clone();
        let scope = orgs.to_vec();
        let selection = tokio::task::spawn_blocking(move || layout::select(&root, &scope, range.from, range.to))
            .await
            .map_err(|e| SearchError::Internal(e.to_string()))?
            .map_err(|e| SearchError::Internal(format!("listing {}: {e}", self.config.root.display())))?;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(self.config.memory_limit)))
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .with_cache_manager(
                CacheManagerConfig::default()
                    .with_file_metadata_cache(Some(self.caches.metadata.clone()))
                    .with_metadata_cache_limit(METADATA_CACHE_BYTES)
                    .with_file_statistics_cache(Some(self.caches.statistics.clone()))
                    .with_file_statistics_cache_limit(STATISTICS_CACHE_BYTES),
            )
            .build_arc()
            .map_err(|e| SearchError::Internal(e.to_string()))?;
        let mut config = SessionConfig::new().with_information_schema(false);
        config.options_mut().execution.parquet.pushdown_filters = true;
        config.options_mut().execution.parquet.reorder_filters = true;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            // Nothing that makes rows or reads files by name.
            .with_table_functions(HashMap::new())
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_udf(udf::cidr_match());
        let schema = table_schema();
        let internal = |e: DataFusionError| SearchError::Internal(e.to_string());
        let listing = |files: Vec<&PathBuf>| -> Result<Arc<dyn TableProvider>, SearchError> {
            let urls = files
                .into_iter()
                .map(|f| ListingTableUrl::parse(f.display().to_string()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal)?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(schema.clone());
            Ok(Arc::new(ListingTable::try_new(config).map_err(internal)?))
        };
        // Files of days wholly inside the range are read as they are;
        // those of the days the range cuts (at most its first and last),
        // through the time filter, which the scan pushes down.
        let (whole, cut): (Vec<_>, Vec<_>) = selection.files.iter().partition(|f| f.whole_day);
        let mut table: Option<DataFrame> = None;
        if !whole.is_empty() {
            table = Some(ctx.read_table(listing(whole.into_iter().map(|f| &f.path).collect())?).map_err(internal)?);
        }
        if !cut.is_empty() {
            let filtered = ctx
                .read_table(listing(cut.into_iter().map(|f| &f.path).collect())?)
                .and_then(|df| {
                    df.filter(col("time").gt_eq(time_literal(range.from)).and(col("time").lt(time_literal(range.to))))
                })
                .map_err(internal)?;
            table = Some(match table {
                Some(whole) => whole.union(filtered).map_err(internal)?,
                None => filtered,
            });
        }
        let table = match table {
            Some(t) => t,
            None => ctx
                .read_table(Arc::new(MemTable::try_new(schema, vec![vec![]]).map_err(internal)?))
                .map_err(internal)?,
        };
        let mut columns = vec![col("id").alias("event_id")];
        columns.extend(worker::events::schema().fields().iter().skip(1).map(|f| col(f.name().as_str())));
        let view = table.select(columns).map_err(internal)?.into_view();
        ctx.register_table("events", view).map_err(|e| SearchError::Internal(e.to_string()))?;
        Ok(Session { ctx, selection })
    }

    /// Runs `df`, keeping at most `limit` rows, with what it read.
    async fn collect(
        &self,
        session: &Session,
        df: DataFrame,
        limit: usize,
        started: Instant,
    ) -> Result<Answer, SearchError> {
        let df = df.limit(0, Some(limit + 1)).map_err(|e| self.classify(e))?;
        let columns = json::columns(df.schema().as_arrow());
        let plan = df.create_physical_plan().await.and_then(cooperative).map_err(|e| self.classify(e))?;
        let mut stream = execute_stream(plan.clone(), session.ctx.task_ctx()).map_err(|e| self.classify(e))?;
        let mut rows = Vec::new();
        let mut truncated = false;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| self.classify(e))?;
            if rows.len() + batch.num_rows() > limit {
                truncated = true;
            }
            json::append_rows(&batch, limit - rows.len(), &mut rows).map_err(|e| self.classify(e))?;
            if truncated {
                break;
            }
        }
        drop(stream);
        let mut stats = Stats {
            files: session.selection.files.len() as u64,
            partitions: session.selection.dirs,
            partitions_pruned: session.selection.dirs_pruned,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            ..Stats::default()
        };
        scan_stats(&plan, &mut stats);
        self.counters.rows_scanned.fetch_add(stats.rows_scanned, Ordering::Relaxed);
        self.counters.bytes_read.fetch_add(stats.bytes_read, Ordering::Relaxed);
        Ok(Answer { columns, rows, truncated, stats })
    }

    /// Sorts a DataFusion error into what the caller did and what failed here.
    fn classify(&self, e: DataFusionError) -> SearchError {
        let root = e.find_root();
        match root {
            DataFusionError::ResourcesExhausted(_) => SearchError::Memory { limit_mib: self.config.memory_limit >> 20 },
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Execution(_)
            | DataFusionError::ArrowError(..) => SearchError::Query(root.message().into_owned()),
            _ => SearchError::Internal(e.to_string()),
        }
    }
}

/// The filters as one predicate (`None`: none given).
fn predicate(filter: &EventFilter) -> Result<Option<Expr>, SearchError> {
    let mut parts: Vec<Expr> = Vec::new();
    for (column, value) in [("event_type", &filter.event_type), ("user", &filter.user), ("host", &filter.host)] {
        if let Some(v) = value {
            parts.push(col(column).eq(lit(v.as_str())));
        }
    }
    for (column, value) in [("src_ip", &filter.src_ip), ("dst_ip", &filter.dst_ip)] {
        let Some(v) = value else { continue };
        if v.contains('/') {
            let net: parsers::Network = v.parse().map_err(|e| SearchError::Invalid(format!("`{column}`: {e}")))?;
            parts.push(udf::cidr_match().call(vec![col(column), lit(net.to_string())]).is_true());
        } else {
            let ip: std::net::IpAddr = v
                .trim()
                .parse()
                .map_err(|_| SearchError::Invalid(format!("`{column}`: '{v}' is not an address or a network")))?;
            parts.push(col(column).eq(lit(ip.to_string())));
        }
    }
    if let Some(text) = &filter.text {
        let mut pattern = String::with_capacity(text.len() + 2);
        pattern.push('%');
        for c in text.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        parts.push(Expr::Like(Like::new(false, Box::new(col("message")), Box::new(lit(pattern)), Some('\\'), true)));
    }
    Ok(parts.into_iter().reduce(Expr::and))
}

/// An answer of whole events as a page (the last row tells the cursor).
fn page(answer: Answer) -> Result<EventPage, SearchError> {
    let names: Vec<&str> = answer.columns.iter().map(|c| c.name.as_str()).collect();
    let (Some(time_at), Some(id_at)) =
        (names.iter().position(|n| *n == "time"), names.iter().position(|n| *n == "event_id"))
    else {
        return Err(SearchError::Internal("events without time or event_id".into()));
    };
    let next_cursor = if answer.truncated {
        let last = answer.rows.last();
        let time = last.and_then(|r| r[time_at].as_str()).and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let id = last.and_then(|r| r[id_at].as_u64());
        match (time, id) {
            (Some(t), Some(event_id)) => {
                let time = i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX);
                Some(Cursor { time, event_id }.encode())
            }
            _ => None,
        }
    } else {
        None
    };
    let items = answer
        .rows
        .into_iter()
        .map(|row| names.iter().map(|n| (*n).to_owned()).zip(row).collect::<serde_json::Map<String, Value>>())
        .collect();
    Ok(EventPage { items, next_cursor, stats: answer.stats })
}

/// A `time` literal of UTC nanoseconds.
fn time_literal(nanos: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(Some(nanos), Some(Arc::from("UTC"))))
}

/// RFC 3339 with nanoseconds, as result rows print times.
fn rfc3339(nanos: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.9fZ").to_string())
        .unwrap_or_default()
}

/// `plan` with a yield point above every operator: each batch an operator
/// hands up spends the task's scheduling budget, so even an operator that
/// computes for long between batches (a nested-loop join under an
/// aggregate) lets its task yield, and a query past its time limit stops
/// there when it is aborted.
fn cooperative(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
    plan.transform_up(|node| {
        if node.children().is_empty() || node.name() == "CooperativeExec" {
            return Ok(Transformed::no(node));
        }
        Ok(Transformed::yes(Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

/// Adds the scans' counters in `plan` to `stats`.
fn scan_stats(plan: &Arc<dyn ExecutionPlan>, stats: &mut Stats) {
    if plan.name() == "DataSourceExec"
        && let Some(metrics) = plan.metrics()
    {
        for metric in metrics.iter() {
            match metric.value() {
                MetricValue::PruningMetrics { name, pruning_metrics } if name == "row_groups_pruned_statistics" => {
                    stats.row_groups += pruning_metrics.matched() as u64;
                    stats.row_groups_pruned += pruning_metrics.pruned() as u64;
                }
                MetricValue::PruningMetrics { name, pruning_metrics } if name == "files_ranges_pruned_statistics" => {
                    stats.files_pruned += pruning_metrics.pruned() as u64;
                }
                MetricValue::Count { name, count } if name == "bytes_scanned" => {
                    stats.bytes_read += count.value() as u64;
                }
                // With filters pushed into the scan, the rows it read are
                // those it passed on plus those the filters dropped.
                MetricValue::OutputRows(count) => stats.rows_scanned += count.value() as u64,
                MetricValue::Count { name, count } if name == "pushdown_rows_pruned" => {
                    stats.rows_scanned += count.value() as u64;
                }
                _ => {}
            }
        }
    }
    for child in plan.children() {
        scan_stats(child, stats);
    }
}
