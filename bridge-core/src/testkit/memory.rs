//! An adapter whose "protocol" is a handle the test holds.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use crate::adapter::{Adapter, AdapterContext, AdapterError, Delivered, SubmitError, Submitted};
use crate::capabilities::Capabilities;
use crate::event::{InboundEvent, OutboundEvent, Sender};
use crate::ids::{AdapterId, EventId, RemoteEventId, RemoteRoomId, RemoteUserId};

/// An in-memory adapter: the test submits inbound events through its [`MemoryHandle`] and reads
/// what the core delivered. Sends are idempotent by event ID, like a Matrix homeserver's
/// transaction IDs: a repeated send of an event to a room returns the first native ID and is not
/// recorded twice.
#[derive(Debug, Clone)]
pub struct MemoryAdapter {
    caps: Capabilities,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    ctx: watch::Sender<Option<AdapterContext>>,
    sent: Mutex<Vec<OutboundEvent>>,
    by_event: Mutex<HashMap<(RemoteRoomId, EventId), RemoteEventId>>,
    send_calls: Mutex<u64>,
    failures: Mutex<VecDeque<AdapterError>>,
    delay: Mutex<Option<Duration>>,
    sent_notify: Notify,
    history: Mutex<HashMap<RemoteRoomId, Vec<InboundEvent>>>,
    backfill_calls: Mutex<Vec<(RemoteRoomId, Option<RemoteEventId>)>>,
    unlinks: Mutex<Vec<Unlinked>>,
    unlink_failures: Mutex<VecDeque<AdapterError>>,
}

/// A call the core made to a [`MemoryAdapter`] after a link was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlinked {
    /// [`Adapter::leave`] of this room.
    Left(RemoteRoomId),
    /// [`Adapter::source_unlinked`]: this room, the adapter whose users no longer reach it.
    SourceUnlinked(RemoteRoomId, AdapterId),
}

/// The test's side of a [`MemoryAdapter`].
#[derive(Debug, Clone)]
pub struct MemoryHandle {
    state: Arc<State>,
}

impl MemoryAdapter {
    /// An adapter with these capabilities.
    pub fn new(caps: Capabilities) -> Self {
        Self {
            caps,
            state: Arc::new(State {
                ctx: watch::Sender::new(None),
                sent: Mutex::new(Vec::new()),
                by_event: Mutex::new(HashMap::new()),
                send_calls: Mutex::new(0),
                failures: Mutex::new(VecDeque::new()),
                delay: Mutex::new(None),
                sent_notify: Notify::new(),
                history: Mutex::new(HashMap::new()),
                backfill_calls: Mutex::new(Vec::new()),
                unlinks: Mutex::new(Vec::new()),
                unlink_failures: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// The handle the test drives it with.
    pub fn handle(&self) -> MemoryHandle {
        MemoryHandle {
            state: self.state.clone(),
        }
    }

    /// The puppet a sender is shown as in this adapter's rooms.
    pub fn puppet_of(user: &str) -> RemoteUserId {
        RemoteUserId::new(format!("puppet:{user}"))
    }
}

#[async_trait]
impl Adapter for MemoryAdapter {
    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    async fn run(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        let shutdown = ctx.shutdown().clone();
        ctx.set_connected(true);
        self.state.ctx.send_replace(Some(ctx.clone()));
        shutdown.cancelled().await;
        ctx.set_connected(false);
        self.state.ctx.send_replace(None);
        Ok(())
    }

    async fn backfill(
        &self,
        room: &RemoteRoomId,
        after: Option<&RemoteEventId>,
        limit: usize,
    ) -> Result<Vec<InboundEvent>, AdapterError> {
        self.state
            .backfill_calls
            .lock()
            .push((room.clone(), after.cloned()));
        let history = self.state.history.lock();
        let events = history.get(room).map(Vec::as_slice).unwrap_or_default();
        let start = after
            .and_then(|a| events.iter().position(|e| e.native_id.as_ref() == Some(a)))
            .map_or(0, |i| i + 1);
        Ok(events.iter().skip(start).take(limit).cloned().collect())
    }

    /// Recorded ([`MemoryHandle::unlinks`]), unless a failure was queued for it.
    async fn leave(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        self.state.unlinked(Unlinked::Left(room.clone()))
    }

    /// Recorded ([`MemoryHandle::unlinks`]), unless a failure was queued for it.
    async fn source_unlinked(
        &self,
        room: &RemoteRoomId,
        source: &AdapterId,
    ) -> Result<(), AdapterError> {
        self.state
            .unlinked(Unlinked::SourceUnlinked(room.clone(), source.clone()))
    }

    /// A direct conversation is the room `dm:<user>:<adapter>:<other user>`.
    async fn open_direct(
        &self,
        user: &RemoteUserId,
        with: &Sender,
    ) -> Result<RemoteRoomId, AdapterError> {
        Ok(RemoteRoomId::new(format!(
            "dm:{user}:{}:{}",
            with.adapter, with.user
        )))
    }

    async fn send(&self, event: OutboundEvent) -> Result<Delivered, AdapterError> {
        *self.state.send_calls.lock() += 1;
        let delay = *self.state.delay.lock();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if let Some(err) = self.state.failures.lock().pop_front() {
            return Err(err);
        }
        let puppet = Some(Self::puppet_of(event.sender.user.as_str()));
        let native = {
            let mut by_event = self.state.by_event.lock();
            let key = (event.room.clone(), event.id);
            if let Some(native) = by_event.get(&key) {
                return Ok(Delivered {
                    native_id: Some(native.clone()),
                    puppet,
                });
            }
            let native = RemoteEventId::new(format!("mem-{}-{}", event.room, event.id));
            by_event.insert(key, native.clone());
            native
        };
        self.state.sent.lock().push(event);
        self.state.sent_notify.notify_waiters();
        Ok(Delivered {
            native_id: Some(native),
            puppet,
        })
    }
}

impl State {
    fn unlinked(&self, call: Unlinked) -> Result<(), AdapterError> {
        if let Some(err) = self.unlink_failures.lock().pop_front() {
            return Err(err);
        }
        self.unlinks.lock().push(call);
        Ok(())
    }
}

impl MemoryHandle {
    /// Submits an inbound event, waiting until the adapter is running.
    pub async fn submit(&self, event: InboundEvent) -> Result<Submitted, SubmitError> {
        let mut rx = self.state.ctx.subscribe();
        let ctx = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| SubmitError::ShuttingDown)?
            .clone();
        match ctx {
            Some(ctx) => ctx.submit(event).await,
            None => Err(SubmitError::ShuttingDown),
        }
    }

    /// The context the adapter runs with, once it runs.
    pub async fn context(&self) -> Option<AdapterContext> {
        let mut rx = self.state.ctx.subscribe();
        rx.wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|c| c.clone())
    }

    /// Everything delivered so far (each event once).
    pub fn sent(&self) -> Vec<OutboundEvent> {
        self.state.sent.lock().clone()
    }

    /// How many times `send` was called (retries and repeats included).
    pub fn send_calls(&self) -> u64 {
        *self.state.send_calls.lock()
    }

    /// The native ID this adapter gave the delivery of `event` (in any of its rooms).
    pub fn native_id_of(&self, event: EventId) -> Option<RemoteEventId> {
        self.state
            .by_event
            .lock()
            .iter()
            .find(|((_, id), _)| *id == event)
            .map(|(_, native)| native.clone())
    }

    /// Waits until at least `n` events were delivered, or `timeout` passes; returns them.
    pub async fn wait_sent(&self, n: usize, timeout: Duration) -> Vec<OutboundEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.sent_notify.notified();
            let sent = self.sent();
            if sent.len() >= n || tokio::time::Instant::now() >= deadline {
                return sent;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// The next sends fail with these errors, in order.
    pub fn fail_next(&self, errors: impl IntoIterator<Item = AdapterError>) {
        self.state.failures.lock().extend(errors);
    }

    /// The room's history as the far side keeps it: what [`Adapter::backfill`] returns from.
    pub fn set_history(&self, room: &str, events: Vec<InboundEvent>) {
        self.state
            .history
            .lock()
            .insert(RemoteRoomId::new(room), events);
    }

    /// The `(room, after)` of every backfill call so far.
    pub fn backfill_calls(&self) -> Vec<(RemoteRoomId, Option<RemoteEventId>)> {
        self.state.backfill_calls.lock().clone()
    }

    /// Simulates a lost and re-established connection (which triggers backfill).
    pub async fn reconnect(&self) {
        if let Some(ctx) = self.context().await {
            ctx.set_connected(false);
            ctx.set_connected(true);
        }
    }

    /// Every `leave` and `source_unlinked` done so far, in order (failed ones not included).
    pub fn unlinks(&self) -> Vec<Unlinked> {
        self.state.unlinks.lock().clone()
    }

    /// The next `leave` or `source_unlinked` calls fail with these errors, in order.
    pub fn fail_next_unlinks(&self, errors: impl IntoIterator<Item = AdapterError>) {
        self.state.unlink_failures.lock().extend(errors);
    }

    /// Reports the adapter disconnected (`false`) or connected again (`true`, which triggers
    /// backfill and the work removed links left).
    pub async fn set_connected(&self, connected: bool) {
        if let Some(ctx) = self.context().await {
            ctx.set_connected(connected);
        }
    }

    /// Every send takes this long (a slow adapter).
    pub fn set_delay(&self, delay: Option<Duration>) {
        *self.state.delay.lock() = delay;
    }
}
