//! One buyer's way through the waiting room, and the crowd of them: what they
//! share (the seats handed out, the counts, the places read for the draw).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::Buyers;
use crate::{
    client::{Answered, Conn, Target},
    plan::{Call, booking_id},
    run::user_of,
    stats::Recorder,
    users::Tokens,
};

/// A walker in line leaves this long after joining, give or take.
const WALK_AFTER_SECS: std::ops::Range<f64> = 5.0..30.0;
const CONNECT_ATTEMPTS: u32 = 3;

/// What a buyer means to do.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Intent {
    Book,
    /// Stops visiting this long after joining, unless admitted before.
    WalkInLine(Duration),
    /// Admitted, leaves without booking.
    WalkAdmitted,
}

/// How the buyers fared, counted as they go.
#[derive(Debug, Default)]
struct Counts {
    joined: AtomicU64,
    admitted: AtomicU64,
    booked: AtomicU64,
    confirmed: AtomicU64,
    walked_in_line: AtomicU64,
    walked_admitted: AtomicU64,
    lost: AtomicU64,
    no_seat: AtomicU64,
    refused: AtomicU64,
}

/// The counts, as reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Journeys {
    pub joined: u64,
    /// Buyers who saw themselves admitted (once each, however often).
    pub admitted: u64,
    pub booked: u64,
    pub confirmed: u64,
    pub walked_in_line: u64,
    pub walked_admitted: u64,
    /// Looks that found the buyer's place gone (it joined again, at the back).
    pub lost: u64,
    /// Admitted buyers who found no seat left to hold.
    pub no_seat: u64,
    /// Buyers stopped by an answer they could not act on.
    pub refused: u64,
}

/// A join's or look's answer, as far as a buyer cares.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct View {
    status: String,
    position: Option<u64>,
    poll_after_seconds: f64,
}

/// Every buyer of a run, and what they share.
pub struct Crowd {
    target: Target,
    event: i64,
    deadline: Duration,
    leave: f64,
    timeout: Duration,
    seats: Vec<i64>,
    next_seat: AtomicUsize,
    tokens: std::sync::Arc<Tokens>,
    recorder: std::sync::Arc<Recorder>,
    counts: Counts,
    /// While true, pre-queue buyers note their first place after the start.
    draw_open: AtomicBool,
    /// Buyers in the pre-queue who still wait for a place to note.
    unplaced: Mutex<HashSet<usize>>,
    /// Each pre-queue buyer's first place after the start.
    places: Mutex<HashMap<usize, u64>>,
    pre_queue: AtomicU64,
    /// Microseconds since the start: the last answer, the last 201.
    last_answer: AtomicU64,
    last_created: AtomicU64,
}

/// How a booking attempt ended.
enum Booked {
    Done,
    /// The admission ended before a seat was held: queue again.
    AdmissionEnded,
}

impl Crowd {
    pub fn new(buyers: &Buyers, check_draw: bool) -> Self {
        Crowd {
            target: buyers.target.clone(),
            event: buyers.event,
            deadline: buyers.deadline,
            leave: buyers.leave,
            timeout: buyers.timeout,
            seats: buyers.seats.clone(),
            next_seat: AtomicUsize::new(0),
            tokens: buyers.tokens.clone(),
            recorder: buyers.recorder.clone(),
            counts: Counts::default(),
            draw_open: AtomicBool::new(check_draw),
            unplaced: Mutex::new(HashSet::new()),
            places: Mutex::new(HashMap::new()),
            pre_queue: AtomicU64::new(0),
            last_answer: AtomicU64::new(0),
            last_created: AtomicU64::new(0),
        }
    }

    /// One buyer, from its arrival at `started + offset` to the deadline.
    pub async fn buyer(&self, index: usize, started: Instant, offset: Duration) {
        let end = started + self.deadline;
        tokio::time::sleep_until(started + offset).await;
        let mut rng = fastrand::Rng::with_seed(0x5ee1 ^ index as u64);
        let intent = match rng.f64() {
            roll if roll < self.leave / 2.0 => Intent::WalkInLine(Duration::from_secs_f64(
                WALK_AFTER_SECS.start + rng.f64() * (WALK_AFTER_SECS.end - WALK_AFTER_SECS.start),
            )),
            roll if roll < self.leave => Intent::WalkAdmitted,
            _ => Intent::Book,
        };
        let mut conn = None;
        let (mut joined, mut in_pre_queue) = (false, false);
        let mut joined_at = Instant::now();
        while Instant::now() < end {
            let call = match joined {
                true => Call::Look { user: index },
                false => Call::Join { user: index },
            };
            let Some(answer) = self.send(index, &mut conn, &call, started).await else {
                tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
                continue;
            };
            let wait = match answer.status {
                200 => {
                    let Ok(view) = serde_json::from_slice::<View>(&answer.body) else {
                        self.counts.refused.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    if !joined {
                        joined = true;
                        joined_at = Instant::now();
                        self.counts.joined.fetch_add(1, Ordering::Relaxed);
                    }
                    match view.status.as_str() {
                        "pre_queue" if !in_pre_queue => {
                            in_pre_queue = true;
                            self.pre_queue.fetch_add(1, Ordering::Relaxed);
                            self.unplaced.lock().unwrap().insert(index);
                        }
                        "queued" if in_pre_queue => self.note_place(index, view.position),
                        "admitted" => {
                            // Counted once per admission: it books, or leaves, at once.
                            self.counts.admitted.fetch_add(1, Ordering::Relaxed);
                            if intent == Intent::WalkAdmitted {
                                self.counts.walked_admitted.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                            match self.book(index, &mut conn, started, end).await {
                                Booked::Done => return,
                                Booked::AdmissionEnded => {
                                    joined = false;
                                    continue;
                                }
                            }
                        }
                        _ => {}
                    }
                    if let Intent::WalkInLine(after) = intent
                        && joined_at.elapsed() >= after
                    {
                        self.counts.walked_in_line.fetch_add(1, Ordering::Relaxed);
                        self.unplaced.lock().unwrap().remove(&index);
                        return;
                    }
                    Duration::from_secs_f64(view.poll_after_seconds)
                }
                // The place lapsed (a buyer who kept visiting should never see this).
                404 if joined => {
                    self.counts.lost.fetch_add(1, Ordering::Relaxed);
                    joined = false;
                    Duration::ZERO
                }
                // Not open yet.
                409 => Duration::from_secs(1),
                429 | 503 => Duration::from_secs(answer.retry_after.unwrap_or(1)),
                _ => {
                    self.counts.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            tokio::time::sleep(wait.min(end.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Admitted: holds the next seat free (another if taken), then confirms it.
    async fn book(
        &self,
        index: usize,
        conn: &mut Option<Conn>,
        started: Instant,
        end: Instant,
    ) -> Booked {
        let mut seat = None;
        while Instant::now() < end {
            let index_of_seat = match seat {
                Some(i) => i,
                None => self.next_seat.fetch_add(1, Ordering::Relaxed),
            };
            let Some(&seat_id) = self.seats.get(index_of_seat) else {
                self.counts.no_seat.fetch_add(1, Ordering::Relaxed);
                return Booked::Done;
            };
            seat = Some(index_of_seat);
            let call = Call::Hold {
                user: index,
                seat: seat_id,
            };
            let Some(answer) = self.send(index, conn, &call, started).await else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            match answer.status {
                200 | 201 => {
                    self.counts.booked.fetch_add(1, Ordering::Relaxed);
                    let Some(booking) = booking_id(&answer.body) else {
                        return Booked::Done;
                    };
                    let confirm = Call::Confirm {
                        user: index,
                        booking,
                    };
                    if let Some(a) = self.send(index, conn, &confirm, started).await
                        && a.status == 200
                    {
                        self.counts.confirmed.fetch_add(1, Ordering::Relaxed);
                    }
                    return Booked::Done;
                }
                409 => seat = None,
                403 => return Booked::AdmissionEnded,
                429 | 503 => {
                    tokio::time::sleep(Duration::from_secs(answer.retry_after.unwrap_or(1))).await
                }
                _ => {
                    self.counts.refused.fetch_add(1, Ordering::Relaxed);
                    return Booked::Done;
                }
            }
        }
        Booked::Done
    }

    /// Sends one call on the buyer's connection (opened again when the
    /// gateway closed it) and records the answer; `None` when none came.
    async fn send(
        &self,
        index: usize,
        conn: &mut Option<Conn>,
        call: &Call,
        started: Instant,
    ) -> Option<Answered> {
        if conn.as_ref().is_none_or(Conn::is_closed) {
            *conn = self.open().await;
        }
        let sent = Instant::now();
        let since = |t: Instant| (t - started).as_micros() as u64;
        let Some(open) = conn.as_mut() else {
            self.recorder.record(index, None, Duration::ZERO, None);
            return None;
        };
        let bearer = user_of(call).map(|u| self.tokens.bearer(u));
        let request = self.target.request(self.event, call, bearer);
        match tokio::time::timeout(self.timeout, open.exchange(request)).await {
            Ok(Ok(answer)) => {
                let done = Instant::now();
                let created = (answer.status == 201 && matches!(call, Call::Hold { .. }))
                    .then(|| booking_id(&answer.body))
                    .flatten();
                self.last_answer.fetch_max(since(done), Ordering::Relaxed);
                if created.is_some() {
                    self.last_created.fetch_max(since(done), Ordering::Relaxed);
                }
                self.recorder
                    .record(index, Some(answer.status), done - sent, created);
                Some(answer)
            }
            _ => {
                *conn = None;
                self.recorder.record(index, None, sent.elapsed(), None);
                None
            }
        }
    }

    async fn open(&self) -> Option<Conn> {
        for attempt in 0..CONNECT_ATTEMPTS {
            if let Ok(conn) = Conn::open(&self.target).await {
                return Some(conn);
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        None
    }

    fn note_place(&self, index: usize, position: Option<u64>) {
        if !self.draw_open.load(Ordering::Acquire) {
            return;
        }
        let Some(position) = position else { return };
        if self.unplaced.lock().unwrap().remove(&index) {
            self.places.lock().unwrap().insert(index, position);
        }
    }

    /// Every pre-queue buyer still waiting has noted its place.
    pub fn places_read(&self) -> bool {
        self.pre_queue.load(Ordering::Relaxed) > 0 && self.unplaced.lock().unwrap().is_empty()
    }

    /// Ends the noting (admission is about to move the places): how many
    /// joined the pre-queue, and each noted place by user id.
    pub fn close_draw(&self) -> (u64, Vec<(i64, u64)>) {
        self.draw_open.store(false, Ordering::Release);
        let places = self.places.lock().unwrap();
        let noted = places
            .iter()
            .map(|(&index, &position)| (self.tokens.user_id(index), position))
            .collect();
        (self.pre_queue.load(Ordering::Relaxed), noted)
    }

    pub fn journeys(&self) -> Journeys {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counts;
        Journeys {
            joined: n(&c.joined),
            admitted: n(&c.admitted),
            booked: n(&c.booked),
            confirmed: n(&c.confirmed),
            walked_in_line: n(&c.walked_in_line),
            walked_admitted: n(&c.walked_admitted),
            lost: n(&c.lost),
            no_seat: n(&c.no_seat),
            refused: n(&c.refused),
        }
    }

    pub fn last_answer(&self) -> Duration {
        Duration::from_micros(self.last_answer.load(Ordering::Relaxed))
    }

    pub fn last_created(&self) -> Option<Duration> {
        let micros = self.last_created.load(Ordering::Relaxed);
        (micros > 0).then(|| Duration::from_micros(micros))
    }
}
