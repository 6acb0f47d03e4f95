//! The Matrix adapter: an application service whose ghosts represent the users of every other
//! network, or a relay bot for admins who cannot register one.

pub mod appservice;
pub mod homeserver;
pub mod registration;
pub mod settings;
pub mod translate;
