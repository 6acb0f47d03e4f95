//! The MIMI transport (protocol-06 §4.1): HTTPS between providers over mutually authenticated
//! TLS. The [`server`] decodes requests and hands them to a [`Provider`]; the [`client`] calls a
//! peer's endpoints; [`tls`] builds both ends' TLS configuration.

pub mod client;
mod provider;
pub mod server;
pub mod tls;

pub use client::{ClientError, ClientOptions, MimiClient, Peer, RetryPolicy};
pub use provider::{
    DownloadedAsset, NotifyDedupe, NotifyDigest, PeerDomain, Provider, ProviderError,
    RecentNotifies,
};
pub use server::{PeerCertificate, ServerOptions, router, serve};
pub use tls::{TlsError, TlsIdentity};
