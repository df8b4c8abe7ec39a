//! Which stored files a search may read: the date directories of the orgs
//! in the caller's scope that overlap the time range. Tenancy is by
//! construction — another org's directory is never listed, so no SQL can
//! reach it — and the directory layout prunes by date before any file is
//! opened. The files are named one by one (a snapshot of each directory
//! taken through the compactor's rule), so DataFusion never lists a
//! directory itself and a compaction switching over meanwhile is seen
//! either before or after, never half.

use std::path::{Path, PathBuf};

/// A file a search reads.
#[derive(Debug)]
pub(crate) struct Selected {
    pub path: PathBuf,
    /// Its whole day is inside the range: every row of it is (a date
    /// directory holds the events whose time falls in that UTC day), so
    /// it is read without a time filter.
    pub whole_day: bool,
}

/// The files one search reads, and what was left out.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    /// Parquet files to read (those of a compaction's switch point on:
    /// [`worker::compact::visible_files`]).
    pub files: Vec<Selected>,
    /// `org=<id>/date=<day>/` directories they are in.
    pub dirs: u64,
    /// Date directories of the scope's orgs outside the time range.
    pub dirs_pruned: u64,
}

const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// UTC day number of a time in nanoseconds.
pub(crate) fn day_of(nanos: i64) -> i64 {
    nanos.div_euclid(DAY_NS)
}

/// The date directories of `orgs` under `root` (the `events` directory)
/// whose day overlaps `[from, to)` (nanoseconds).
pub(crate) fn select(root: &Path, orgs: &[u32], from: i64, to: i64) -> std::io::Result<Selection> {
    let (first, last) = (day_of(from), day_of(to.saturating_sub(1)));
    let mut out = Selection::default();
    for org in orgs {
        let dir = root.join(format!("org={org}"));
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut days: Vec<(i64, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(day) = name.to_str().and_then(worker::retention::day_of_dir) else { continue };
            if day < first || day > last {
                out.dirs_pruned += 1;
                continue;
            }
            days.push((day, entry.path()));
        }
        days.sort();
        for (day, path) in days {
            let files = worker::compact::visible_files(&path)?;
            let whole_day = from <= day.saturating_mul(DAY_NS) && day.saturating_add(1).saturating_mul(DAY_NS) <= to;
            if !files.is_empty() {
                out.dirs += 1;
                out.files.extend(files.into_iter().map(|path| Selected { path, whole_day }));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_scopes_days_in_range_are_selected() {
        let root = std::env::temp_dir().join(format!("vigil-layout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (org, day) in
            [(1, "2026-11-30"), (1, "2026-12-01"), (1, "2026-12-02"), (2, "2026-12-01"), (3, "2026-12-01")]
        {
            let dir = root.join(format!("org={org}/date={day}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("part-a-1-000001.parquet"), b"x").unwrap();
            std::fs::write(dir.join(".part-a-1-000002.parquet.tmp"), b"x").unwrap();
        }
        std::fs::create_dir_all(root.join("org=1/date=2026-12-03")).unwrap();
        let dec1 = 1_796_083_200_000_000_000i64; // 2026-12-01T00:00:00Z
        let day = 86_400_000_000_000i64;
        let got = select(&root, &[1, 2], dec1, dec1 + day).unwrap();
        let names: Vec<String> =
            got.files.iter().map(|d| d.path.strip_prefix(&root).unwrap().display().to_string()).collect();
        assert_eq!(
            names,
            ["org=1/date=2026-12-01/part-a-1-000001.parquet", "org=2/date=2026-12-01/part-a-1-000001.parquet"]
        );
        assert!(got.files.iter().all(|f| f.whole_day));
        assert_eq!((got.dirs, got.dirs_pruned), (2, 3));
        // A range ending exactly at midnight does not take the next day.
        let got = select(&root, &[1], dec1 - day, dec1 + day).unwrap();
        assert_eq!(got.dirs, 2);
        // Part of a day: read with the time filter.
        let got = select(&root, &[1], dec1 + 1, dec1 + day).unwrap();
        assert_eq!(got.files.iter().map(|f| f.whole_day).collect::<Vec<_>>(), [false]);
        let got = select(&root, &[1], dec1 - day / 2, dec1 + day).unwrap();
        assert_eq!(got.files.iter().map(|f| f.whole_day).collect::<Vec<_>>(), [false, true]);
        assert!(select(&root, &[9], dec1, dec1 + day).unwrap().files.is_empty());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn day_numbers() {
        assert_eq!(worker::retention::day_of_dir("date=1970-01-02"), Some(1));
        assert_eq!(worker::retention::day_of_dir("date=nope"), None);
        assert_eq!(day_of(-1), -1);
    }
}
