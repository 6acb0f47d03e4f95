//! The XMPP adapter of the bridge (work in progress: this crate does not implement
//! `bridge_core::Adapter` yet).
//!
//! # Plan
//!
//! The adapter speaks XMPP in two modes, **both compiled into the same build** (and exercised by
//! the same `cargo test --workspace`):
//!
//! * **Component mode** ([XEP-0114](https://xmpp.org/extensions/xep-0114.html)): the bridge
//!   connects to the server as an external component (e.g. `bridge.example.org`) and can send as
//!   any puppet JID on that domain. This uses our **own** small XEP-0114 connection
//!   ([`component`]), built on `rxml` (namespace-aware async XML parser) and `minidom` elements,
//!   with the stanza namespace rewritten at the edge (`jabber:component:accept` on the wire,
//!   `jabber:client` inside, see [`wire`]) so that `xmpp_parsers`' default types parse and build
//!   the stanzas.
//! * **Client mode**: the bridge logs in as an ordinary account, through tokio-xmpp's c2s stack,
//!   driving `tokio_xmpp::stanzastream::StanzaStream` from one task (not `Client`, whose
//!   `send_stanza` can deadlock when awaited in the task that reads its events). Not built yet.
//!
//! tokio-xmpp's (and xmpp-parsers') `component` feature must stay **off in the whole
//! workspace**: it switches xmpp-parsers' stanza namespace to `jabber:component:accept` for every
//! crate in the build, which breaks client mode, and without it tokio-xmpp's own `Component`
//! cannot log in. A unit test asserts that xmpp-parsers' default namespace is `jabber:client`.
//! The research behind this is in `docs/design/xmpp.md`.

pub mod adapter;
pub mod client;
pub mod component;
pub mod depth_guard;
#[doc(hidden)]
pub mod fuzzing;
pub mod jid;
pub mod mam;
pub mod muc;
pub mod session;
pub mod settings;
pub mod stream;
pub mod translate;
pub mod upload;
pub mod wire;
pub mod xml;

pub use adapter::{XmppAdapter, XmppFactory};
