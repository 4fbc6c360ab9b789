//! What the client reports while it works: Tor's progress, directory syncs, messages queued,
//! confirmed and arrived. Values only (no words): each front end renders them in its language.
//!
//! An [`Events`] sink is cloned into everything that reports (the Tor transport, the sessions it
//! opens, the application core). It delivers each event twice:
//! - to an optional *observer*, synchronously, in the order the events happen (the command-line
//!   programs print from it, so that no line is lost when the program exits);
//! - to every *subscriber* ([`Events::subscribe`]) through a bounded broadcast channel, for a
//!   user interface on another task. A subscriber too slow to keep up misses the oldest events
//!   and is told how many (`RecvError::Lagged`); nothing the client does ever waits for one.

use std::sync::Arc;
use tokio::sync::broadcast;

/// How many events a subscriber may fall behind before it misses some.
pub const SUBSCRIBER_BACKLOG: usize = 256;

/// Progress of the embedded Tor client.
#[derive(Clone, Debug, PartialEq)]
pub enum TorEvent {
    /// Bootstrapping: arti's status as a fraction in `0.0..=1.0`, its own one-line summary,
    /// and what blocks it, if anything does (a censored network, a clock far off, …).
    Bootstrapping {
        fraction: f32,
        status: String,
        blocked: Option<String>,
    },
    /// Bootstrapped: circuits can be built.
    Bootstrapped { seconds: f64 },
    /// An attempt to reach the relay's onion service failed; it is tried again.
    OnionRetry { attempt: u32, error: String },
    /// The relay's onion service answered.
    OnionReached { seconds: f64, attempts: u32 },
    /// The relay answered Hello over the onion circuit (one round trip).
    HelloAnswered { millis: f64 },
}

/// Progress of a session with the relay (over Tor or not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// The relay limits requests; the request is tried again after `wait_secs`.
    Throttled { wait_secs: u64 },
    /// The relay asks for a harder proof of work; the request is tried again with it.
    MoreWork { effort: u32 },
    /// A broken connection was opened again (and the mailbox proven again, if it was).
    Reconnected,
}

/// Whether a sent message has reached the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Sealed and kept in the encrypted outbox; not yet confirmed by the relay.
    Queued,
    /// The relay confirmed a copy for every device it was sealed for.
    Confirmed,
    /// The relay confirmed copies for some devices; the others were given up (see the report).
    Partly,
    /// Every copy was given up (refused for good, or its disappearing time passed unsent).
    Failed,
}

/// One thing the client did or saw.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Tor(TorEvent),
    Session(SessionEvent),
    /// The directory of posts and staff devices was downloaded and verified.
    DirectorySynced {
        posts: usize,
        devices: usize,
    },
    /// The client policy in use is one its authority marked as a test deployment (allowed by
    /// the person running the client); `unwitnessed`: without witnesses either.
    TestDeployment {
        unwitnessed: bool,
    },
    /// A connection to the relay that does not go through Tor (allowed for tests and
    /// development only): the network can see that this device contacts the relay.
    DirectConnection {
        url: String,
    },
    /// A message of ours changed state (`message` is its id in the conversation read model).
    Message {
        message: i64,
        post: String,
        delivery: Delivery,
    },
    /// A message arrived and was kept in the conversation with `post`.
    Arrived {
        message: i64,
        post: String,
        from: String,
    },
    /// A reply of this staff device changed state (`message`: its id in the case).
    Reply {
        message: i64,
        case: String,
        delivery: Delivery,
    },
    /// A message from a user arrived in `case` (staff side), reported as it is kept.
    CaseArrived {
        case: String,
    },
    /// This staff device is not (or no longer) enrolled in the verified directory: users'
    /// messages no longer reach it; `reason` says why, in words.
    NotEnrolled {
        reason: String,
    },
    /// The relay did what only a misbehaving relay does (a prekey handed out twice, a bundle
    /// that does not match the directory, …); the evidence is kept in the encrypted store.
    RelayMisbehaved {
        what: String,
    },
    /// Replies wait `secs` before they are sent, on a connection of their own, so that the
    /// relay cannot tie a reply to the read that prompted it.
    SendDelayed {
        secs: u64,
    },
    /// A background receive failed; it is tried again after the next pause.
    ReceiveFailed {
        error: String,
        retry_in_secs: u64,
    },
    /// A file's transfer moved (issue 18): `done` of `total` bytes sent to the relay
    /// (`outgoing`) or received and kept in the store. Emitted after each chunk the relay
    /// confirmed or this device kept, so a resumed transfer starts where this last said.
    Transfer {
        attachment: i64,
        outgoing: bool,
        done: u64,
        total: u64,
    },
}

type Observer = dyn Fn(&Event) + Send + Sync;

/// Where events go. Cheap to clone; every clone reports to the same observer and subscribers.
#[derive(Clone)]
pub struct Events {
    observer: Option<Arc<Observer>>,
    subscribers: broadcast::Sender<Event>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("observer", &self.observer.is_some())
            .field("subscribers", &self.subscribers.receiver_count())
            .finish()
    }
}

impl Default for Events {
    fn default() -> Self {
        Events {
            observer: None,
            subscribers: broadcast::channel(SUBSCRIBER_BACKLOG).0,
        }
    }
}

impl Events {
    /// A sink that also calls `observer` for every event, synchronously, in order.
    pub fn with_observer(observer: impl Fn(&Event) + Send + Sync + 'static) -> Events {
        Events {
            observer: Some(Arc::new(observer)),
            ..Events::default()
        }
    }

    /// Receives every event reported from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.subscribers.subscribe()
    }

    /// Reports `event`. Never blocks; without subscribers the broadcast copy is dropped.
    pub fn emit(&self, event: Event) {
        if let Some(observer) = &self.observer {
            observer(&event);
        }
        let _ = self.subscribers.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn observer_and_subscribers_see_every_event_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&seen);
        let events = Events::with_observer(move |e| kept.lock().unwrap().push(e.clone()));
        let mut rx = events.subscribe();
        let clone = events.clone();
        events.emit(Event::Session(SessionEvent::Reconnected));
        clone.emit(Event::DirectorySynced {
            posts: 2,
            devices: 9,
        });
        let observed = seen.lock().unwrap().clone();
        assert_eq!(observed.len(), 2);
        assert_eq!(rx.try_recv().unwrap(), observed[0]);
        assert_eq!(rx.try_recv().unwrap(), observed[1]);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_slow_subscriber_is_told_what_it_missed_and_never_blocks_the_client() {
        let events = Events::default();
        let mut rx = events.subscribe();
        for _ in 0..SUBSCRIBER_BACKLOG + 10 {
            events.emit(Event::Session(SessionEvent::Reconnected));
        }
        match rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag of 10, got {other:?}"),
        }
    }
}
