//! The mimi adapter (filled in by its own issue).
