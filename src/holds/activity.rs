//! Which events have work: the ids the scripts publish on the activity channel
//! ([`super::Keys::activity`]) when the relay had read every earlier entry of
//! the event's outbox, or when a new hold is the event's first to fall due.
//!
//! The relay and the sweeper wait on this instead of visiting every event's
//! keys on every round, so a quiet catalogue costs nothing. Pub/sub is not
//! durable: a notice sent while the subscriber was disconnected is lost, so a
//! reconnect (or a reader that fell behind) yields [`Activity::Missed`], and
//! the reader then looks at every event once.

use fred::{
    clients::SubscriberClient,
    interfaces::{ClientLike, EventInterface, PubsubInterface},
    types::Message,
};
use tokio::{sync::broadcast::error::RecvError, task::JoinHandle};

use super::{Store, StoreError};

/// Notices a feed holds before its reader is told it missed some.
const NOTICES_BUFFERED: usize = 4_096;

/// What the activity channel said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// This event has new work.
    Event(i64),
    /// Notices may have been lost: every event may have work.
    Missed,
}

/// A subscription to the activity channel, on a connection of its own.
pub struct ActivityFeed {
    client: SubscriberClient,
    messages: tokio::sync::broadcast::Receiver<Message>,
    reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
    resubscribe: JoinHandle<()>,
}

impl Store {
    /// Subscribes to the activity channel with the pool's settings; it
    /// reconnects and subscribes again by itself.
    pub async fn watch_activity(&self) -> Result<ActivityFeed, StoreError> {
        let pool = self.client();
        let mut perf = pool.perf_config();
        // Notices waiting to be read; past this many the reader is told it missed some.
        perf.broadcast_channel_capacity = NOTICES_BUFFERED;
        let client = SubscriberClient::new(
            pool.client_config(),
            Some(perf),
            Some(pool.connection_config().clone()),
            pool.client_reconnect_policy(),
        );
        let messages = client.message_rx();
        let reconnects = client.reconnect_rx();
        client.init().await?;
        let resubscribe = client.manage_subscriptions();
        client.subscribe(self.keys.activity()).await?;
        Ok(ActivityFeed {
            client,
            messages,
            reconnects,
            resubscribe,
        })
    }

    /// Says on the activity channel that `event_id` has work (its holds were
    /// restored): the relay and the sweeper look at it now, not at their next scan.
    pub async fn announce_activity(&self, event_id: i64) -> Result<(), StoreError> {
        Ok(self
            .client()
            .publish::<(), _, _>(self.keys.activity(), event_id)
            .await?)
    }
}

impl ActivityFeed {
    /// The next notice; waits for one.
    pub async fn next(&mut self) -> Activity {
        tokio::select! {
            message = self.messages.recv() => match message {
                Ok(message) => parse(&message),
                Err(RecvError::Lagged(_)) => Activity::Missed,
                // The client is gone (it only quits on drop): nothing more will come.
                Err(RecvError::Closed) => std::future::pending().await,
            },
            _ = self.reconnects.recv() => Activity::Missed,
        }
    }

    /// A notice that has arrived already, without waiting.
    pub fn try_next(&mut self) -> Option<Activity> {
        if self.reconnects.try_recv().is_ok() {
            return Some(Activity::Missed);
        }
        match self.messages.try_recv() {
            Ok(message) => Some(parse(&message)),
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => Some(Activity::Missed),
            Err(_) => None,
        }
    }
}

fn parse(message: &Message) -> Activity {
    match message.value.as_i64() {
        Some(event_id) => Activity::Event(event_id),
        None => Activity::Missed,
    }
}

impl Drop for ActivityFeed {
    fn drop(&mut self) {
        self.resubscribe.abort();
        let client = self.client.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}
