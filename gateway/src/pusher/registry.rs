//! This node's Pusher channels and their local subscribers: where the broker
//! delivers a channel's events.
//!
//! A channel exists here while it has local subscribers, and exactly then
//! this node holds a broker subscription to its subject and is listed in the
//! app's directory (so the HTTP API can list occupied channels cluster-wide).
//! As in the hub, the first subscriber subscribes (answered once the
//! subscription is active) and the last one unsubscribes, serialized per
//! channel by an async lock.
//!
//! Every event crosses the broker in an envelope, `<socket id>\n<frame>`: the
//! socket id, possibly empty, is the one subscriber not to deliver it to (the
//! sender of a client event, or the `socket_id` of an API trigger). Frames are
//! compact JSON, which never holds a raw newline.
//!
//! A subscriber of a cache channel is first *held*: its channel's events wait
//! (at most [`MAX_HELD`]) while the connection reads the channel's last event,
//! so that this one comes right after `subscription_succeeded`; [`Registry::release`]
//! queues it, then what waited, leaving out a waiting event that is the same
//! frame (it was kept and delivered both).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use parking_lot::{Mutex, RwLock};

use super::roster::{self, Enlisted};
use crate::app::AppState;
use crate::broker::{BrokerError, Delivery, RoomSink, Subscription};
use crate::hub::Hub;
use crate::outbox::Outbox;

/// The envelope of an event: `exclude` (a socket id, or empty) and the frame.
pub fn envelope(exclude: Option<&str>, frame: &str) -> String {
    format!("{}\n{frame}", exclude.unwrap_or_default())
}

/// Splits an envelope into the socket id to skip and the frame.
fn open(text: &str) -> Option<(&str, &str)> {
    text.split_once('\n')
}

/// Most events held for one subscriber while its channel's last event is
/// read (one broker round trip); beyond them, the held events are queued and
/// the last event comes after them.
pub const MAX_HELD: usize = 256;

/// Longest a subscriber is held: a release that does not come by then (a
/// broker that does not answer) lets the events through.
pub const MAX_HOLD: Duration = Duration::from_secs(5);

/// A local subscriber of a channel.
struct Subscriber {
    socket_id: Arc<str>,
    outbox: Arc<Outbox>,
    /// Set while the subscriber is held; `held` is then read under its lock.
    holding: AtomicBool,
    /// The events waiting while held.
    held: Mutex<Option<Vec<Utf8Bytes>>>,
}

impl Subscriber {
    /// Queues `frames`, or holds them while the subscriber is held.
    fn deliver(&self, frames: impl Iterator<Item = Utf8Bytes>) {
        if self.holding.load(Ordering::Acquire) {
            let mut held = self.held.lock();
            if let Some(waiting) = held.as_mut() {
                waiting.extend(frames);
                if waiting.len() > MAX_HELD {
                    let waiting = held.take().unwrap_or_default();
                    self.holding.store(false, Ordering::Release);
                    self.outbox.push_all(waiting);
                }
                return;
            }
            drop(held);
        }
        self.outbox.push_all(frames);
    }

    /// Starts holding the subscriber's events and queues `reply` ahead of them.
    fn hold(&self, reply: Utf8Bytes) {
        let mut held = self.held.lock();
        *held = Some(Vec::new());
        self.holding.store(true, Ordering::Release);
        self.outbox.push(reply);
    }

    /// Queues `first` (unless a held event is the same frame), then the held
    /// events, and stops holding.
    fn release(&self, first: Option<Utf8Bytes>) {
        let mut held = self.held.lock();
        let waiting = held.take().unwrap_or_default();
        let first = first.filter(|first| !waiting.iter().any(|event| event == first));
        self.outbox.push_all(first.into_iter().chain(waiting));
        self.holding.store(false, Ordering::Release);
    }
}

/// What a channel holds while it has local subscribers.
struct Active {
    _subscription: Subscription,
    /// This node's entry in the app's directory of occupied channels.
    directory: Enlisted,
}

/// One channel with local subscribers.
pub struct Channel {
    subscribers: RwLock<HashMap<u64, Subscriber>>,
    active: tokio::sync::Mutex<Option<Active>>,
    /// Set once removed from the registry: a subscribe holding a stale
    /// handle retries with a fresh channel.
    closed: AtomicBool,
}

impl RoomSink for Channel {
    fn deliver(&self, messages: &[Delivery]) {
        let opened: Vec<(&str, Utf8Bytes)> = messages
            .iter()
            .filter_map(|message| open(message.frame.as_str()))
            .map(|(exclude, frame)| (exclude, Utf8Bytes::from(frame.to_owned())))
            .collect();
        for subscriber in self.subscribers.read().values() {
            let id = &*subscriber.socket_id;
            subscriber.deliver(
                opened
                    .iter()
                    .filter(|(exclude, _)| *exclude != id)
                    .map(|(_, frame)| frame.clone()),
            );
        }
    }
}

/// Where a channel of an app is, for the registry.
pub struct Place<'a> {
    /// The app's id.
    pub app: &'a str,
    /// The channel's name.
    pub channel: &'a str,
}

/// This node's Pusher channels, by broker room key.
#[derive(Default)]
pub struct Registry {
    channels: Mutex<HashMap<String, Arc<Channel>>>,
}

impl Registry {
    /// Adds a subscriber to a channel, subscribing at the broker (and listing
    /// the channel in the app's directory) first when it is the first local
    /// one, and queues `reply` while no event of the channel can come first.
    /// With `hold`, the subscriber's events then wait for [`Registry::release`].
    ///
    /// # Errors
    /// The broker's, when it could not subscribe.
    pub async fn subscribe(
        &self,
        state: &AppState,
        place: Place<'_>,
        socket_id: &Arc<str>,
        outbox: &Arc<Outbox>,
        reply: String,
        hold: bool,
    ) -> Result<(), BrokerError> {
        let key = super::channel::room(place.app, place.channel);
        loop {
            let channel = self.channel(&key);
            let mut active = channel.active.lock().await;
            if channel.closed.load(Ordering::Acquire) {
                continue;
            }
            if active.is_none() {
                let started = async {
                    let subscription = state.broker.subscribe(&key, channel.clone()).await?;
                    let directory = roster::enlist(
                        state,
                        &roster::directory(place.app),
                        &format!("{}:{}", state.hub.node(), place.channel),
                        place.channel,
                    )
                    .await?;
                    Ok::<_, BrokerError>(Active {
                        _subscription: subscription,
                        directory,
                    })
                }
                .await;
                match started {
                    Ok(started) => *active = Some(started),
                    Err(error) => {
                        if channel.subscribers.read().is_empty() {
                            self.close(&key, &channel);
                        }
                        return Err(error);
                    }
                }
            }
            let mut subscribers = channel.subscribers.write();
            let subscriber = Subscriber {
                socket_id: socket_id.clone(),
                outbox: outbox.clone(),
                holding: AtomicBool::new(false),
                held: Mutex::new(None),
            };
            if hold {
                subscriber.hold(Utf8Bytes::from(reply));
            } else {
                outbox.push(Utf8Bytes::from(reply));
            }
            subscribers.insert(outbox.key, subscriber);
            return Ok(());
        }
    }

    /// Holds an existing subscriber's events, as [`Registry::subscribe`] with
    /// `hold` does, after queueing `reply` (a repeated subscription's answer).
    /// Returns whether it is a subscriber.
    pub fn hold(&self, place: Place<'_>, key: u64, reply: String) -> bool {
        self.with_subscriber(place, key, |subscriber| {
            subscriber.hold(Utf8Bytes::from(reply));
        })
    }

    /// Queues `first` for a held subscriber, then the events it held, and
    /// stops holding (see the module docs).
    pub fn release(&self, place: Place<'_>, key: u64, first: Option<String>) {
        self.with_subscriber(place, key, |subscriber| {
            subscriber.release(first.map(Utf8Bytes::from));
        });
    }

    fn with_subscriber(
        &self,
        place: Place<'_>,
        key: u64,
        action: impl FnOnce(&Subscriber),
    ) -> bool {
        let room = super::channel::room(place.app, place.channel);
        let Some(channel) = self.channels.lock().get(&room).cloned() else {
            return false;
        };
        let subscribers = channel.subscribers.read();
        match subscribers.get(&key) {
            Some(subscriber) => {
                action(subscriber);
                true
            }
            None => false,
        }
    }

    /// Removes a subscriber; the last one unsubscribes and leaves the
    /// directory. Returns whether it was one.
    pub async fn unsubscribe(&self, hub: &Hub, app: &str, channel_name: &str, key: u64) -> bool {
        let room = super::channel::room(app, channel_name);
        let Some(channel) = self.channels.lock().get(&room).cloned() else {
            return false;
        };
        let mut active = channel.active.lock().await;
        let (removed, empty) = {
            let mut subscribers = channel.subscribers.write();
            (subscribers.remove(&key).is_some(), subscribers.is_empty())
        };
        if empty && !channel.closed.load(Ordering::Acquire) {
            self.close(&room, &channel);
            if let Some(ended) = active.take() {
                ended.directory.leave(hub).await;
            }
        }
        removed
    }

    /// The channel under `key`, created when missing.
    fn channel(&self, key: &str) -> Arc<Channel> {
        self.channels
            .lock()
            .entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(Channel {
                    subscribers: RwLock::default(),
                    active: tokio::sync::Mutex::new(None),
                    closed: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Marks `channel` closed and removes it if it is still the registered one.
    fn close(&self, key: &str, channel: &Arc<Channel>) {
        channel.closed.store(true, Ordering::Release);
        let mut channels = self.channels.lock();
        if channels
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, channel))
        {
            channels.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppState;
    use crate::pusher::channel;

    fn outbox(state: &AppState) -> Arc<Outbox> {
        let key = state.hub.next_key();
        Outbox::new(key, format!("n:{key}").into(), 16, state.metrics.clone())
    }

    fn texts(outbox: &Outbox) -> Vec<String> {
        outbox
            .take()
            .iter()
            .map(|frame| frame.as_str().to_owned())
            .collect()
    }

    /// Through the in-process broker: the reply comes first, an event skips
    /// the socket its envelope names, the channel is listed in the app's
    /// directory while it has subscribers, and the last unsubscribe ends both.
    #[tokio::test]
    async fn events_skip_the_excluded_socket_and_the_directory_follows_subscribers() {
        let config = wsgate_config::Config::from_args(wsgate_config::Args::default()).unwrap();
        let state = AppState::test(config);
        let registry = Registry::default();
        let (a, b) = (outbox(&state), outbox(&state));
        let (id_a, id_b): (Arc<str>, Arc<str>) = ("1.1".into(), "1.2".into());
        for (outbox, id) in [(&a, &id_a), (&b, &id_b)] {
            let place = Place {
                app: "app",
                channel: "news",
            };
            registry
                .subscribe(&state, place, id, outbox, "ok".into(), false)
                .await
                .unwrap();
        }
        let room = channel::room("app", "news");
        state
            .broker
            .publish(&room, envelope(Some("1.1"), "{\"event\":\"e\"}"))
            .await
            .unwrap();
        state
            .broker
            .publish(&room, envelope(None, "{\"event\":\"f\"}"))
            .await
            .unwrap();
        assert_eq!(texts(&a), ["ok", "{\"event\":\"f\"}"]);
        assert_eq!(texts(&b), ["ok", "{\"event\":\"e\"}", "{\"event\":\"f\"}"]);
        let listed = roster::gather(&*state.broker, &roster::directory("app"))
            .await
            .unwrap();
        let names: Vec<&str> = listed.iter().map(|entry| entry.user.as_str()).collect();
        assert_eq!(names, ["news"]);

        assert!(registry.unsubscribe(&state.hub, "app", "news", a.key).await);
        assert!(!registry.unsubscribe(&state.hub, "app", "news", a.key).await);
        assert!(registry.unsubscribe(&state.hub, "app", "news", b.key).await);
        state
            .broker
            .publish(&room, envelope(None, "{\"event\":\"g\"}"))
            .await
            .unwrap();
        assert!(texts(&b).is_empty());
        let listed = roster::gather(&*state.broker, &roster::directory("app"))
            .await
            .unwrap();
        assert!(listed.is_empty(), "{listed:?}");
    }

    /// A held subscriber gets its reply, then the frame it is released with,
    /// then the events that came meanwhile, one of which that is the same
    /// frame left out; a subscriber not held is not waited for.
    #[tokio::test]
    async fn a_held_subscriber_gets_its_first_frame_before_what_waited() {
        let config = wsgate_config::Config::from_args(wsgate_config::Args::default()).unwrap();
        let state = AppState::test(config);
        let registry = Registry::default();
        let (held, free) = (outbox(&state), outbox(&state));
        let (id_held, id_free): (Arc<str>, Arc<str>) = ("1.1".into(), "1.2".into());
        let place = || Place {
            app: "app",
            channel: "cache-x",
        };
        registry
            .subscribe(&state, place(), &id_held, &held, "ok".into(), true)
            .await
            .unwrap();
        registry
            .subscribe(&state, place(), &id_free, &free, "ok".into(), false)
            .await
            .unwrap();
        let room = channel::room("app", "cache-x");
        for event in ["{\"event\":\"e\"}", "{\"event\":\"f\"}"] {
            state
                .broker
                .publish(&room, envelope(None, event))
                .await
                .unwrap();
        }
        assert_eq!(texts(&held), ["ok"], "the events wait");
        registry.release(place(), held.key, Some("{\"event\":\"e\"}".into()));
        assert_eq!(
            texts(&held),
            ["{\"event\":\"e\"}", "{\"event\":\"f\"}"],
            "e was both kept and delivered: once"
        );
        assert_eq!(
            texts(&free),
            ["ok", "{\"event\":\"e\"}", "{\"event\":\"f\"}"]
        );

        // Held again (a repeated subscribe): the reply, then the first frame.
        assert!(registry.hold(place(), held.key, "again".into()));
        state
            .broker
            .publish(&room, envelope(None, "{\"event\":\"g\"}"))
            .await
            .unwrap();
        registry.release(place(), held.key, Some("{\"event\":\"f\"}".into()));
        assert_eq!(
            texts(&held),
            ["again", "{\"event\":\"f\"}", "{\"event\":\"g\"}"]
        );
        assert!(!registry.hold(place(), 0, "nobody".into()));
    }

    /// A subscriber held for longer than [`MAX_HELD`] events lets them
    /// through; the first frame then comes after them.
    #[tokio::test]
    async fn holding_is_bounded() {
        let config = wsgate_config::Config::from_args(wsgate_config::Args::default()).unwrap();
        let state = AppState::test(config);
        let registry = Registry::default();
        let key = state.hub.next_key();
        let held = Outbox::new(key, "n:1".into(), MAX_HELD * 2, state.metrics.clone());
        let id: Arc<str> = "1.1".into();
        let place = || Place {
            app: "app",
            channel: "cache-y",
        };
        registry
            .subscribe(&state, place(), &id, &held, "ok".into(), true)
            .await
            .unwrap();
        let room = channel::room("app", "cache-y");
        for _ in 0..=MAX_HELD {
            state
                .broker
                .publish(&room, envelope(None, "{}"))
                .await
                .unwrap();
        }
        assert_eq!(
            texts(&held).len(),
            MAX_HELD + 2,
            "the reply and every event"
        );
        registry.release(place(), held.key, Some("first".into()));
        assert_eq!(texts(&held), ["first"]);
    }

    /// An envelope names the socket to skip, possibly none, before the frame.
    #[test]
    fn envelopes_open_into_exclusion_and_frame() {
        assert_eq!(open(&envelope(Some("1.2"), "{}")), Some(("1.2", "{}")));
        assert_eq!(
            open(&envelope(None, r#"{"a":"b\nc"}"#)),
            Some(("", r#"{"a":"b\nc"}"#))
        );
        assert_eq!(open("no newline"), None);
    }
}
