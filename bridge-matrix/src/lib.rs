//! The matrix adapter (filled in by its own issue).

pub mod translate;
