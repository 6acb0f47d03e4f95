//! What the server hands requests to: the [`Provider`] (the adapter's hub and follower logic) and
//! the notify deduplication hook.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::wire::{
    GroupInfoRequest, GroupInfoResponse, IdentifierUri, KeyMaterialRequest, KeyMaterialResponse,
    NotifyBody, SubmitMessageRequest, SubmitMessageResponse, UpdateRequest, UpdateRoomResponse,
};

/// The domain of the provider that sent a request, authenticated: its `From: mimi@DOMAIN`
/// header matches the client certificate of the TLS connection (protocol-06 §4.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerDomain(pub(crate) String);

impl PeerDomain {
    /// A peer domain authenticated by other means than this server (tests of a [`Provider`],
    /// or a caller that checked the certificate itself); lower-cased.
    pub fn assume_authenticated(domain: impl Into<String>) -> Self {
        Self(domain.into().to_ascii_lowercase())
    }

    /// The domain, lower-cased.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PeerDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why the [`Provider`] could not answer; each variant is an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// 400: the request makes no sense (beyond what decoding checks).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 403: the peer may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404: no such user or room here.
    #[error("not found: {0}")]
    NotFound(String),
    /// 501: this provider does not offer the endpoint.
    #[error("not implemented: {0}")]
    NotImplemented(String),
    /// 503 with `Retry-After`: try again later (for example the store is busy).
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
        /// When to try again.
        retry_after: Option<Duration>,
    },
    /// 500: our fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProviderError {
    /// The HTTP status of the error.
    pub fn status(&self) -> u16 {
        match self {
            ProviderError::BadRequest(_) => 400,
            ProviderError::Forbidden(_) => 403,
            ProviderError::NotFound(_) => 404,
            ProviderError::NotImplemented(_) => 501,
            ProviderError::Unavailable { .. } => 503,
            ProviderError::Internal(_) => 500,
        }
    }
}

/// An asset fetched for `proxyDownload` (protocol-06 §5.10.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadedAsset {
    /// Its media type, if the asset provider gave one.
    pub content_type: Option<String>,
    /// The (encrypted) asset.
    pub body: Vec<u8>,
}

/// The MIMI logic behind the server: one method per endpoint, called with the decoded body and
/// the authenticated peer. Application-level refusals (`notAllowed`, `wrongEpoch`, ...) are
/// response bodies; a [`ProviderError`] becomes an HTTP error status.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// `POST /keyMaterial/{targetUser}` (§5.2): claim KeyPackages of `target_user`'s clients
    /// (as the target provider, or as the hub relaying to it).
    async fn key_material(
        &self,
        peer: &PeerDomain,
        target_user: IdentifierUri,
        request: KeyMaterialRequest,
    ) -> Result<KeyMaterialResponse, ProviderError>;

    /// `POST /update/{roomId}` (§5.3), as the room's hub.
    async fn update(
        &self,
        peer: &PeerDomain,
        room: IdentifierUri,
        request: UpdateRequest,
    ) -> Result<UpdateRoomResponse, ProviderError>;

    /// `POST /submitMessage/{roomId}` (§5.4), as the room's hub.
    async fn submit_message(
        &self,
        peer: &PeerDomain,
        room: IdentifierUri,
        request: SubmitMessageRequest,
    ) -> Result<SubmitMessageResponse, ProviderError>;

    /// `POST /notify/{roomId}` (§5.5), as a follower: `peer` is the room's hub (checked). Called
    /// once per distinct body: byte-identical retries are answered by the server (see
    /// [`NotifyDedupe`]). Return only once the messages are durably stored.
    async fn notify(
        &self,
        peer: &PeerDomain,
        room: IdentifierUri,
        body: NotifyBody,
    ) -> Result<(), ProviderError>;

    /// `POST /groupInfo/{roomId}` (§5.6), as the room's hub.
    async fn group_info(
        &self,
        peer: &PeerDomain,
        room: IdentifierUri,
        request: GroupInfoRequest,
    ) -> Result<GroupInfoResponse, ProviderError>;

    /// `GET /proxyDownload/{downloadUrl}` (§5.10.2), as a hub. Not offered by default.
    async fn proxy_download(
        &self,
        peer: &PeerDomain,
        download_url: String,
    ) -> Result<DownloadedAsset, ProviderError> {
        let _ = (peer, download_url);
        Err(ProviderError::NotImplemented("proxyDownload".into()))
    }

    /// `GET /assets/{id}`: a file this provider hosts for its users' messages (the upload
    /// side is out of the draft's scope; the download URL is whatever the `ExternalPart`
    /// says, ours is this path). None by default.
    async fn asset(&self, peer: &PeerDomain, id: String) -> Result<DownloadedAsset, ProviderError> {
        let _ = peer;
        Err(ProviderError::NotFound(format!("no asset {id}")))
    }
}

/// The digest identifying a notify body: SHA-256 over the hub's domain, the room and the body
/// (protocol-06 §5.5: a duplicate is the same body from the same hub).
pub type NotifyDigest = [u8; 32];

/// Remembers which notify bodies were processed, so a retry is answered 201 without being
/// processed again. The adapter can persist it; [`RecentNotifies`] keeps them in memory.
#[async_trait]
pub trait NotifyDedupe: Send + Sync + 'static {
    /// Whether `digest` was recorded.
    async fn seen(&self, digest: &NotifyDigest) -> bool;
    /// Records `digest` (after the [`Provider`] accepted the body).
    async fn record(&self, digest: NotifyDigest);
}

/// The newest `capacity` notify digests, in memory.
#[derive(Debug)]
pub struct RecentNotifies {
    capacity: usize,
    inner: Mutex<(HashSet<NotifyDigest>, VecDeque<NotifyDigest>)>,
}

impl RecentNotifies {
    /// Keeps up to `capacity` digests (at least one), forgetting the oldest first.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }
}

impl Default for RecentNotifies {
    fn default() -> Self {
        Self::new(4096)
    }
}

#[async_trait]
impl NotifyDedupe for RecentNotifies {
    async fn seen(&self, digest: &NotifyDigest) -> bool {
        self.inner.lock().0.contains(digest)
    }

    async fn record(&self, digest: NotifyDigest) {
        let mut inner = self.inner.lock();
        let (set, order) = &mut *inner;
        if !set.insert(digest) {
            return;
        }
        order.push_back(digest);
        while order.len() > self.capacity {
            if let Some(oldest) = order.pop_front() {
                set.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recent_notifies_forget_the_oldest_beyond_capacity() {
        let recent = RecentNotifies::new(2);
        for n in 0..3u8 {
            recent.record([n; 32]).await;
        }
        recent.record([2; 32]).await;
        assert!(!recent.seen(&[0; 32]).await);
        assert!(recent.seen(&[1; 32]).await);
        assert!(recent.seen(&[2; 32]).await);
    }
}
