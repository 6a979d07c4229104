//! Coalescing the herd: concurrent hold requests for one seat share one Redis
//! call in this gateway.
//!
//! The first request for a seat (the leader) runs the script; requests for the
//! same seat that arrive while it is in flight (waiters) wait for its outcome.
//! Only outcomes that hold for anyone are shared: the seat was taken (by the
//! leader or before it), or the event or seat does not exist. Each was true at
//! the instant the leader's script ran. For a waiter that arrived before that
//! instant the answer is exact; one that arrived while the reply was on its way
//! back gets an answer at most one Redis round-trip old (bounded by
//! HERDGATE_REDIS_TIMEOUT; well under a millisecond on a local Redis), and only
//! ever a 409 or 404, never a 201. Nothing is kept once the leader is done. Any other
//! outcome (the leader's own limit, an error) sends the waiters to Redis
//! themselves, and so does a seat the leader took for a waiter's own user: the
//! seat is theirs, which Redis answers (see `place_hold.lua`), not "taken".
//! Requests with an Idempotency-Key never wait: their answer is their own.

use std::{collections::HashMap, sync::Mutex};

use tokio::sync::watch;

/// What a leader's call means for everyone else asking for the same seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    Taken,
    /// The leader took the seat for this user: taken for everyone else.
    TakenBy(i64),
    NoEvent,
    NoSeat,
    /// Nothing to share: ask Redis yourself.
    AskAgain,
}

type Seat = (i64, i64);

#[derive(Default)]
pub struct Coalescer {
    in_flight: Mutex<HashMap<Seat, watch::Receiver<Option<Shared>>>>,
}

/// Held by the leader; dropping it without [`Leader::finish`] (the request was
/// cancelled) releases the waiters with [`Shared::AskAgain`].
pub struct Leader<'a> {
    coalescer: &'a Coalescer,
    seat: Seat,
    sender: watch::Sender<Option<Shared>>,
}

pub enum Turn<'a> {
    Lead(Leader<'a>),
    /// Another request's outcome for this seat.
    Follow(Shared),
}

impl Coalescer {
    /// Leads the call for `seat`, or waits for the one in flight.
    pub async fn join(&self, event_id: i64, seat_id: i64) -> Turn<'_> {
        let seat = (event_id, seat_id);
        let mut receiver = {
            let mut in_flight = self.in_flight.lock().expect("coalescer lock");
            match in_flight.get(&seat) {
                Some(receiver) => receiver.clone(),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    in_flight.insert(seat, receiver);
                    return Turn::Lead(Leader {
                        coalescer: self,
                        seat,
                        sender,
                    });
                }
            }
        };
        match receiver.wait_for(Option::is_some).await {
            Ok(shared) => Turn::Follow(shared.expect("waited for Some")),
            Err(_) => Turn::Follow(Shared::AskAgain),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.in_flight.lock().unwrap().len()
    }
}

impl Leader<'_> {
    pub fn finish(self, shared: Shared) {
        // Leave the map first: a request arriving from now on asks Redis anew.
        self.coalescer
            .in_flight
            .lock()
            .expect("coalescer lock")
            .remove(&self.seat);
        let _ = self.sender.send(Some(shared));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.coalescer.in_flight.lock().expect("coalescer lock");
        // Only our own entry: after finish() a new leader may own the seat.
        if in_flight
            .get(&self.seat)
            .is_some_and(|r| r.same_channel(&self.sender.subscribe()))
        {
            in_flight.remove(&self.seat);
        }
        // Dropping the sender wakes the waiters with an error: AskAgain.
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    #[tokio::test]
    async fn waiters_get_the_leaders_shared_outcome() {
        let coalescer = Arc::new(Coalescer::default());
        let Turn::Lead(leader) = coalescer.join(1, 7).await else {
            panic!("the first request leads");
        };
        let waiters: Vec<_> = (0..10)
            .map(|_| {
                let c = coalescer.clone();
                tokio::spawn(async move {
                    match c.join(1, 7).await {
                        Turn::Follow(shared) => shared,
                        Turn::Lead(_) => panic!("a second leader while one is in flight"),
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.finish(Shared::Taken);
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap(), Shared::Taken);
        }
        assert_eq!(coalescer.len(), 0);
        assert!(matches!(coalescer.join(1, 7).await, Turn::Lead(_)));
    }

    #[tokio::test]
    async fn other_seats_do_not_wait() {
        let coalescer = Coalescer::default();
        let _seven = coalescer.join(1, 7).await;
        assert!(matches!(coalescer.join(1, 8).await, Turn::Lead(_)));
        assert!(matches!(coalescer.join(2, 7).await, Turn::Lead(_)));
    }

    #[tokio::test]
    async fn a_cancelled_leader_sends_its_waiters_to_redis() {
        let coalescer = Arc::new(Coalescer::default());
        let leader = coalescer.join(1, 7).await;
        let waiter = {
            let c = coalescer.clone();
            tokio::spawn(async move {
                match c.join(1, 7).await {
                    Turn::Follow(shared) => shared,
                    Turn::Lead(_) => panic!("joined after the leader left"),
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(leader);
        assert_eq!(waiter.await.unwrap(), Shared::AskAgain);
        assert_eq!(coalescer.len(), 0);
    }
}
