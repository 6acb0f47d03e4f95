//! The Matrix adapter: an application service whose ghosts represent the users of every other
//! network ([`AppserviceAdapter`]), or a relay bot for admins who cannot register one
//! ([`relay::RelayAdapter`]). Both are built by [`MatrixFactory`] from a `type = "matrix"`
//! section.

mod adapter;
pub mod appservice;
mod calls;
#[doc(hidden)]
pub mod fuzzing;
pub mod homeserver;
pub mod registration;
pub mod relay;
mod rooms;
pub mod settings;
pub mod translate;

pub use adapter::{AppserviceAdapter, MatrixFactory};
