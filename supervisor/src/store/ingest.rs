//! The pipeline's way in: an idempotent incident upsert behind a bounded
//! queue. Callers never wait on the database: [`Ingest::try_submit`]
//! either queues the update or says the queue is full; one writer task
//! coalesces what is queued by source reference and writes it in a single
//! transaction of multi-row upserts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use collector::metrics::LatencyHistogram;
pub use collector::metrics::LatencySummary;
use tokio::sync::{mpsc, oneshot};

use super::auth::Principal;
use super::error::{Result, StoreError};
use super::model::SUPER_GLOBAL;
use super::records::MAX_EVENT_IDS;
use super::sql::{RowExt, Sql};
use super::{AuditRow, Store};

pub use parsers::protocol::IncidentUpdate;

/// Folds a later report of the same incident into `this`.
fn merge(this: &mut IncidentUpdate, other: IncidentUpdate) {
    this.count = this.count.max(other.count);
    this.first_seen_ms = this.first_seen_ms.min(other.first_seen_ms);
    this.last_seen_ms = this.last_seen_ms.max(other.last_seen_ms);
    merge_ids(&mut this.event_ids, &other.event_ids);
    this.received_at_ms = match (this.received_at_ms, other.received_at_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
}

fn merge_ids(into: &mut Vec<u64>, more: &[u64]) {
    for id in more {
        if into.len() >= MAX_EVENT_IDS {
            break;
        }
        if !into.contains(id) {
            into.push(*id);
        }
    }
}

/// Queue settings.
#[derive(Clone, Copy, Debug)]
pub struct IngestConfig {
    /// Updates that may wait; beyond this `try_submit` refuses.
    pub queue: usize,
    /// Most updates written in one transaction.
    pub max_batch: usize,
}

impl Default for IngestConfig {
    fn default() -> IngestConfig {
        IngestConfig { queue: 65_536, max_batch: 4_096 }
    }
}

/// What the writer has done, for metrics.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Updates taken into the queue.
    pub queued: AtomicU64,
    /// Updates refused because the queue was full.
    pub refused: AtomicU64,
    /// Records written (after coalescing).
    pub written: AtomicU64,
    /// Records created.
    pub created: AtomicU64,
    /// Updates for orgs that do not exist (or Super/Global), dropped.
    pub orphaned: AtomicU64,
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Failed attempts (retried).
    pub errors: AtomicU64,
    /// Event→incident latency of created incidents.
    latency: LatencyHistogram,
}

impl IngestStats {
    /// Event→incident latency of the incidents created so far: from the
    /// listener receiving the newest event of an incident's first hit to
    /// the transaction that created the incident committing.
    pub fn latency(&self) -> LatencySummary {
        self.latency.summary()
    }
}

enum Msg {
    Update(IncidentUpdate),
    Flush(oneshot::Sender<()>),
}

/// The handle callers submit through; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Msg>,
    stats: Arc<IngestStats>,
    capacity: usize,
}

impl Ingest {
    /// Starts the writer task on the current tokio runtime. It ends when
    /// every handle is dropped and the queue is drained.
    pub fn start(store: Arc<Store>, config: IngestConfig) -> (Ingest, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let stats = Arc::new(IngestStats::default());
        let task = tokio::spawn(writer(store, rx, stats.clone(), config.max_batch.max(1)));
        (Ingest { tx, stats, capacity: config.queue.max(1) }, task)
    }

    /// Queues an update without waiting.
    pub fn try_submit(&self, update: IncidentUpdate) -> Result<()> {
        match self.tx.try_send(Msg::Update(update)) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::QueueFull(self.capacity))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StoreError::Closed),
        }
    }

    /// Queues an update, waiting for room (backpressure).
    pub async fn submit(&self, update: IncidentUpdate) -> Result<()> {
        self.tx.send(Msg::Update(update)).await.map_err(|_| StoreError::Closed)?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until everything queued before this call is written.
    pub async fn flush(&self) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Msg::Flush(done)).await.map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)
    }

    /// Updates waiting in the queue.
    pub fn depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    /// The writer's counters.
    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }
}

async fn writer(store: Arc<Store>, mut rx: mpsc::Receiver<Msg>, stats: Arc<IngestStats>, max_batch: usize) {
    let mut batch: HashMap<String, IncidentUpdate> = HashMap::new();
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut taken = 0;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Update(mut u) => {
                    taken += 1;
                    // Keys and titles quote log lines: a NUL in one would
                    // make PostgreSQL refuse the whole batch, forever.
                    for text in [&mut u.rule, &mut u.key, &mut u.title].into_iter().chain(u.tags.iter_mut()) {
                        super::text::escape_controls(text);
                    }
                    u.description.retain(|c| !c.is_control() || c == '\n');
                    if u.description.len() > 10_000 {
                        let cut = (0..=10_000).rev().find(|i| u.description.is_char_boundary(*i)).unwrap_or(0);
                        u.description.truncate(cut);
                    }
                    match batch.entry(u.source_ref()) {
                        std::collections::hash_map::Entry::Occupied(mut e) => merge(e.get_mut(), u),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(u);
                        }
                    }
                }
                Msg::Flush(done) => waiters.push(done),
            }
            if taken < max_batch {
                next = rx.try_recv().ok();
            }
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match write_batch(&store, &batch, &stats).await {
                Ok(()) => break,
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("vigil: incident ingest failed, retrying in {backoff:?}: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

const ROW_PARAMS: usize = 15;

/// What a batch's upserts set off: the policies read in its transaction,
/// and the deliveries queued so far (written together before it commits).
struct Outgoing<'a> {
    policies: &'a [super::connectors::ActivePolicy],
    orgs: &'a HashMap<i64, String>,
    now: i64,
    queued: usize,
    rows: Vec<super::connectors::Queued>,
}

/// Queues what policies say of one upserted incident (`before`: its hit
/// count before this batch, `None` when the batch created it).
async fn notify(
    store: &Store,
    conn: &mut sqlx::AnyConnection,
    out: &mut Outgoing<'_>,
    row: &sqlx::any::AnyRow,
    before: Option<&i64>,
) -> Result<()> {
    let (policies, orgs, now) = (out.policies, out.orgs, out.now);
    let org_id = row.int("org_id")?;
    let org = orgs.get(&org_id).map_or("", String::as_str);
    let severity = row.int("severity")?;
    let name = |n: i64, all: &[&'static str]| usize::try_from(n).ok().and_then(|i| all.get(i).copied()).unwrap_or("");
    let tags: Vec<String> = serde_json::from_str(&row.text("tags")?).unwrap_or_default();
    let rule = row.opt_text("rule_id")?.unwrap_or_default();
    let count = row.int("hit_count")?;
    let incident = serde_json::json!({
        "id": row.int("id")?,
        "title": row.text("title")?,
        "description": row.text("description")?,
        "severity": name(severity, &rules::Severity::ALL.map(|s| s.as_str())),
        "status": name(row.int("status")?, &super::Status::ALL.map(super::Status::as_str)),
        "rule": rule,
        "count": count,
        "first_seen": super::fmt_ms(row.int("first_seen")?),
        "last_seen": super::fmt_ms(row.int("last_seen")?),
        "org": org,
        "org_id": org_id,
        "tags": tags,
    });
    let change = super::connectors::Change {
        record_id: row.int("id")?,
        org_id,
        org,
        created: before.is_none(),
        count_before: before.copied().unwrap_or(0),
        count_after: count,
        status_changed: false,
        severity_changed: false,
        severity,
        rule: &rule,
        tags: &tags,
        incident,
    };
    out.queued += store.enqueue(conn, policies, &change, now, &mut out.rows).await?;
    Ok(())
}

async fn write_batch(store: &Store, batch: &HashMap<String, IncidentUpdate>, stats: &IngestStats) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let now = store.now_ms();
    let mut w = store.write().await?;
    // Orgs that exist: updates for deboarded orgs are dropped, not retried
    // forever.
    let mut orgs: Vec<i64> = batch.values().map(|u| u.org_id).collect();
    orgs.sort_unstable();
    orgs.dedup();
    let mut known: HashMap<i64, String> = HashMap::with_capacity(orgs.len());
    for chunk in orgs.chunks(200) {
        let mut q = Sql::new("SELECT id, name FROM orgs WHERE id IN ");
        q.bind_list(chunk);
        for r in q.build().fetch_all(w.conn()).await? {
            known.insert(r.int("id")?, r.text("name")?);
        }
    }
    let refs: Vec<&String> = batch
        .iter()
        .filter(|(_, u)| u.org_id != SUPER_GLOBAL && known.contains_key(&u.org_id))
        .map(|(r, _)| r)
        .collect();
    stats.orphaned.fetch_add((batch.len() - refs.len()) as u64, Ordering::Relaxed);
    // Policies are read in the transaction that may fire them.
    let policies = store.active_policies(w.conn()).await?;
    let mut existing: HashMap<String, Vec<u64>> = HashMap::with_capacity(refs.len());
    let mut counts_before: HashMap<String, i64> = HashMap::new();
    for chunk in refs.chunks(200) {
        let mut q = Sql::new("SELECT source_ref, event_ids, hit_count FROM records WHERE source_ref IN (");
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.bind((*r).clone());
        }
        q.push(")");
        for row in q.build().fetch_all(w.conn()).await? {
            let ids: Vec<u64> = serde_json::from_str(&row.text("event_ids")?).unwrap_or_default();
            if !policies.is_empty() {
                counts_before.insert(row.text("source_ref")?, row.int("hit_count")?);
            }
            existing.insert(row.text("source_ref")?, ids);
        }
    }
    let mut created = Vec::new();
    let mut out = Outgoing { policies: &policies, orgs: &known, now, queued: 0, rows: Vec::new() };
    for chunk in refs.chunks(store.rows_per_statement()) {
        let mut q = Sql::new(
            "INSERT INTO records AS r (kind, org_id, source_ref, rule_id, title, description, tags, severity, \
             status, hit_count, first_seen, last_seen, event_ids, created_at, updated_at) VALUES ",
        );
        for (i, source_ref) in chunk.iter().enumerate() {
            let Some(u) = batch.get(*source_ref) else { continue };
            let mut ids = existing.get(*source_ref).cloned().unwrap_or_default();
            merge_ids(&mut ids, &u.event_ids);
            if i > 0 {
                q.push(", ");
            }
            q.push("(").bind("incident".to_owned()).push(", ").bind(u.org_id).push(", ");
            q.bind((*source_ref).clone()).push(", ").bind(u.rule.clone()).push(", ").bind(u.title.clone());
            q.push(", ").bind(u.description.clone()).push(", ");
            q.bind(serde_json::to_string(&u.tags).unwrap_or_else(|_| "[]".into()))
                .push(", ")
                .bind(i64::from(u.severity.rank()))
                .push(", ")
                .bind(0_i64);
            q.push(", ").bind(i64::try_from(u.count).unwrap_or(i64::MAX)).push(", ").bind(u.first_seen_ms);
            q.push(", ").bind(u.last_seen_ms).push(", ");
            q.bind(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()));
            q.push(", ").bind(now).push(", ").bind(now).push(")");
        }
        debug_assert!(chunk.len() * ROW_PARAMS < 32_000);
        q.push(
            " ON CONFLICT (source_ref) DO UPDATE SET \
             hit_count = CASE WHEN excluded.hit_count > r.hit_count THEN excluded.hit_count ELSE r.hit_count END, \
             first_seen = CASE WHEN excluded.first_seen < r.first_seen THEN excluded.first_seen ELSE r.first_seen END, \
             last_seen = CASE WHEN excluded.last_seen > r.last_seen THEN excluded.last_seen ELSE r.last_seen END, \
             event_ids = excluded.event_ids, updated_at = excluded.updated_at \
             RETURNING id, source_ref, org_id, rule_id, title, description, tags, severity, status, hit_count, \
             first_seen, last_seen",
        );
        for row in q.build().fetch_all(w.conn()).await? {
            let source_ref = row.text("source_ref")?;
            let is_new = !existing.contains_key(&source_ref);
            if !policies.is_empty() {
                notify(store, w.conn(), &mut out, &row, counts_before.get(&source_ref)).await?;
            }
            if is_new {
                created.push((row.int("id")?, source_ref));
            }
        }
    }
    let rows = created
        .iter()
        .filter_map(|(id, source_ref)| {
            let u = batch.get(source_ref)?;
            Some(AuditRow {
                org_id: Some(u.org_id),
                action: "create",
                object_type: "incident",
                object_id: Some(*id),
                before: None,
                after: Some(serde_json::json!({
                    "rule": u.rule, "title": u.title, "severity": u.severity.as_str(), "source_ref": source_ref,
                })),
            })
        })
        .collect();
    let queued = out.queued;
    store.insert_deliveries(w.conn(), out.rows, now).await?;
    AuditRow::write_many(w.conn(), now, &Principal::pipeline(), rows, store.rows_per_statement()).await?;
    w.commit().await?;
    if queued > 0 {
        store.wake_dispatcher();
    }
    let committed = store.now_ms();
    stats.latency.record(
        created.iter().filter_map(|(_, r)| batch.get(r)?.received_at_ms).map(|at| committed.saturating_sub(at)),
    );
    stats.written.fetch_add(refs.len() as u64, Ordering::Relaxed);
    stats.created.fetch_add(created.len() as u64, Ordering::Relaxed);
    stats.batches.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
