//! Message templates: literal text with `{target}` / `{target:kind}` holes.
//!
//! ```text
//! Failed password for {user:word} from {src_ip:ip} port {src_port:port}
//! ```
//!
//! Matching is anchored at the start of the message, never backtracks and
//! allows trailing text: each literal must follow exactly; a `word`, `ip`,
//! `int` or `port` hole takes its character class up to whitespace or the
//! next literal (an `ip` hole is a word whose value, if it is not an IP
//! address, is kept in `ext` under the field name); a `text` hole (the default kind) takes everything up to the
//! first occurrence of the next literal, or the rest of the message when it
//! is last; a `kv` hole is text parsed as key=value pairs with the family's
//! `[kv]` settings. That is predictable and linear in the message length.

use super::Target;

/// Most holes one template may have (keeps match results on the stack).
pub(crate) const MAX_CAPTURES: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Word,
    Ip,
    Int,
    Port,
    Text,
    Kv,
}

#[derive(Clone, Debug)]
pub(crate) enum Segment {
    Literal(Box<[u8]>),
    Hole { target: Target, kind: Kind },
}

/// A compiled template.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    pub segments: Vec<Segment>,
}

/// Byte ranges of the holes of one match, in template order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Captures {
    items: [(u8, u32, u32); MAX_CAPTURES],
    len: usize,
}

impl Captures {
    /// `(segment index, start, end)` of each hole.
    pub fn iter(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        self.items[..self.len].iter().map(|&(i, s, e)| (usize::from(i), s as usize, e as usize))
    }
}

impl Template {
    /// Compiles template text; the error says what is wrong.
    pub fn compile(text: &str) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with("{{") || rest[open..].starts_with("}}") {
                literal.push_str(&rest[..open + 1]);
                rest = &rest[open + 2..];
                continue;
            }
            if rest[open..].starts_with('}') {
                return Err(format!("unmatched \"}}\" in template {text:?} (write \"}}}}\" for a literal brace)"));
            }
            literal.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("unclosed \"{{\" in template {text:?}"));
            };
            let hole = &rest[open + 1..open + close];
            rest = &rest[open + close + 1..];
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal).into_bytes().into_boxed_slice()));
            }
            if matches!(segments.last(), Some(Segment::Hole { .. })) {
                return Err(format!("two holes without literal text between them in template {text:?}"));
            }
            let (name, kind) = match hole.split_once(':') {
                Some((name, kind)) => (name.trim(), kind.trim()),
                None => (hole.trim(), "text"),
            };
            let kind = match kind {
                "word" => Kind::Word,
                "ip" => Kind::Ip,
                "int" => Kind::Int,
                "port" => Kind::Port,
                "text" => Kind::Text,
                "kv" => Kind::Kv,
                other => {
                    return Err(format!(
                        "unknown hole kind {other:?} in {{{hole}}}: expected word, ip, int, port, text or kv"
                    ));
                }
            };
            let target = if kind == Kind::Kv && name.is_empty() {
                Target::Discard
            } else {
                Target::parse(name).map_err(|e| format!("{e} in {{{hole}}}"))?
            };
            segments.push(Segment::Hole { target, kind });
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal.into_bytes().into_boxed_slice()));
        }
        let holes = segments.iter().filter(|s| matches!(s, Segment::Hole { .. })).count();
        if holes > MAX_CAPTURES {
            return Err(format!("template {text:?} has {holes} holes; at most {MAX_CAPTURES} are allowed"));
        }
        if segments.is_empty() {
            return Err("empty template".to_owned());
        }
        Ok(Template { segments })
    }

    /// The literal the template starts with, if any.
    pub fn first_byte(&self) -> Option<u8> {
        match self.segments.first() {
            Some(Segment::Literal(l)) => l.first().copied(),
            _ => None,
        }
    }

    /// Matches `text` from its start.
    pub fn matches(&self, text: &[u8]) -> Option<Captures> {
        let mut caps = Captures { items: [(0, 0, 0); MAX_CAPTURES], len: 0 };
        let mut pos = 0;
        for (idx, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(lit) => {
                    if !text[pos..].starts_with(lit) {
                        return None;
                    }
                    pos += lit.len();
                }
                Segment::Hole { kind, .. } => {
                    let next = match self.segments.get(idx + 1) {
                        Some(Segment::Literal(l)) => Some(&l[..]),
                        _ => None,
                    };
                    let end = hole_end(*kind, &text[pos..], next)? + pos;
                    caps.items[caps.len] = (idx as u8, pos as u32, end as u32);
                    caps.len += 1;
                    pos = end;
                }
            }
        }
        Some(caps)
    }
}

/// End (relative to `rest`) of a hole of `kind`, or `None` if it cannot match.
fn hole_end(kind: Kind, rest: &[u8], next: Option<&[u8]>) -> Option<usize> {
    let class_run = |ok: fn(u8) -> bool| {
        let mut n = rest.iter().take_while(|c| ok(**c)).count();
        // The run also stops where the next literal starts, even if that
        // literal begins with characters of the class (`{svc:word}:`).
        if let Some(lit) = next
            && let Some(p) = memchr::memmem::find(&rest[..(n + lit.len()).min(rest.len())], lit)
        {
            n = n.min(p);
        }
        (n > 0).then_some(n)
    };
    match kind {
        // An `ip` hole is a word; a value that is not an address (a host
        // name where an address usually is) is kept in `ext` when written.
        Kind::Word | Kind::Ip => class_run(|c| !c.is_ascii_whitespace()),
        Kind::Int | Kind::Port => class_run(|c| c.is_ascii_digit()),
        Kind::Text | Kind::Kv => match next {
            Some(lit) => memchr::memmem::find(rest, lit),
            None => Some(rest.len()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(t: &str, text: &str) -> Option<Vec<String>> {
        let tpl = Template::compile(t).unwrap();
        tpl.matches(text.as_bytes()).map(|c| c.iter().map(|(_, s, e)| text[s..e].to_owned()).collect())
    }

    #[test]
    fn holes_and_literals() {
        let t = "Failed password for {user:word} from {src_ip:ip} port {src_port:port}";
        assert_eq!(
            caps(t, "Failed password for root from 1.2.3.4 port 22 ssh2").unwrap(),
            vec!["root", "1.2.3.4", "22"]
        );
        assert!(caps(t, "Failed password for invalid user x from 1.2.3.4 port 22").is_none());
        assert_eq!(
            caps("pam_unix({ext.svc:word}:{ext.kind:word}): {_}", "pam_unix(sshd:auth): x").unwrap(),
            vec!["sshd", "auth", "x"]
        );
        assert_eq!(caps("a {ext.x} b {ext.y}", "a 1 2 b 3 4").unwrap(), vec!["1 2", "3 4"]);
        assert_eq!(caps("literal {{braces}}", "literal {braces}").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn compile_errors() {
        for bad in ["{user", "a {x}{y} b", "{user:float}", "{nosuchfield}", "x }"] {
            assert!(Template::compile(bad).is_err(), "{bad}");
        }
    }
}
