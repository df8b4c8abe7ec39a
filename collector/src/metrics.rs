//! The Prometheus text exposition every role writes its series into.
//!
//! Each role (collector, worker, supervisor) adds its families to one
//! [`Exposition`]; a family several roles contribute to (queue depths) is
//! rendered once with all their samples, so `vigil run` and a cluster
//! process expose the same names.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Families of samples, rendered in name order.
#[derive(Default)]
pub struct Exposition {
    families: BTreeMap<&'static str, Family>,
    /// Pre-rendered text appended after the families (summaries).
    tail: String,
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

#[cfg(test)]
mod tests {
    use super::*;

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
