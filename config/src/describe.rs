//! Short descriptions of values for messages: `a string "x"`, `an integer 3`.

use toml_edit::{Item, Value};

/// Quotes a string for a message, cutting it after 60 characters.
pub(crate) fn show(text: &str) -> String {
    const LIMIT: usize = 60;
    if text.chars().count() > LIMIT {
        let cut: String = text.chars().take(LIMIT).collect();
        format!("{cut:?}…")
    } else {
        format!("{text:?}")
    }
}

/// "a string \"x\"", "an integer 3", "a table"…
pub(crate) fn describe(item: &Item) -> String {
    match item {
        Item::None => "nothing".to_owned(),
        Item::Value(value) => describe_value(value),
        Item::Table(_) => "a table".to_owned(),
        Item::ArrayOfTables(_) => "an array of tables".to_owned(),
    }
}

/// Like [`describe`] for a `toml_edit` value.
pub(crate) fn describe_value(value: &Value) -> String {
    match value {
        Value::String(text) => format!("a string {}", show(text.value())),
        Value::Integer(number) => format!("an integer {}", number.value()),
        Value::Float(number) => format!("a float {}", number.value()),
        Value::Boolean(flag) => format!("a boolean {}", flag.value()),
        Value::Datetime(moment) => format!("a date-time {}", moment.value()),
        Value::Array(_) => "an array".to_owned(),
        Value::InlineTable(_) => "a table".to_owned(),
    }
}

/// Like [`describe`] for a plain `toml` value.
pub(crate) fn describe_toml(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => format!("a string {}", show(text)),
        toml::Value::Integer(number) => format!("an integer {number}"),
        toml::Value::Float(number) => format!("a float {number}"),
        toml::Value::Boolean(flag) => format!("a boolean {flag}"),
        toml::Value::Datetime(moment) => format!("a date-time {moment}"),
        toml::Value::Array(_) => "an array".to_owned(),
        toml::Value::Table(table) if table.is_empty() => "an empty table".to_owned(),
        toml::Value::Table(table) => {
            let keys: Vec<&str> = table.keys().map(String::as_str).collect();
            format!("a table with keys {}", keys.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows() {
        assert_eq!(show("a\"b"), "\"a\\\"b\"");
        let long = "x".repeat(100);
        assert_eq!(show(&long), format!("\"{}\"…", "x".repeat(60)));
        assert_eq!(describe_toml(&toml::Value::Integer(5)), "an integer 5");
        let table: toml::Table = [("a".to_owned(), toml::Value::Boolean(true))]
            .into_iter()
            .collect();
        assert_eq!(
            describe_toml(&toml::Value::Table(table)),
            "a table with keys a"
        );
        assert_eq!(describe(&Item::None), "nothing");
        assert_eq!(describe_value(&Value::from(2.5)), "a float 2.5");
    }
}
