//! Notification templates (minijinja). Tenant admins write them, so they are checked
//! when saved — syntax, variables that do not exist (a typo would otherwise render an
//! empty field in every notification), a trial render — and rendering is bounded in
//! time (fuel, recursion limit) and size (title one line, body 64 KiB).

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior, value::Serde};

use crate::ConnectorError;

/// Largest accepted template source, per part.
const MAX_SOURCE: usize = 16 * 1024;
/// Rendered title: one line of at most this many characters.
const MAX_TITLE_CHARS: usize = 512;
/// Rendered body: at most this many bytes.
const MAX_BODY: usize = 64 * 1024;
/// Instructions one render may execute: the default templates use a few hundred; this
/// leaves room for loops over tags and references and stops `{% for %}` bombs.
const FUEL: u64 = 200_000;
/// Nesting depth for macros, includes and calls.
const RECURSION: usize = 32;

/// Title + body templates (minijinja), checked when saved.
pub struct Template {
    env: Environment<'static>,
    title: String,
    body: String,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template").field("title", &self.title).field("body", &self.body).finish()
    }
}

impl Template {
    /// The default title.
    pub const DEFAULT_TITLE: &'static str = "[{{ severity | upper }}] {{ title }} ({{ org }})";
    /// The default body: what an on-call person needs to triage without opening the SIEM.
    pub const DEFAULT_BODY: &'static str = "\
Incident #{{ id }}: {{ title }}
Organisation: {{ org }}
Severity: {{ severity }}    Status: {{ status }}
{% if rule %}Rule: {{ rule }}
{% endif %}Hits: {{ hit_count }}
First seen: {{ first_seen }}
Last seen: {{ last_seen }}
{% if tags %}Tags: {{ tags | join(\", \") }}
{% endif %}{% if description %}
{{ description }}
{% endif %}";

    /// The variables a template may use: the incident's fields as the API shows them,
    /// plus `org` and `event`.
    pub const VARIABLES: &'static [&'static str] = &[
        "id",
        "kind",
        "org",
        "org_id",
        "self",
        "title",
        "description",
        "severity",
        "status",
        "assignee",
        "rule",
        "source_ref",
        "count",
        "hit_count",
        "first_seen",
        "last_seen",
        "created_by",
        "created_at",
        "updated_at",
        "tags",
        "author",
        "references",
        "event_ids",
        "owners",
        "event",
    ];

    /// Compiles both; syntax errors and references to unknown variables are errors, reported
    /// with line and the offending text; each part is at most 16 KiB; rendering a sample
    /// context must succeed (strict undefined behaviour).
    pub fn compile(title: &str, body: &str) -> Result<Template, ConnectorError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION);
        for (part, src) in [("title", title), ("body", body)] {
            if src.len() > MAX_SOURCE {
                return Err(ConnectorError::Template {
                    part,
                    message: format!("is {} bytes, at most {MAX_SOURCE} are allowed", src.len()),
                });
            }
            env.add_template_owned(part, src.to_owned()).map_err(|e| template_error(part, src, &e))?;
            let tmpl = env.get_template(part).map_err(|e| template_error(part, src, &e))?;
            let mut unknown: Vec<String> = tmpl
                .undeclared_variables(false)
                .into_iter()
                .filter(|v| !Self::VARIABLES.contains(&v.as_str()) && env.globals().all(|(g, _)| g != v))
                .collect();
            unknown.sort();
            if let Some(name) = unknown.first() {
                let at = locate(src, name).map(|(line, text)| format!(" (line {line}: {text:?})")).unwrap_or_default();
                return Err(ConnectorError::Template {
                    part,
                    message: format!("unknown variable {name:?}{at}; known variables: {}", Self::VARIABLES.join(", ")),
                });
            }
        }
        let t = Template { env, title: title.to_owned(), body: body.to_owned() };
        t.render(&sample_incident(), "Example Org", "test")?;
        Ok(t)
    }

    /// Renders with the context: every top-level key of `incident` (an object), plus `org`
    /// and `event`. The title is cut to one line of at most 512 characters, the body to 64 KiB.
    pub fn render(
        &self,
        incident: &serde_json::Value,
        org: &str,
        event: &str,
    ) -> Result<(String, String), ConnectorError> {
        let ctx = context(incident, org, event);
        let title = self.render_part("title", &self.title, &ctx, MAX_TITLE_CHARS * 4)?;
        let body = self.render_part("body", &self.body, &ctx, MAX_BODY)?;
        let title: String = title.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_owned();
        let title = match title.char_indices().nth(MAX_TITLE_CHARS) {
            Some((i, _)) => title[..i].to_owned(),
            None => title,
        };
        Ok((title, body))
    }

    /// The title and body sources, as given to [`Template::compile`].
    pub fn sources(&self) -> (&str, &str) {
        (&self.title, &self.body)
    }

    fn render_part(
        &self,
        part: &'static str,
        src: &str,
        ctx: &BTreeMap<String, serde_json::Value>,
        limit: usize,
    ) -> Result<String, ConnectorError> {
        let tmpl = self.env.get_template(part).map_err(|e| template_error(part, src, &e))?;
        let mut out = Bounded { buf: Vec::new(), limit };
        tmpl.render_captured_to(Serde(ctx), &mut out).map_err(|e| template_error(part, src, &e))?;
        Ok(cut_utf8(out.buf, limit))
    }
}

/// Builds the render context. Known incident fields the caller's object lacks are
/// present as `none`, so a template that compiled cannot fail to render just because
/// an older record has no `tags`; `count` and `hit_count` stand in for each other.
fn context(incident: &serde_json::Value, org: &str, event: &str) -> BTreeMap<String, serde_json::Value> {
    let mut ctx: BTreeMap<String, serde_json::Value> =
        Template::VARIABLES.iter().map(|k| ((*k).to_owned(), serde_json::Value::Null)).collect();
    if let Some(obj) = incident.as_object() {
        for (k, v) in obj {
            ctx.insert(k.clone(), v.clone());
        }
        for (a, b) in [("hit_count", "count"), ("count", "hit_count")] {
            if !obj.contains_key(a)
                && let Some(v) = obj.get(b)
            {
                ctx.insert(a.to_owned(), v.clone());
            }
        }
    }
    ctx.insert("org".to_owned(), serde_json::Value::from(org));
    ctx.insert("event".to_owned(), serde_json::Value::from(event));
    ctx
}

/// The incident used to try templates when they are saved (and in previews).
pub(crate) fn sample_incident() -> serde_json::Value {
    serde_json::json!({
        "id": 42,
        "kind": "incident",
        "org": "Example Org",
        "org_id": 7,
        "self": false,
        "title": "Brute force against ssh on web-01",
        "description": "Many failed logins followed by a success.",
        "severity": "high",
        "status": "open",
        "assignee": { "id": 3, "name": "alice" },
        "rule": "ssh_bruteforce",
        "source_ref": "ssh_bruteforce:7:10.0.0.5:1700000000000",
        "count": 12,
        "hit_count": 12,
        "first_seen": "2026-01-02T03:04:05.000Z",
        "last_seen": "2026-01-02T03:14:05.000Z",
        "created_by": null,
        "created_at": "2026-01-02T03:04:05.000Z",
        "updated_at": "2026-01-02T03:14:05.000Z",
        "tags": ["attack.credential_access", "attack.t1110"],
        "author": "vigil",
        "references": ["https://attack.mitre.org/techniques/T1110/"],
        "event_ids": [1, 2, 3],
        "owners": [1]
    })
}

/// A writer that keeps at most `limit` bytes (plus a few, to cut on a character
/// boundary) and drops the rest, so a template cannot make the server buffer megabytes.
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = (self.limit + 4).saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The longest prefix of `bytes` that is at most `limit` bytes and valid UTF-8.
pub(crate) fn cut_utf8(bytes: Vec<u8>, limit: usize) -> String {
    let s = String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    cut_str(&s, limit).to_owned()
}

/// The longest prefix of `s` of at most `limit` bytes ending on a character boundary.
pub(crate) fn cut_str(s: &str, limit: usize) -> &str {
    if s.len() <= limit {
        return s;
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A minijinja error as the user should see it: what, on which line, near which text.
fn template_error(part: &'static str, src: &str, e: &minijinja::Error) -> ConnectorError {
    let what = e.detail().map(str::to_owned).unwrap_or_else(|| e.kind().to_string());
    let mut message = match e.line() {
        Some(line) => format!("line {line}: {what}"),
        None => what,
    };
    let snippet = e
        .range()
        .and_then(|r| src.get(r))
        .filter(|s| !s.trim().is_empty())
        .or_else(|| e.line().and_then(|l| src.lines().nth(l.saturating_sub(1))));
    if let Some(s) = snippet {
        message.push_str(&format!(" (near {:?})", cut_str(s.trim(), 80)));
    }
    ConnectorError::Template { part, message }
}

/// The first line that uses `name` as a whole word, with its text.
fn locate(src: &str, name: &str) -> Option<(usize, String)> {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    src.lines().enumerate().find_map(|(i, line)| {
        line.match_indices(name)
            .any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after = line[at + name.len()..].chars().next();
                !before.is_some_and(word) && !after.is_some_and(word)
            })
            .then(|| (i + 1, cut_str(line.trim(), 80).to_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_compiles_and_renders() {
        let t = Template::compile(Template::DEFAULT_TITLE, Template::DEFAULT_BODY).unwrap();
        let (title, body) = t.render(&sample_incident(), "Acme", "created").unwrap();
        assert_eq!(title, "[HIGH] Brute force against ssh on web-01 (Acme)");
        assert!(body.contains("Rule: ssh_bruteforce"), "{body}");
        assert!(body.contains("Hits: 12"), "{body}");
        assert!(body.contains("Tags: attack.credential_access, attack.t1110"), "{body}");
        assert_eq!(t.sources(), (Template::DEFAULT_TITLE, Template::DEFAULT_BODY));
    }

    #[test]
    fn missing_fields_render_and_count_aliases() {
        let t = Template::compile(Template::DEFAULT_TITLE, Template::DEFAULT_BODY).unwrap();
        let incident = serde_json::json!({"id": 1, "title": "t", "severity": "low", "count": 3});
        let (_, body) = t.render(&incident, "Acme", "manual").unwrap();
        assert!(body.contains("Hits: 3"), "{body}");
        assert!(!body.contains("Rule:"), "{body}");
    }

    #[test]
    fn syntax_error_reports_line_and_text() {
        let err = Template::compile("ok", "line one\n{{ title }\n").unwrap_err();
        let ConnectorError::Template { part, message } = err else { panic!() };
        assert_eq!(part, "body");
        assert!(message.contains("line 2"), "{message}");
        let err = Template::compile("{% if %}", "x").unwrap_err().to_string();
        assert!(err.starts_with("template title: line 1"), "{err}");
    }

    #[test]
    fn unknown_variable_rejected() {
        let err = Template::compile("{{ title }}", "a\nb {{ sevrity }}\n").unwrap_err().to_string();
        assert!(err.contains("template body: unknown variable \"sevrity\""), "{err}");
        assert!(err.contains("line 2"), "{err}");
        // A variable set inside the template is not unknown.
        Template::compile("{% set x = title %}{{ x }}", "{% for t in tags %}{{ t }}{% endfor %}").unwrap();
    }

    #[test]
    fn limits() {
        let big = "x".repeat(MAX_SOURCE + 1);
        assert!(Template::compile(&big, "b").unwrap_err().to_string().contains("at most 16384"));
        // Loops run out of fuel instead of running forever.
        let err =
            Template::compile("t", "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}")
                .unwrap_err()
                .to_string();
        assert!(err.contains("template body") && err.contains("fuel"), "{err}");
        // Title is one line, at most 512 characters; the body at most 64 KiB.
        let t = Template::compile("\n  {{ title }}  \nsecond line", "{% for i in range(9000) %}0123456789{% endfor %}")
            .unwrap();
        let long = serde_json::json!({ "title": "é".repeat(600) });
        let (title, body) = t.render(&long, "o", "e").unwrap();
        assert_eq!(title.chars().count(), 512);
        assert_eq!(body.len(), 64 * 1024);
    }
}
