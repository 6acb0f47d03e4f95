//! TEMPORARY placeholder until the real module lands.
use serde::{Deserialize, Serialize};
/// Rich text.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RichText {
    body: String,
}
impl RichText {
    /// plain
    pub fn plain(body: impl Into<String>) -> Self {
        Self { body: body.into() }
    }
    /// body
    pub fn body(&self) -> &str {
        &self.body
    }
    /// formatted?
    pub fn is_formatted(&self) -> bool {
        false
    }
    /// md
    pub fn to_markdown(&self) -> String {
        self.body.clone()
    }
    /// md
    pub fn from_markdown(md: &str) -> Self {
        Self::plain(md)
    }
}
