//! Where every key and value of a parsed configuration file sits.
//!
//! A [`SourceMap`] maps *paths* to line and column numbers. A path names a
//! node of the document the way an administrator reads it:
//! `bridge.log_format`, `adapter[1].connect`, `room[0].link[2].adapter`.
//! Array elements are written `name[index]` (counting from 0); keys that are
//! not made of ASCII letters, digits, `_` and `-` are quoted
//! (`adapter[0]."odd.key"`).

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml_edit::{Item, TableLike, Value};

/// A 1-based line and column (the column counts characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Line number, starting at 1.
    pub line: usize,
    /// Column number, starting at 1, in characters.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Positions of one node: where its key starts and where its value starts.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    key: Option<Position>,
    value: Option<Position>,
}

#[derive(Debug, Default)]
struct Inner {
    file_name: String,
    base_dir: Option<PathBuf>,
    entries: HashMap<String, Entry>,
}

/// Line and column of every path of a configuration file, plus the file's
/// name (for messages) and directory (for relative paths inside it).
///
/// Cheap to clone: the table is shared.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    inner: Arc<Inner>,
}

impl SourceMap {
    /// A map that knows no positions, for diagnostics about a file whose
    /// text could not be read or parsed.
    pub fn empty(file_name: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                file_name: file_name.into(),
                ..Inner::default()
            }),
        }
    }

    /// Builds the map of a parsed document.
    pub(crate) fn build(
        file_name: &str,
        base_dir: Option<PathBuf>,
        source: &str,
        root: &dyn TableLike,
    ) -> Self {
        let mut builder = Builder {
            lines: LineIndex::new(source),
            entries: HashMap::new(),
        };
        builder.table("", root);
        Self {
            inner: Arc::new(Inner {
                file_name: file_name.to_owned(),
                base_dir,
                entries: builder.entries,
            }),
        }
    }

    /// The file name shown in front of every diagnostic.
    pub fn file_name(&self) -> &str {
        &self.inner.file_name
    }

    /// The directory of the configuration file, against which relative
    /// paths in it (such as `data_dir` or `{ file = "…" }` secrets) are
    /// resolved. `None` when the configuration was not read from a file.
    pub fn base_dir(&self) -> Option<&Path> {
        self.inner.base_dir.as_deref()
    }

    /// Whether the document has a node at exactly this path.
    pub fn contains(&self, path: &str) -> bool {
        self.inner.entries.contains_key(path)
    }

    /// Position of the value at `path`, or of its key, or else of the
    /// nearest parent path that exists in the document (so a missing key
    /// points at its table's header).
    pub fn locate(&self, path: &str) -> Option<Position> {
        self.find(path, |entry| entry.value.or(entry.key))
    }

    /// Like [`SourceMap::locate`] but prefers the position of the key, which
    /// is where an "unknown key" message should point.
    pub fn locate_key(&self, path: &str) -> Option<Position> {
        self.find(path, |entry| entry.key.or(entry.value))
    }

    fn find(&self, path: &str, pick: impl Fn(&Entry) -> Option<Position>) -> Option<Position> {
        let mut current = Some(path);
        while let Some(candidate) = current {
            if let Some(position) = self.inner.entries.get(candidate).and_then(&pick) {
                return Some(position);
            }
            current = parent_path(candidate);
        }
        None
    }
}

/// Appends a key to a path, quoting it when needed.
pub(crate) fn child_path(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// Appends an array index to a path.
pub(crate) fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Joins a path relative to `prefix` onto it: `("adapter[0]", "connect")`
/// gives `adapter[0].connect`, `("adapter[0].hosts", "[1]")` gives
/// `adapter[0].hosts[1]`, and an empty part gives the prefix itself.
pub fn join_path(prefix: &str, relative: &str) -> String {
    if relative.is_empty() {
        prefix.to_owned()
    } else if prefix.is_empty() {
        relative.to_owned()
    } else if relative.starts_with('[') {
        format!("{prefix}{relative}")
    } else {
        format!("{prefix}.{relative}")
    }
}

/// The path one level up (`a.b[2].c` → `a.b[2]` → `a.b` → `a`), or `None`.
pub(crate) fn parent_path(path: &str) -> Option<&str> {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut cut = None;
    for (index, c) in path.char_indices() {
        if in_quotes {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quotes = false,
                _ => {}
            }
        } else {
            match c {
                '"' => in_quotes = true,
                '.' | '[' if index > 0 => cut = Some(index),
                _ => {}
            }
        }
    }
    cut.map(|index| &path[..index])
}

/// Turns byte offsets into positions.
struct LineIndex<'s> {
    source: &'s str,
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    fn new(source: &'s str) -> Self {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(index, _)| index + 1));
        Self { source, starts }
    }

    fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.source.len());
        let line = self.starts.partition_point(|&start| start <= offset);
        let start = self.starts.get(line.wrapping_sub(1)).copied().unwrap_or(0);
        let column = match self.source.get(start..offset) {
            Some(text) => text.chars().filter(|&c| c != '\u{feff}').count(),
            None => offset - start,
        };
        Position {
            line: line.max(1),
            column: column + 1,
        }
    }
}

/// Position of a byte offset in `source`.
pub(crate) fn position_in(source: &str, offset: usize) -> Position {
    LineIndex::new(source).position(offset)
}

struct Builder<'s> {
    lines: LineIndex<'s>,
    entries: HashMap<String, Entry>,
}

impl Builder<'_> {
    fn record(&mut self, path: String, key: Option<Range<usize>>, value: Option<Range<usize>>) {
        let entry = Entry {
            key: key.map(|span| self.lines.position(span.start)),
            value: value.map(|span| self.lines.position(span.start)),
        };
        // The first occurrence wins; later ones add what it lacks.
        let slot = self.entries.entry(path).or_default();
        slot.key = slot.key.or(entry.key);
        slot.value = slot.value.or(entry.value);
    }

    fn table(&mut self, path: &str, table: &dyn TableLike) {
        for (key, item) in table.iter() {
            let key_span = table.key(key).and_then(|key| key.span());
            self.item(child_path(path, key), key_span, item);
        }
    }

    fn item(&mut self, path: String, key_span: Option<Range<usize>>, item: &Item) {
        match item {
            Item::None => {}
            Item::Value(value) => self.value(path, key_span, value),
            Item::Table(table) => {
                self.record(path.clone(), key_span, table.span());
                self.table(&path, table);
            }
            Item::ArrayOfTables(array) => {
                let first = array.iter().find_map(|table| table.span());
                self.record(path.clone(), key_span, first);
                for (index, table) in array.iter().enumerate() {
                    let element = index_path(&path, index);
                    self.record(element.clone(), None, table.span());
                    self.table(&element, table);
                }
            }
        }
    }

    fn value(&mut self, path: String, key_span: Option<Range<usize>>, value: &Value) {
        self.record(path.clone(), key_span, value.span());
        match value {
            Value::Array(array) => {
                for (index, element) in array.iter().enumerate() {
                    self.value(index_path(&path, index), None, element);
                }
            }
            Value::InlineTable(table) => self.table(&path, table),
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn map(source: &str) -> SourceMap {
        let document = toml_edit::Document::parse(source).unwrap();
        SourceMap::build("t.toml", None, source, document.as_table())
    }

    fn at(line: usize, column: usize) -> Option<Position> {
        Some(Position { line, column })
    }

    #[test]
    fn parents() {
        assert_eq!(
            parent_path("room[0].link[2].adapter"),
            Some("room[0].link[2]")
        );
        assert_eq!(parent_path("room[0].link[2]"), Some("room[0].link"));
        assert_eq!(parent_path("room[0].link"), Some("room[0]"));
        assert_eq!(parent_path("room[0]"), Some("room"));
        assert_eq!(parent_path("room"), None);
        assert_eq!(parent_path("a.\"x.y[1]\""), Some("a"));
        assert_eq!(parent_path("\"x.y\""), None);
        assert_eq!(parent_path(""), None);
    }

    #[test]
    fn paths() {
        assert_eq!(child_path("", "bridge"), "bridge");
        assert_eq!(child_path("bridge", "data_dir"), "bridge.data_dir");
        assert_eq!(child_path("a", "x.y"), "a.\"x.y\"");
        assert_eq!(child_path("a", ""), "a.\"\"");
        assert_eq!(join_path("adapter[0]", "connect"), "adapter[0].connect");
        assert_eq!(join_path("adapter[0].hosts", "[1]"), "adapter[0].hosts[1]");
        assert_eq!(join_path("adapter[0]", ""), "adapter[0]");
        assert_eq!(join_path("", "bridge"), "bridge");
    }

    #[test]
    fn positions() {
        let source = "[bridge]\ndata_dir = \"x\"\n\n[[adapter]]\nid = \"a\"\nsecret = { env = \"V\" }\nlist = [1, 2]\n[[adapter]]\n  id = \"é\"\n";
        let map = map(source);
        assert_eq!(map.locate("bridge"), at(1, 1));
        assert_eq!(map.locate("bridge.data_dir"), at(2, 12));
        assert_eq!(map.locate_key("bridge.data_dir"), at(2, 1));
        assert_eq!(map.locate("bridge.missing"), at(1, 1));
        assert_eq!(map.locate("adapter[0]"), at(4, 1));
        assert_eq!(map.locate("adapter[0].secret.env"), at(6, 18));
        assert_eq!(map.locate("adapter[0].list[1]"), at(7, 12));
        assert_eq!(map.locate("adapter[1].id"), at(9, 8));
        assert_eq!(map.locate("adapter[1].nothing.deeper"), at(8, 1));
        assert_eq!(map.locate("adapter[7]"), at(4, 1));
        assert_eq!(map.locate("room[0]"), None);
        assert!(map.contains("adapter[0].secret"));
        assert!(!map.contains("adapter[0].other"));
    }

    #[test]
    fn columns_count_characters() {
        let source = "a = \"é\"\nb = 1";
        assert_eq!(position_in(source, 0), Position { line: 1, column: 1 });
        assert_eq!(position_in(source, 9), Position { line: 2, column: 1 });
        assert_eq!(position_in(source, 13), Position { line: 2, column: 5 });
        assert_eq!(position_in(source, 1000), Position { line: 2, column: 6 });
    }
}
