//! Error reports with paths, lines and columns.
//!
//! Validation never stops at the first problem: every problem becomes a
//! [`Diagnostic`] in a [`Diagnostics`] list, which prints one line per
//! problem followed by a count:
//!
//! ```text
//! bridge.toml:12:11: adapter[1].connect: expected a socket address like "127.0.0.1:7000", got "nowhere"
//! bridge.toml:20:1: room[0].colour: unknown key "colour"; expected one of: id, name, degrade, carry, link
//! 2 errors
//! ```

use std::fmt;

use crate::source_map::{SourceMap, join_path};

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the problem is, as a path such as `adapter[1].url`,
    /// `room[0].link[2].adapter` or `bridge.log_format`; empty for problems
    /// with the file as a whole (such as a TOML syntax error).
    pub path: String,
    /// 1-based line of the problem, when known.
    pub line: Option<usize>,
    /// 1-based column (in characters) of the problem, when known.
    pub column: Option<usize>,
    /// What is wrong, in one line.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic without a position yet; [`Diagnostics::push_diagnostic`]
    /// fills the position in from the path.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

/// Prints `LINE:COLUMN: PATH: MESSAGE`, leaving out the parts that are
/// unknown or empty.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "{line}:{column}: ")?,
            (Some(line), None) => write!(f, "{line}: ")?,
            _ => {}
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// Every problem found in one configuration file, with the file's
/// [`SourceMap`] so that problems added later (for example by adapters
/// checking their own settings) get lines and columns too.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    map: SourceMap,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// An empty list whose paths are located with `map`.
    pub fn new(map: SourceMap) -> Self {
        Self {
            map,
            items: Vec::new(),
        }
    }

    /// The source map used to locate paths.
    pub fn source_map(&self) -> &SourceMap {
        &self.map
    }

    /// The file name printed in front of every line.
    pub fn file_name(&self) -> &str {
        self.map.file_name()
    }

    /// Adds a problem at `path`, with the line and column of the value at
    /// that path (or of the nearest parent path present in the file).
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let position = self.map.locate(&path);
        self.items.push(Diagnostic {
            line: position.map(|p| p.line),
            column: position.map(|p| p.column),
            path,
            message: message.into(),
        });
    }

    /// Like [`Diagnostics::push`], but points at the key rather than the
    /// value (for "unknown key" and "duplicate" problems).
    pub fn push_at_key(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let position = self.map.locate_key(&path);
        self.items.push(Diagnostic {
            line: position.map(|p| p.line),
            column: position.map(|p| p.column),
            path,
            message: message.into(),
        });
    }

    /// Adds a finished diagnostic (for example the error of
    /// [`resolve_secret`](crate::resolve_secret)), filling in its line and
    /// column from its path when it has none.
    pub fn push_diagnostic(&mut self, mut diagnostic: Diagnostic) {
        if diagnostic.line.is_none()
            && let Some(position) = self.map.locate(&diagnostic.path)
        {
            diagnostic.line = Some(position.line);
            diagnostic.column = Some(position.column);
        }
        self.items.push(diagnostic);
    }

    /// Adds `(relative path, message)` pairs, each path being relative to
    /// `prefix` (see [`join_path`]): how an adapter's own checks, which only
    /// know its settings table, report against `adapter[N]`.
    pub fn extend_relative<I, P, M>(&mut self, prefix: &str, problems: I)
    where
        I: IntoIterator<Item = (P, M)>,
        P: AsRef<str>,
        M: Into<String>,
    {
        for (relative, message) in problems {
            self.push(join_path(prefix, relative.as_ref()), message);
        }
    }

    /// A view that adds problems relative to `prefix`, such as an adapter
    /// section's [`path`](crate::AdapterSection::path).
    pub fn scope(&mut self, prefix: impl Into<String>) -> Scope<'_> {
        Scope {
            prefix: prefix.into(),
            diagnostics: self,
        }
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The problems in the order they were found.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.items.iter()
    }

    /// The problems in the order they were found.
    pub fn as_slice(&self) -> &[Diagnostic] {
        &self.items
    }

    /// The problems ordered by line and column (those without a position
    /// first), the order in which they are displayed.
    pub fn sorted(&self) -> Vec<&Diagnostic> {
        let mut sorted: Vec<&Diagnostic> = self.items.iter().collect();
        sorted.sort_by_key(|d| (d.line, d.column));
        sorted
    }

    /// `Ok(value)` when there is no problem, otherwise `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, Self> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

/// Prints one line per problem, ordered by position, as
/// `FILE:LINE:COLUMN: PATH: MESSAGE` (the position and path are left out
/// when unknown), then a count line such as `5 errors` or `1 error`.
impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in self.sorted() {
            f.write_str(self.file_name())?;
            match (diagnostic.line, diagnostic.column) {
                (Some(line), Some(column)) => write!(f, ":{line}:{column}: ")?,
                (Some(line), None) => write!(f, ":{line}: ")?,
                _ => f.write_str(": ")?,
            }
            if !diagnostic.path.is_empty() {
                write!(f, "{}: ", diagnostic.path)?;
            }
            writeln!(f, "{}", diagnostic.message)?;
        }
        let count = self.items.len();
        write!(f, "{count} error{}", if count == 1 { "" } else { "s" })
    }
}

impl std::error::Error for Diagnostics {}

impl Extend<Diagnostic> for Diagnostics {
    fn extend<I: IntoIterator<Item = Diagnostic>>(&mut self, iter: I) {
        for diagnostic in iter {
            self.push_diagnostic(diagnostic);
        }
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// Adds problems under a fixed path prefix; made by [`Diagnostics::scope`].
#[derive(Debug)]
pub struct Scope<'a> {
    prefix: String,
    diagnostics: &'a mut Diagnostics,
}

impl Scope<'_> {
    /// The prefix, such as `adapter[1]`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full path of a relative one, such as `adapter[1].connect`.
    pub fn path(&self, relative: &str) -> String {
        join_path(&self.prefix, relative)
    }

    /// Adds a problem at `prefix.relative`.
    pub fn push(&mut self, relative: &str, message: impl Into<String>) {
        let path = self.path(relative);
        self.diagnostics.push(path, message);
    }
}
