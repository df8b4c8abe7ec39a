//! Compiler diagnostics: every problem in a rule file, with its file and
//! line, collected rather than returned at the first one.

use std::fmt;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The rule set is usable, but something is probably not what was meant.
    Warning,
    /// The file cannot be used.
    Error,
}

/// One problem found while compiling rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file (or the name given to the text) the problem is in.
    pub file: String,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: u32,
    /// Error or warning.
    pub level: Level,
    /// What is wrong, and where possible what to write instead.
    pub message: String,
}

impl Diagnostic {
    /// Whether this diagnostic makes the rule set unusable.
    pub fn is_error(&self) -> bool {
        self.level == Level::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Warning => "warning",
            Level::Error => "error",
        };
        write!(f, "{}:{}: {level}: {}", self.file, self.line, self.message)
    }
}

/// Collects diagnostics for one file.
pub(crate) struct Diags<'a> {
    file: &'a str,
    items: &'a mut Vec<Diagnostic>,
}

impl<'a> Diags<'a> {
    pub fn new(file: &'a str, items: &'a mut Vec<Diagnostic>) -> Diags<'a> {
        Diags { file, items }
    }

    pub fn error(&mut self, line: u32, message: impl Into<String>) {
        self.push(line, Level::Error, message.into());
    }

    pub fn warning(&mut self, line: u32, message: impl Into<String>) {
        self.push(line, Level::Warning, message.into());
    }

    fn push(&mut self, line: u32, level: Level, message: String) {
        self.items.push(Diagnostic { file: self.file.to_owned(), line, level, message });
    }

    /// The number of errors reported so far (all files).
    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }
}

/// The closest of `candidates` to `word`, if it is a plausible typo.
pub(crate) fn suggest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    // One edit per three characters: short words get no guesses.
    let limit = (word.chars().count() + 1) / 3;
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_close_words_only() {
        assert_eq!(suggest("srcip", ["src_ip", "dst_ip", "user"]), Some("src_ip"));
        assert_eq!(suggest("grup_by", ["group_by", "window"]), Some("group_by"));
        assert_eq!(suggest("zzz", ["src_ip", "user"]), None);
        assert_eq!(suggest("c", ["a", "b"]), None);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
