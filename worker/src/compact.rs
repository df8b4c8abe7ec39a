//! Compaction: the many small files a day of flushes leaves (one per org
//! per flush) merged into a few large ones, sorted by time, so searches
//! open fewer files and prune by `time` better.
//!
//! A compaction of some input files of one date directory goes:
//!
//! 1. write the merged rows to a hidden temporary file and sync it;
//! 2. write `compact-<node>-<id>.inputs` (the input names) and sync it and
//!    the directory;
//! 3. rename the temporary file to `compact-<node>-<id>.parquet` and sync
//!    the directory — the switch;
//! 4. after a grace period longer than any search may run, delete the
//!    inputs, then the `.inputs` file.
//!
//! Readers take a directory's files through [`visible_files`]: a
//! `.inputs` file whose `.parquet` exists hides the inputs it names, so a
//! listing shows the inputs before step 3 and the merged file from step 3
//! on — never both, never neither. A listing the directory changed under
//! (its mtime moved) is taken again. Killed at any step, nothing is lost or
//! doubled: before step 3 the inputs are what readers see and the
//! leftovers (temporary file, `.inputs` without its `.parquet`) are removed
//! by [`Compactor::recover`]; from step 3 on the merged file is what they
//! see and step 4 is finished by the next run.
//!
//! Only committed files are compacted ([`Eligible`]): in `vigil run` every
//! file is committed once written (it has no stream position); a cluster
//! worker's file is committed once its partition's commit record covers
//! it, and from then on no owner removes it, so it is as final as a
//! `vigil run` file. Merged files (`compact-…`) are never taken for a
//! partition's uncommitted leftovers.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;

use crate::events::{WorkerError, file_safe, schema, writer_properties};

/// A cluster worker's file-name predicate ([`Eligible::Committed`]).
pub type CommittedFn = dyn Fn(&str) -> Option<bool> + Send + Sync;

/// Which of a node's `part-` files a pass may merge.
#[derive(Clone)]
pub enum Eligible {
    /// Files written without a stream position (`vigil run`'s, committed
    /// once written).
    Unpositioned,
    /// A cluster worker's files, told by the predicate over the file name:
    /// `None` when the file is not this node's, else whether its
    /// partition's commit record covers it. The predicate may answer from
    /// a stale view of the records: commits only grow, so a stale view
    /// leaves a file for the next pass, never takes one too early.
    Committed(Arc<CommittedFn>),
}

impl std::fmt::Debug for Eligible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Eligible::Unpositioned => "Unpositioned",
            Eligible::Committed(_) => "Committed(..)",
        })
    }
}

/// Compaction settings.
#[derive(Clone, Debug)]
pub struct CompactConfig {
    /// The events directory (`<data-dir>/events`).
    pub root: PathBuf,
    /// This node's name (as in its files' names).
    pub node: String,
    /// A file is compacted once it has not changed for this long (its hour
    /// is closed: the writer has moved on).
    pub min_age: Duration,
    /// Inputs are deleted this long after the switch (longer than any
    /// search runs, so a search that listed them can still read them).
    pub grace: Duration,
    /// Rows in one merged file, at most.
    pub target_rows: usize,
    /// Fewer small files than this in a directory are left alone.
    pub min_files: usize,
    /// zstd level of merged files.
    pub zstd_level: i32,
    /// Which files are final enough to merge.
    pub eligible: Eligible,
}

impl CompactConfig {
    /// Defaults for `root` and `node`: files an hour old, inputs deleted
    /// five minutes after the switch, 250,000 rows a file.
    pub fn new(root: impl Into<PathBuf>, node: &str) -> CompactConfig {
        CompactConfig {
            root: root.into(),
            node: node.to_owned(),
            min_age: Duration::from_secs(3_600),
            grace: Duration::from_secs(300),
            target_rows: 250_000,
            min_files: 2,
            zstd_level: 3,
            eligible: Eligible::Unpositioned,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Merged files written.
    pub outputs: u64,
    /// Input files merged into them.
    pub inputs: u64,
    /// Rows merged.
    pub rows: u64,
    /// Bytes of the inputs merged.
    pub bytes_in: u64,
    /// Bytes of the merged files.
    pub bytes_out: u64,
    /// Inputs deleted after their grace period.
    pub deleted: u64,
}

/// Compacts one node's files under an events directory.
pub struct Compactor {
    config: CompactConfig,
    node: String,
    props: WriterProperties,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkerError + '_ {
    move |source| WorkerError::Io { path: path.to_owned(), source }
}

fn sync_dir(dir: &Path) -> Result<(), WorkerError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// The Parquet files of a date directory that readers use: every
/// `*.parquet` except the inputs of a switched compaction. The listing is
/// taken again if the directory changed while it was read.
pub fn visible_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mtime = |d: &Path| fs::metadata(d).and_then(|m| m.modified()).ok();
    let mut attempt = 0;
    loop {
        let before = mtime(dir);
        let names: BTreeSet<String> =
            fs::read_dir(dir)?.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect();
        let after = mtime(dir);
        attempt += 1;
        if before != after && attempt < 10 {
            continue;
        }
        let mut hidden: BTreeSet<String> = BTreeSet::new();
        for name in names.iter().filter(|n| n.ends_with(".inputs") && !n.starts_with('.')) {
            let merged = format!("{}.parquet", name.trim_end_matches(".inputs"));
            if names.contains(&merged) {
                match fs::read_to_string(dir.join(name)) {
                    Ok(text) => hidden.extend(text.lines().map(str::to_owned)),
                    // Deleted just now, after its inputs: nothing to hide.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        return Ok(names
            .iter()
            .filter(|n| n.ends_with(".parquet") && !n.starts_with('.') && !hidden.contains(*n))
            .map(|n| dir.join(n))
            .collect());
    }
}

impl Compactor {
    /// A compactor of `config.node`'s files.
    pub fn new(config: CompactConfig) -> Result<Compactor, WorkerError> {
        if config.target_rows == 0 || config.min_files < 2 {
            return Err(WorkerError::Config("compaction needs target_rows ≥ 1 and min_files ≥ 2".into()));
        }
        let props = writer_properties(config.zstd_level)?;
        let node = file_safe(&config.node);
        Ok(Compactor { config, node, props })
    }

    /// Whether the `part-…` file `name` is this node's (`None`: another
    /// node's, or not a stored file) and may be merged. A node name that
    /// starts another's (`w1`, `w1-a`) is told apart by the structure of
    /// the rest of the name, not by a prefix.
    fn mine(&self, name: &str) -> Option<bool> {
        match &self.config.eligible {
            // `part-<node>-<start>-<seq>.parquet`, or `part-<node>-s<shard>-<start>-<seq>.parquet`
            // from the node's other worker shards (`crate::shards`): no `-s<position>` suffix.
            Eligible::Unpositioned => {
                let rest = name.strip_prefix("part-")?.strip_prefix(self.node.as_str())?.strip_prefix('-')?;
                let number = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
                let mut parts = rest.strip_suffix(".parquet")?.split('-');
                let first = parts.next()?;
                let start = match first.strip_prefix('s') {
                    Some(shard) if number(shard) => parts.next()?,
                    _ => first,
                };
                let seq = parts.next()?;
                (parts.next().is_none() && number(start) && number(seq)).then_some(true)
            }
            Eligible::Committed(committed) => committed(name),
        }
    }

    /// Whether the merge `compact-<id>` is this node's: merges are named
    /// after their first input (`part-<id>.parquet`).
    fn merged_by_me(&self, merge: &str) -> bool {
        merge.strip_prefix("compact-").is_some_and(|id| self.mine(&format!("part-{id}.parquet")).is_some())
    }

    /// The date directories under the root.
    fn date_dirs(&self) -> Result<Vec<PathBuf>, WorkerError> {
        let root = &self.config.root;
        let mut out = Vec::new();
        let orgs = match fs::read_dir(root) {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(root)(e)),
        };
        for org in orgs {
            let org = org.map_err(io(root))?.path();
            if !org.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("org=")) {
                continue;
            }
            for day in fs::read_dir(&org).map_err(io(&org))? {
                let day = day.map_err(io(&org))?.path();
                if day.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("date=")) {
                    out.push(day);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// After a crash: removes this node's half-made compactions (temporary
    /// files, `.inputs` files whose merged file was never switched in).
    pub fn recover(&self) -> Result<u64, WorkerError> {
        let mut removed = 0;
        for dir in self.date_dirs()? {
            let names: Vec<String> =
                fs::read_dir(&dir).map_err(io(&dir))?.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
            for name in &names {
                let stale_tmp = name
                    .strip_prefix('.')
                    .and_then(|n| n.strip_suffix(".parquet.tmp"))
                    .is_some_and(|id| self.merged_by_me(id));
                let unswitched = name
                    .strip_suffix(".inputs")
                    .is_some_and(|id| self.merged_by_me(id) && !names.contains(&format!("{id}.parquet")));
                if stale_tmp || unswitched {
                    let path = dir.join(name);
                    fs::remove_file(&path).map_err(io(&path))?;
                    removed += 1;
                }
            }
            if removed > 0 {
                sync_dir(&dir)?;
            }
        }
        Ok(removed)
    }

    /// One pass: finishes switched compactions whose grace is over, then
    /// merges what is old enough. `now` is the wall clock the file times
    /// are compared with.
    pub fn run(&self, now: SystemTime) -> Result<CompactReport, WorkerError> {
        let mut report = CompactReport::default();
        for dir in self.date_dirs()? {
            self.finish(&dir, now, &mut report)?;
            self.merge_dir(&dir, now, &mut report)?;
        }
        Ok(report)
    }

    /// Step 4 for the switched compactions of `dir` past their grace.
    fn finish(&self, dir: &Path, now: SystemTime, report: &mut CompactReport) -> Result<(), WorkerError> {
        let sidecars: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name().to_str().and_then(|n| n.strip_suffix(".inputs")).is_some_and(|id| self.merged_by_me(id))
            })
            .map(|e| e.path())
            .collect();
        for sidecar in sidecars {
            if !sidecar.with_extension("parquet").exists() {
                continue;
            }
            let switched = fs::metadata(&sidecar).and_then(|m| m.modified()).map_err(io(&sidecar))?;
            if now.duration_since(switched).unwrap_or_default() < self.config.grace {
                continue;
            }
            let text = fs::read_to_string(&sidecar).map_err(io(&sidecar))?;
            for name in text.lines().filter(|n| !n.is_empty() && !n.contains('/')) {
                let input = dir.join(name);
                match fs::remove_file(&input) {
                    Ok(()) => report.deleted += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&input)(e)),
                }
            }
            sync_dir(dir)?;
            fs::remove_file(&sidecar).map_err(io(&sidecar))?;
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// Steps 1–3 for `dir`'s small files of this node that are old enough.
    fn merge_dir(&self, dir: &Path, now: SystemTime, report: &mut CompactReport) -> Result<(), WorkerError> {
        // Inputs of compactions still in their grace are not inputs again.
        let visible: BTreeSet<PathBuf> = visible_files(dir).map_err(io(dir))?.into_iter().collect();
        let mut candidates: Vec<(PathBuf, u64, i64)> = Vec::new();
        for path in &visible {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if self.mine(name) != Some(true) {
                continue;
            }
            let meta = fs::metadata(path).map_err(io(path))?;
            let modified = meta.modified().map_err(io(path))?;
            if now.duration_since(modified).unwrap_or_default() < self.config.min_age {
                continue;
            }
            let rows = File::open(path)
                .map_err(io(path))
                .and_then(|f| Ok(ParquetRecordBatchReaderBuilder::try_new(f)?.metadata().file_metadata().num_rows()))?;
            candidates.push((path.clone(), meta.len(), rows));
        }
        if candidates.len() < self.config.min_files {
            return Ok(());
        }
        // Groups of whole files up to the target size, in name order.
        let mut groups: Vec<Vec<(PathBuf, u64, i64)>> = Vec::new();
        let mut group: Vec<(PathBuf, u64, i64)> = Vec::new();
        let mut rows_in_group = 0usize;
        for c in candidates {
            let rows = usize::try_from(c.2).unwrap_or(usize::MAX);
            if !group.is_empty() && rows_in_group.saturating_add(rows) > self.config.target_rows {
                groups.push(std::mem::take(&mut group));
                rows_in_group = 0;
            }
            rows_in_group = rows_in_group.saturating_add(rows);
            group.push(c);
        }
        groups.push(group);
        for group in groups.into_iter().filter(|g| g.len() >= 2) {
            self.merge(dir, &group, report)?;
        }
        Ok(())
    }

    /// Merges `group` (path, bytes, rows) into one file sorted by time.
    fn merge(&self, dir: &Path, group: &[(PathBuf, u64, i64)], report: &mut CompactReport) -> Result<(), WorkerError> {
        // Named after its first input (`part-<node>-<start>-<seq>`), which
        // no other merge has.
        let first = group.first().and_then(|g| g.0.file_stem()).and_then(|s| s.to_str()).unwrap_or_default();
        let id = format!("compact-{}", first.trim_start_matches("part-"));
        let tmp = dir.join(format!(".{id}.parquet.tmp"));
        let merged = dir.join(format!("{id}.parquet"));
        let sidecar = dir.join(format!("{id}.inputs"));
        if merged.exists() {
            return Ok(());
        }
        let schema = schema();
        let mut batches: Vec<RecordBatch> = Vec::new();
        for (path, _, _) in group {
            let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).map_err(io(path))?)?.build()?;
            for batch in reader {
                let batch = batch?;
                // Files written by an older schema are left to readers'
                // schema adaptation: merge only what matches exactly.
                let same = batch.schema().fields().len() == schema.fields().len()
                    && batch
                        .schema()
                        .fields()
                        .iter()
                        .zip(schema.fields())
                        .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
                if !same {
                    return Ok(());
                }
                batches.push(batch);
            }
        }
        let all = arrow_select::concat::concat_batches(&schema, &batches)?;
        drop(batches);
        let time = all.column_by_name("time").ok_or_else(|| WorkerError::Config("no time column".into()))?;
        let order = arrow_ord::sort::sort_to_indices(time, None, None)?;
        let columns = all
            .columns()
            .iter()
            .map(|c| arrow_select::take::take(c.as_ref(), &order, None))
            .collect::<Result<Vec<_>, _>>()?;
        let sorted = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        drop(all);
        // 1. The merged rows, synced, under a name no reader takes.
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(self.props.clone()))?;
        // Row groups of about 64k rows: fine-grained `time` statistics.
        for start in (0..sorted.num_rows()).step_by(65_536) {
            writer.write(&sorted.slice(start, 65_536.min(sorted.num_rows() - start)))?;
            writer.flush()?;
        }
        let file = writer.into_inner()?;
        file.sync_all().map_err(io(&tmp))?;
        let bytes_out = file.metadata().map_err(io(&tmp))?.len();
        drop(file);
        // 2. What it replaces.
        let mut names = String::new();
        for (path, _, _) in group {
            if let Some(n) = path.file_name().and_then(|n| n.to_str()) {
                names.push_str(n);
                names.push('\n');
            }
        }
        let mut f = File::create(&sidecar).map_err(io(&sidecar))?;
        f.write_all(names.as_bytes()).map_err(io(&sidecar))?;
        f.sync_all().map_err(io(&sidecar))?;
        sync_dir(dir)?;
        // 3. The switch.
        fs::rename(&tmp, &merged).map_err(io(&merged))?;
        sync_dir(dir)?;
        report.outputs += 1;
        report.inputs += group.len() as u64;
        report.rows += sorted.num_rows() as u64;
        report.bytes_in += group.iter().map(|g| g.1).sum::<u64>();
        report.bytes_out += bytes_out;
        Ok(())
    }
}

/// Compaction counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct CompactStats {
    /// Merged files written.
    pub outputs: std::sync::atomic::AtomicU64,
    /// Input files merged.
    pub inputs: std::sync::atomic::AtomicU64,
    /// Bytes of the inputs merged.
    pub bytes_in: std::sync::atomic::AtomicU64,
    /// Bytes of the merged files.
    pub bytes_out: std::sync::atomic::AtomicU64,
    /// Inputs deleted after their grace.
    pub deleted: std::sync::atomic::AtomicU64,
    /// Passes that failed (retried on the next).
    pub errors: std::sync::atomic::AtomicU64,
}

impl CompactStats {
    /// Writes the compaction series under `labels`.
    pub fn render(&self, m: &mut collector::metrics::Exposition, labels: &str) {
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let series: [(&'static str, &'static str, u64); 6] = [
            ("vigil_compacted_files_total", "Small Parquet files merged into larger ones.", n(&self.inputs)),
            ("vigil_compaction_outputs_total", "Merged Parquet files written.", n(&self.outputs)),
            ("vigil_compaction_bytes_in_total", "Bytes of the files merged.", n(&self.bytes_in)),
            ("vigil_compaction_bytes_out_total", "Bytes of the merged files.", n(&self.bytes_out)),
            (
                "vigil_compaction_deleted_total",
                "Input files deleted after their grace period (their rows are in merged files).",
                n(&self.deleted),
            ),
            ("vigil_compaction_errors_total", "Compaction passes that failed (tried again).", n(&self.errors)),
        ];
        for (name, help, value) in series {
            m.add(name, "counter", help, [(labels.to_owned(), value)]);
        }
    }
}

/// The compactor on a thread of its own, a pass every `every`, until
/// stopped. Ingestion never waits for it: it only reads files the writer
/// has finished with and writes new ones beside them.
pub struct Background {
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<CompactStats>,
}

impl Background {
    /// Recovers what a crash left, then starts the passes; the clock tells
    /// the files' age.
    pub fn start(
        compactor: Compactor,
        clock: Arc<dyn parsers::Clock>,
        every: Duration,
        nice: u8,
    ) -> Result<Background, WorkerError> {
        compactor.recover()?;
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let stats = Arc::new(CompactStats::default());
        let thread = {
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::Builder::new()
                .name("vigil-compact".into())
                .spawn(move || {
                    use std::sync::atomic::Ordering::Relaxed;
                    // Merging files waits; incidents do not (refused: as before).
                    crate::priority::lower_this_thread_or_say(nice, "compaction");
                    loop {
                        {
                            let (lock, wake) = &*stop;
                            let stopped = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                            let (stopped, _) = wake
                                .wait_timeout_while(stopped, every, |s| !*s)
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            if *stopped {
                                return;
                            }
                        }
                        let nanos = u64::try_from(clock.now().unix_nanos()).unwrap_or(0);
                        let now = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
                        match compactor.run(now) {
                            Ok(r) => {
                                stats.outputs.fetch_add(r.outputs, Relaxed);
                                stats.inputs.fetch_add(r.inputs, Relaxed);
                                stats.bytes_in.fetch_add(r.bytes_in, Relaxed);
                                stats.bytes_out.fetch_add(r.bytes_out, Relaxed);
                                stats.deleted.fetch_add(r.deleted, Relaxed);
                            }
                            Err(e) => {
                                stats.errors.fetch_add(1, Relaxed);
                                eprintln!("vigil worker: compaction: {e} (tried again next pass)");
                            }
                        }
                    }
                })
                .map_err(|e| WorkerError::Io { path: "vigil-compact thread".into(), source: e })?
        };
        Ok(Background { stop, thread: Some(thread), stats })
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<CompactStats> {
        &self.stats
    }

    /// Stops after the pass under way, if any.
    pub fn stop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}
