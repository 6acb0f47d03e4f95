//! Typed reads of single keys from a span-keeping `toml_edit` table, each
//! reporting its problem into [`Diagnostics`] instead of stopping.

use toml_edit::{Item, TableLike, Value};

use crate::describe::{describe, describe_value, show};
use crate::diagnostics::Diagnostics;
use crate::source_map::{child_path, index_path};
use crate::suggest::{did_you_mean, suggestion_suffix};

/// A table of the document together with its path.
#[derive(Clone, Copy)]
pub(crate) struct Table<'t> {
    pub(crate) table: &'t dyn TableLike,
    pub(crate) path: &'t str,
}

/// A table found under a key or in an array, owning its path.
pub(crate) struct OwnedTable<'t> {
    pub(crate) table: &'t dyn TableLike,
    pub(crate) path: String,
}

impl<'t> OwnedTable<'t> {
    pub(crate) fn view(&self) -> Table<'_> {
        Table {
            table: self.table,
            path: &self.path,
        }
    }
}

impl<'t> Table<'t> {
    /// Full path of a key of this table.
    pub(crate) fn path(&self, key: &str) -> String {
        child_path(self.path, key)
    }

    /// The item under `key`, if present.
    pub(crate) fn item(&self, key: &str) -> Option<&'t Item> {
        self.table.get(key).filter(|item| !item.is_none())
    }

    /// Reports every key not in `known`, with a suggestion when one is close.
    pub(crate) fn check_keys(&self, d: &mut Diagnostics, known: &[&str]) {
        for (key, _) in self.table.iter() {
            if known.contains(&key) {
                continue;
            }
            let message = match did_you_mean(key, known.iter().copied()) {
                Some(candidate) => format!("unknown key {key:?} (did you mean {candidate:?}?)"),
                None => format!("unknown key {key:?}; expected one of: {}", known.join(", ")),
            };
            d.push_at_key(self.path(key), message);
        }
    }

    /// A string value; reports a missing key when `required`.
    pub(crate) fn string(&self, d: &mut Diagnostics, key: &str, required: bool) -> Option<&'t str> {
        let Some(item) = self.item(key) else {
            if required {
                d.push(self.path(key), format!("missing required key {key:?}"));
            }
            return None;
        };
        match item.as_str() {
            Some(text) => Some(text),
            None => {
                d.push(
                    self.path(key),
                    format!("expected a string, got {}", describe(item)),
                );
                None
            }
        }
    }

    /// A non-empty string value (after trimming white space).
    pub(crate) fn non_empty_string(
        &self,
        d: &mut Diagnostics,
        key: &str,
        required: bool,
    ) -> Option<&'t str> {
        let text = self.string(d, key, required)?;
        if text.trim().is_empty() {
            d.push(self.path(key), "must not be empty");
            return None;
        }
        Some(text)
    }

    /// An optional integer within `min..=max`.
    pub(crate) fn integer(
        &self,
        d: &mut Diagnostics,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let item = self.item(key)?;
        let Some(number) = item.as_integer() else {
            d.push(
                self.path(key),
                format!("expected an integer, got {}", describe(item)),
            );
            return None;
        };
        if (min..=max).contains(&number) {
            Some(number)
        } else {
            d.push(
                self.path(key),
                format!("expected an integer from {min} to {max}, got {number}"),
            );
            None
        }
    }

    /// An optional boolean.
    pub(crate) fn boolean(&self, d: &mut Diagnostics, key: &str) -> Option<bool> {
        let item = self.item(key)?;
        let value = item.as_bool();
        if value.is_none() {
            d.push(
                self.path(key),
                format!("expected true or false, got {}", describe(item)),
            );
        }
        value
    }

    /// An optional string that must be one of `choices`.
    pub(crate) fn choice<T: Copy>(
        &self,
        d: &mut Diagnostics,
        key: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let text = self.string(d, key, false)?;
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
            return Some(*value);
        }
        let names: Vec<String> = choices
            .iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect();
        let suffix = suggestion_suffix(text, choices.iter().map(|(name, _)| *name));
        d.push(
            self.path(key),
            format!(
                "expected one of {}, got {}{suffix}",
                names.join(", "),
                show(text)
            ),
        );
        None
    }

    /// An optional sub-table (a `[section]` or an inline table).
    pub(crate) fn table(&self, d: &mut Diagnostics, key: &str) -> Option<OwnedTable<'t>> {
        let item = self.item(key)?;
        match item.as_table_like() {
            Some(table) => Some(OwnedTable {
                table,
                path: self.path(key),
            }),
            None => {
                d.push(
                    self.path(key),
                    format!("expected a table, got {}", describe(item)),
                );
                None
            }
        }
    }

    /// An optional array of tables (`[[name]]` sections, or an array of
    /// inline tables); elements that are not tables are reported.
    pub(crate) fn tables(&self, d: &mut Diagnostics, key: &str) -> Vec<OwnedTable<'t>> {
        let path = self.path(key);
        let Some(item) = self.item(key) else {
            return Vec::new();
        };
        if let Some(array) = item.as_array_of_tables() {
            return array
                .iter()
                .enumerate()
                .map(|(index, table)| OwnedTable {
                    table: table as &dyn TableLike,
                    path: index_path(&path, index),
                })
                .collect();
        }
        let Some(array) = item.as_array() else {
            d.push(
                path,
                format!(
                    "expected an array of tables ([[{key}]]), got {}",
                    describe(item)
                ),
            );
            return Vec::new();
        };
        let mut tables = Vec::new();
        for (index, value) in array.iter().enumerate() {
            match value.as_inline_table() {
                Some(table) => tables.push(OwnedTable {
                    table: table as &dyn TableLike,
                    path: index_path(&path, index),
                }),
                None => d.push(
                    index_path(&path, index),
                    format!("expected a table, got {}", describe_value(value)),
                ),
            }
        }
        tables
    }
}

/// Converts a `toml_edit` item into a plain `toml` value.
pub(crate) fn to_toml(item: &Item) -> Option<toml::Value> {
    match item {
        Item::None => None,
        Item::Value(value) => Some(value_to_toml(value)),
        Item::Table(table) => Some(toml::Value::Table(table_to_toml(table))),
        Item::ArrayOfTables(array) => Some(toml::Value::Array(
            array
                .iter()
                .map(|table| toml::Value::Table(table_to_toml(table)))
                .collect(),
        )),
    }
}

/// Converts a `toml_edit` table into a plain `toml` table.
pub(crate) fn table_to_toml(table: &dyn TableLike) -> toml::Table {
    table
        .iter()
        .filter_map(|(key, item)| Some((key.to_owned(), to_toml(item)?)))
        .collect()
}

fn value_to_toml(value: &Value) -> toml::Value {
    match value {
        Value::String(text) => toml::Value::String(text.value().clone()),
        Value::Integer(number) => toml::Value::Integer(*number.value()),
        Value::Float(number) => toml::Value::Float(*number.value()),
        Value::Boolean(flag) => toml::Value::Boolean(*flag.value()),
        Value::Datetime(moment) => toml::Value::Datetime(*moment.value()),
        Value::Array(array) => toml::Value::Array(array.iter().map(value_to_toml).collect()),
        Value::InlineTable(table) => toml::Value::Table(table_to_toml(table)),
    }
}
