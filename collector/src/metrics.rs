//! The Prometheus text exposition every role writes its series into.
//!
//! Each role (collector, worker, supervisor) adds its families to one
//! [`Exposition`]; a family several roles contribute to (queue depths) is
//! rendered once with all their samples, so `vigil run` and a cluster
//! process expose the same names.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use hdrhistogram::Histogram;

/// Families of samples, rendered in name order.
#[derive(Default)]
pub struct Exposition {
    families: BTreeMap<&'static str, Family>,
    /// Pre-rendered text appended after the families (summaries).
    tail: String,
    /// Summaries whose HELP and TYPE lines are in `tail`.
    summaries: std::collections::BTreeSet<String>,
}

struct Family {
    kind: &'static str,
    help: &'static str,
    samples: Vec<(String, String)>,
}

/// A label value escaped for the exposition format.
pub fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Exposition {
    /// Adds samples (`labels` without braces, empty for none) to family
    /// `name`, creating it with `kind` and `help` if it is new.
    pub fn add(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        samples: impl IntoIterator<Item = (String, u64)>,
    ) {
        let family = self.families.entry(name).or_insert_with(|| Family { kind, help, samples: Vec::new() });
        family.samples.extend(samples.into_iter().map(|(l, v)| (l, v.to_string())));
    }

    /// Adds one unlabelled sample.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, value: u64) {
        self.add(name, "gauge", help, [(String::new(), value)]);
    }

    /// Appends text already in the exposition format (e.g. a summary).
    pub fn raw(&mut self, text: &str) {
        self.tail.push_str(text);
    }

    /// Appends `latency` as summary `name` in seconds (quantiles 0.5, 0.9,
    /// 0.99, 0.999 and 1, then sum and count), with `labels` (without
    /// braces, empty for none) on every sample.
    pub fn latency_summary(&mut self, name: &str, help: &str, labels: &str, latency: &LatencySummary) {
        let secs = |ms: u64| ms as f64 / 1000.0;
        if self.summaries.insert(name.to_owned()) {
            let _ = writeln!(self.tail, "# HELP {name} {help}\n# TYPE {name} summary");
        }
        let (sep, braced) = if labels.is_empty() { ("", String::new()) } else { (",", format!("{{{labels}}}")) };
        let l = latency;
        for (q, v) in [("0.5", l.p50_ms), ("0.9", l.p90_ms), ("0.99", l.p99_ms), ("0.999", l.p999_ms), ("1", l.max_ms)]
        {
            let _ = writeln!(self.tail, "{name}{{{labels}{sep}quantile=\"{q}\"}} {}", secs(v));
        }
        let _ = writeln!(self.tail, "{name}_sum{braced} {}\n{name}_count{braced} {}", l.sum_ms / 1000.0, l.count);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        for (name, f) in &self.families {
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {}", f.help, f.kind);
            for (labels, v) in &f.samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
        out.push_str(&self.tail);
        out
    }
}

/// Percentiles of a latency histogram, milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Sum of the samples.
    pub sum_ms: f64,
    /// Median.
    pub p50_ms: u64,
    /// 90th percentile.
    pub p90_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
    /// 99.9th percentile.
    pub p999_ms: u64,
    /// Largest.
    pub max_ms: u64,
}

/// Latencies in milliseconds, three significant digits from 1 ms to one
/// hour (longer is clamped), shared between the thread that records and
/// the one that renders the metrics.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    histogram: Mutex<Option<Histogram<u64>>>,
}

impl LatencyHistogram {
    /// Records `samples` (milliseconds; below 1 counts as 1).
    pub fn record(&self, samples: impl Iterator<Item = i64>) {
        let mut guard = self.histogram.lock().unwrap_or_else(PoisonError::into_inner);
        for ms in samples {
            if guard.is_none() {
                *guard = Histogram::new_with_bounds(1, 3_600_000, 3).ok();
            }
            if let Some(h) = guard.as_mut() {
                h.saturating_record(u64::try_from(ms).unwrap_or(0).max(1));
            }
        }
    }

    /// The percentiles of what was recorded so far.
    pub fn summary(&self) -> LatencySummary {
        let h = self.histogram.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(h) = h.as_ref().filter(|h| !h.is_empty()) else { return LatencySummary::default() };
        LatencySummary {
            count: h.len(),
            sum_ms: h.mean() * h.len() as f64,
            p50_ms: h.value_at_quantile(0.5),
            p90_ms: h.value_at_quantile(0.9),
            p99_ms: h.value_at_quantile(0.99),
            p999_ms: h.value_at_quantile(0.999),
            max_ms: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_summary_is_in_seconds_with_its_labels_and_one_header() {
        let h = LatencyHistogram::default();
        assert_eq!(h.summary(), LatencySummary::default());
        h.record([250, 1_500, 0].into_iter());
        let l = h.summary();
        assert_eq!((l.count, l.p50_ms, l.max_ms), (3, 250, 1_500));
        let mut m = Exposition::default();
        m.latency_summary("vigil_x_seconds", "X.", "node=\"w1\"", &l);
        m.latency_summary("vigil_x_seconds", "X.", "node=\"w2\"", &LatencySummary::default());
        let text = m.render();
        assert_eq!(text.matches("# TYPE vigil_x_seconds summary").count(), 1, "{text}");
        assert!(text.contains("vigil_x_seconds{node=\"w1\",quantile=\"1\"} 1.5\n"), "{text}");
        assert!(text.contains("vigil_x_seconds_count{node=\"w1\"} 3\n"), "{text}");
        assert!(text.contains("vigil_x_seconds_count{node=\"w2\"} 0\n"), "{text}");
        let mut bare = Exposition::default();
        bare.latency_summary("vigil_y_seconds", "Y.", "", &l);
        assert!(bare.render().contains("vigil_y_seconds{quantile=\"0.5\"} 0.25\nvigil_y_seconds{quantile=\"0.9\"}"));
    }

    #[test]
    fn a_family_from_several_roles_is_rendered_once() {
        let mut m = Exposition::default();
        m.add("vigil_queue_depth", "gauge", "Depth.", [("queue=\"a\"".to_string(), 1)]);
        m.gauge("vigil_licence_eps", "Licensed EPS.", 500);
        m.add("vigil_queue_depth", "gauge", "Depth.", [("queue=\"b\"".to_string(), 2)]);
        let text = m.render();
        assert_eq!(text.matches("# TYPE vigil_queue_depth gauge").count(), 1);
        assert!(text.contains("vigil_queue_depth{queue=\"a\"} 1\nvigil_queue_depth{queue=\"b\"} 2\n"), "{text}");
        assert!(text.contains("vigil_licence_eps 500\n"));
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
