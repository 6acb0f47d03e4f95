//! The xmpp adapter (filled in by its own issue).
