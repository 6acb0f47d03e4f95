//! Syntax of ids: adapter ids, room ids and similar names.

/// Longest adapter id (`[a-z0-9_-]{1,32}`).
pub const ADAPTER_ID_MAX_LEN: usize = 32;
/// Punctuation allowed in adapter ids besides `a-z` and `0-9`.
pub const ADAPTER_ID_PUNCTUATION: &str = "_-";
/// Longest room id (`[a-z0-9_.-]{1,64}`).
pub const ROOM_ID_MAX_LEN: usize = 64;
/// Punctuation allowed in room ids besides `a-z` and `0-9`.
pub const ROOM_ID_PUNCTUATION: &str = "_.-";

/// Checks that `value` is 1 to `max_len` characters, each a lowercase ASCII
/// letter, an ASCII digit or one of `punctuation`.
///
/// The error is a message for a [`Diagnostic`](crate::Diagnostic):
///
/// ```
/// use bridge_config::check_identifier;
/// assert!(check_identifier("chat-a", 32, "_-").is_ok());
/// assert_eq!(
///     check_identifier("Chat A", 32, "_-").unwrap_err(),
///     r#"expected 1 to 32 characters from [a-z0-9_-], got "Chat A""#,
/// );
/// ```
pub fn check_identifier(value: &str, max_len: usize, punctuation: &str) -> Result<(), String> {
    let length = value.chars().count();
    let valid = (1..=max_len).contains(&length)
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || punctuation.contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "expected 1 to {max_len} characters from [a-z0-9{punctuation}], got {}",
            crate::describe::show(value)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(check_identifier("a", 32, "_-").is_ok());
        assert!(check_identifier("x_9-z", 32, "_-").is_ok());
        assert!(check_identifier(&"a".repeat(32), 32, "_-").is_ok());
        assert!(check_identifier(&"a".repeat(33), 32, "_-").is_err());
        assert!(check_identifier("", 32, "_-").is_err());
        assert!(check_identifier("a.b", 32, "_-").is_err());
        assert!(check_identifier("a.b", 64, "_.-").is_ok());
        assert!(check_identifier("é", 32, "_-").is_err());
        assert!(check_identifier("A", 32, "_-").is_err());
    }
}
