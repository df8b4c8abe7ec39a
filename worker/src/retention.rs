//! Retention: each org keeps its events for its `retention_days`; older
//! date directories are deleted whole, and an org deboarded loses its
//! events directory.

use std::fs;
use std::path::Path;

use crate::events::WorkerError;

/// What a retention pass deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Date directories (one org's day) deleted.
    pub days: u64,
    /// Files in them.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The UTC day number of a `date=YYYY-MM-DD` directory name.
pub fn day_of_dir(name: &str) -> Option<i64> {
    let date: jiff::civil::Date = name.strip_prefix("date=")?.parse().ok()?;
    let start = date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp().as_second();
    Some(start.div_euclid(86_400))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkerError + '_ {
    move |source| WorkerError::Io { path: path.to_owned(), source }
}

/// Removes a directory tree, counting its files and bytes into `report`.
fn remove_counted(dir: &Path, report: &mut RetentionReport) -> Result<(), WorkerError> {
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(io(&path))?;
        if meta.is_dir() {
            remove_counted(&path, report)?;
        } else {
            report.files += 1;
            report.bytes += meta.len();
        }
    }
    fs::remove_dir_all(dir).map_err(io(dir))
}

/// Deletes, under the events directory `root`, the days of each
/// `(org, retention_days)` older than its retention at `now_secs` (a day
/// is kept while any of it is within the retention). Orgs not listed are
/// left alone.
pub fn expire(root: &Path, policy: &[(u32, u32)], now_secs: i64) -> Result<RetentionReport, WorkerError> {
    let today = now_secs.div_euclid(86_400);
    let mut report = RetentionReport::default();
    for (org, days) in policy {
        let dir = root.join(format!("org={org}"));
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&dir)(e)),
        };
        // Day d ends at d + 1; it is expired once that is `days` days ago.
        let oldest_kept = today - i64::from(*days);
        for entry in entries {
            let entry = entry.map_err(io(&dir))?;
            let Some(day) = entry.file_name().to_str().and_then(day_of_dir) else { continue };
            if day < oldest_kept {
                remove_counted(&entry.path(), &mut report)?;
                report.days += 1;
            }
        }
    }
    Ok(report)
}

/// Deletes an org's whole events directory (deboarding).
pub fn remove_org(root: &Path, org: u32) -> Result<RetentionReport, WorkerError> {
    let dir = root.join(format!("org={org}"));
    let mut report = RetentionReport::default();
    if dir.exists() {
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            if entry.map_err(io(&dir))?.file_name().to_str().and_then(day_of_dir).is_some() {
                report.days += 1;
            }
        }
        remove_counted(&dir, &mut report)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_past_the_retention_go_and_the_rest_stay() {
        let root = std::env::temp_dir().join(format!("vigil-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (org, day) in
            [(2, "2026-10-31"), (2, "2026-11-01"), (2, "2026-12-01"), (3, "2026-10-31"), (4, "2026-01-01")]
        {
            let dir = root.join(format!("org={org}/date={day}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("part-a-1-000001.parquet"), b"12345").unwrap();
        }
        // 2026-12-01T12:00:00Z; org 2 keeps 30 days: from Nov 1 12:00, so
        // Oct 31 goes and Nov 1 (half of it still kept) stays; org 3 keeps 90.
        let now = 1_796_083_200 + 43_200;
        let r = expire(&root, &[(2, 30), (3, 90)], now).unwrap();
        assert_eq!(r, RetentionReport { days: 1, files: 1, bytes: 5 });
        assert!(!root.join("org=2/date=2026-10-31").exists());
        assert!(root.join("org=2/date=2026-11-01").exists());
        assert!(root.join("org=3/date=2026-10-31").exists());
        assert!(root.join("org=4/date=2026-01-01").exists(), "an org without a policy is left alone");
        assert_eq!(expire(&root, &[(2, 30)], now).unwrap(), RetentionReport::default(), "idempotent");
        let r = remove_org(&root, 2).unwrap();
        assert_eq!((r.days, r.files), (2, 2));
        assert!(!root.join("org=2").exists());
        assert_eq!(remove_org(&root, 2).unwrap(), RetentionReport::default());
        let _ = std::fs::remove_dir_all(&root);
    }
}
