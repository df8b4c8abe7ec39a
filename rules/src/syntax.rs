//! YAML → a plain tree of nodes that remember their line, so the compiler
//! can check a whole file and report every problem with its line instead
//! of stopping at the first (STYLE 10).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A YAML node and the line it starts on (1-based).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub line: u32,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Kind {
    Map(Vec<(Node, Node)>),
    Seq(Vec<Node>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
}

impl Node {
    /// A short description of the node's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Map(_) => "a mapping",
            Kind::Seq(_) => "a list",
            Kind::Str(_) => "a string",
            Kind::Int(_) | Kind::Float(_) => "a number",
            Kind::Bool(_) => "a boolean",
            Kind::Null => "nothing",
        }
    }

    /// The node as text: strings as written, numbers and booleans rendered.
    pub fn as_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Int(i) => Some(i.to_string()),
            Kind::Float(f) => Some(f.to_string()),
            Kind::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Entries of a mapping.
    pub fn entries(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value of key `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?.iter().find(|(k, _)| matches!(&k.kind, Kind::Str(s) if s == key)).map(|(_, v)| v)
    }
}

/// A node's content with span-carrying children, as serde builds it.
struct Raw(RawKind);

enum RawKind {
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
    Seq(Vec<Spanned<Raw>>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Raw, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw(RawKind::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw(RawKind::Int(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Raw(RawKind::Int(i)),
            Err(_) => Raw(RawKind::Float(v as f64)),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw(RawKind::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw(RawKind::Str(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw(RawKind::Str(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw(RawKind::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw(RawKind::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw(RawKind::Seq(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Raw>>()? {
            let value = map.next_value::<Spanned<Raw>>()?;
            entries.push((key, value));
        }
        Ok(Raw(RawKind::Map(entries)))
    }
}

fn convert(spanned: Spanned<Raw>) -> Node {
    let line = u32::try_from(spanned.referenced.line()).unwrap_or(u32::MAX);
    let kind = match spanned.value.0 {
        RawKind::Map(entries) => Kind::Map(entries.into_iter().map(|(k, v)| (convert(k), convert(v))).collect()),
        RawKind::Seq(items) => Kind::Seq(items.into_iter().map(convert).collect()),
        RawKind::Str(s) => Kind::Str(s),
        RawKind::Int(i) => Kind::Int(i),
        RawKind::Float(f) => Kind::Float(f),
        RawKind::Bool(b) => Kind::Bool(b),
        RawKind::Null => Kind::Null,
    };
    Node { line, kind }
}

/// Parses YAML text into a node tree, or returns the line and message of
/// the syntax error.
pub(crate) fn parse(text: &str) -> Result<Node, (u32, String)> {
    serde_saphyr::from_str::<Spanned<Raw>>(text).map(convert).map_err(|e| syntax_error(&e))
}

/// Parses YAML text of one or more documents (`---` between them), each
/// into a node tree with lines counted from the start of the text.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<Node>, (u32, String)> {
    serde_saphyr::from_multiple::<Spanned<Raw>>(text)
        .map(|docs| docs.into_iter().map(convert).collect())
        .map_err(|e| syntax_error(&e))
}

fn syntax_error(e: &serde_saphyr::Error) -> (u32, String) {
    let line = e.location().map_or(0, |l| u32::try_from(l.line()).unwrap_or(0));
    let message = e.to_string();
    // The library renders a multi-line snippet; keep the first line.
    let first = message.lines().next().unwrap_or("invalid YAML").trim().to_owned();
    (line, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_lines_in_the_whole_text() {
        let docs = parse_documents("id: a\n---\nid: b\nname: x\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].get("name").map(|n| n.line), Some(4));
        assert!(parse_documents("a: [\n").unwrap_err().0 > 0);
    }

    #[test]
    fn lines_are_kept_for_keys_and_values() {
        let text = "id: a\npatterns:\n  p:\n    filter:\n      user: root\n    window: 60s\nlist: [1, 2.5, true, ~]\n";
        let root = parse(text).unwrap();
        let patterns = root.get("patterns").unwrap();
        assert_eq!(patterns.line, 3);
        let filter = patterns.get("p").unwrap().get("filter").unwrap();
        let (k, v) = &filter.entries().unwrap()[0];
        assert_eq!((k.line, v.line), (5, 5));
        assert_eq!(v.kind, Kind::Str("root".into()));
        let Kind::Seq(items) = &root.get("list").unwrap().kind else { panic!() };
        assert_eq!(
            items.iter().map(|n| n.kind.clone()).collect::<Vec<_>>(),
            vec![Kind::Int(1), Kind::Float(2.5), Kind::Bool(true), Kind::Null]
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let (line, message) = parse("id: a\nname: [unclosed\nx: 1\n").unwrap_err();
        assert!(line >= 2, "{line} {message}");
        assert!(!message.contains('\n'));
    }
}
