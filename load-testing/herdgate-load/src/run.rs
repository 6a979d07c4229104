//! Drives a run: opens every connection, releases all workers at once (the
//! herd's barrier), hands out requests until the stop rule or the scenario says
//! enough, and prints progress while it goes.
//!
//! With `--rate` the schedule is fixed in advance (open loop): request `i` is
//! due at `start + i / rate`, and its latency counts from then, so a server that
//! stalls is charged for every request that waited, not just the one it held
//! up (coordinated omission).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Barrier, watch},
    task::JoinSet,
    time::Instant,
};

use super::{
    client::{Conn, Target},
    plan::{Call, Shared, Sizes, booking_id},
    report,
    stats::Recorder,
    users::Tokens,
};

/// Connections opened at once, so the server's accept backlog never overflows.
const CONNECTING_AT_ONCE: usize = 256;
const CONNECT_ATTEMPTS: u32 = 5;

/// What the run needs besides its plan.
pub struct Driver {
    pub target: Target,
    pub event: i64,
    pub sizes: Sizes,
    pub shared: Arc<Shared>,
    pub tokens: Arc<Tokens>,
    pub recorder: Arc<Recorder>,
    pub timeout: Duration,
}

/// When things happened, counted from the release.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub started: Instant,
    /// Until the last answer: how long the run took.
    pub last_answer: Duration,
    /// The last 201.
    pub last_created: Option<Duration>,
    pub connections: usize,
}

/// Hands out request slots: the stop rule, and each slot's due time.
struct Schedule {
    start: Instant,
    deadline: Instant,
    /// Open loop: requests due before the deadline are still sent this long after it,
    /// so a slow server is charged for its backlog instead of having it dropped.
    grace: Duration,
    requests: Option<u64>,
    interval: Option<Duration>,
    issued: AtomicU64,
}

impl Schedule {
    /// When the next request is due, or `None` when the run is over.
    fn take(&self) -> Option<Instant> {
        let i = self.issued.fetch_add(1, Ordering::Relaxed);
        if self.requests.is_some_and(|max| i >= max) {
            return None;
        }
        let due = match self.interval {
            Some(interval) => self.start + interval.mul_f64(i as f64),
            None => Instant::now(),
        };
        (due < self.deadline && Instant::now() < self.deadline + self.grace).then_some(due)
    }
}

impl Driver {
    pub async fn run(self: Arc<Self>) -> anyhow::Result<Timeline> {
        let connections = self.sizes.connections;
        let ready = Arc::new(Barrier::new(connections + 1));
        let (release, start) = watch::channel(None::<Arc<Schedule>>);
        let connecting = Arc::new(tokio::sync::Semaphore::new(CONNECTING_AT_ONCE));
        let marks = Arc::new(Marks::default());
        let mut workers = JoinSet::new();
        for worker in 0..connections {
            let (driver, ready, mut start) = (self.clone(), ready.clone(), start.clone());
            let (connecting, marks) = (connecting.clone(), marks.clone());
            workers.spawn(async move {
                let conn = {
                    let _turn = connecting.acquire().await;
                    open_with_retries(&driver.target).await
                };
                ready.wait().await;
                let Ok(schedule) = start.wait_for(Option::is_some).await.map(|s| s.clone()) else {
                    return Ok(());
                };
                let schedule = schedule.expect("waited for");
                driver.work(worker, conn?, &schedule, &marks).await;
                Ok::<_, std::io::Error>(())
            });
        }
        ready.wait().await;
        let started = Instant::now();
        let schedule = Arc::new(Schedule {
            start: started,
            deadline: started + self.sizes.stop.deadline,
            requests: self.sizes.stop.requests,
            grace: if self.sizes.rate.is_some() {
                self.timeout
            } else {
                Duration::ZERO
            },
            interval: self.sizes.rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            issued: AtomicU64::new(0),
        });
        release.send_replace(Some(schedule));
        let progress = tokio::spawn(report::progress(self.recorder.clone(), started));

        let mut refused = 0;
        let mut first_error = None;
        while let Some(result) = workers.join_next().await {
            if let Err(e) = result? {
                refused += 1;
                first_error.get_or_insert(e);
            }
        }
        progress.abort();
        report::end_progress();
        if let Some(e) = first_error {
            anyhow::ensure!(
                refused < connections,
                "could not connect to {}: {e}",
                self.target.addr
            );
            tracing::warn!(refused, error = %e, "some connections could not be opened");
        }
        let micros = |m: &AtomicU64| Duration::from_micros(m.load(Ordering::Relaxed));
        let last_created = marks.created.load(Ordering::Relaxed);
        Ok(Timeline {
            started,
            last_answer: micros(&marks.answer),
            last_created: (last_created > 0).then(|| Duration::from_micros(last_created)),
            connections: connections - refused,
        })
    }

    /// One worker: journey after journey on one connection until the run ends.
    async fn work(&self, worker: usize, mut conn: Conn, schedule: &Schedule, marks: &Marks) {
        let mut rng = fastrand::Rng::with_seed(0x4e7d ^ worker as u64);
        let open_loop = schedule.interval.is_some();
        'run: while let Some(mut journey) = self.shared.next_journey(&mut rng) {
            while let Some(call) = journey.next_call(&self.shared, &mut rng) {
                let Some(due) = schedule.take() else {
                    break 'run;
                };
                if open_loop {
                    tokio::time::sleep_until(due).await;
                }
                if conn.is_closed()
                    && let Ok(fresh) = open_with_retries(&self.target).await
                {
                    conn = fresh;
                }
                let bearer = user_of(&call).map(|u| self.tokens.bearer(u));
                let request = self.target.request(self.event, &call, bearer);
                let sent = Instant::now();
                let answer = tokio::time::timeout(self.timeout, conn.send(request)).await;
                let done = Instant::now();
                let (status, body) = match answer {
                    Ok(Ok((status, body))) => (Some(status), body),
                    // The connection is in an unknown state: replace it.
                    _ => {
                        match open_with_retries(&self.target).await {
                            Ok(fresh) => conn = fresh,
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                        (None, bytes::Bytes::new())
                    }
                };
                let created = (status == Some(201) && matches!(call, Call::Hold { .. }))
                    .then(|| booking_id(&body))
                    .flatten();
                let since = |t: Instant| (t - schedule.start).as_micros() as u64;
                marks.answer.fetch_max(since(done), Ordering::Relaxed);
                if created.is_some() {
                    marks.created.fetch_max(since(done), Ordering::Relaxed);
                }
                let latency = done - if open_loop { due } else { sent };
                self.recorder.record(worker, status, latency, created);
                journey.observe(&call, status, &body, &self.shared, &mut rng);
            }
        }
    }
}

/// Latest moments, in microseconds since the release.
#[derive(Default)]
struct Marks {
    answer: AtomicU64,
    created: AtomicU64,
}

pub fn user_of(call: &Call) -> Option<usize> {
    match call {
        Call::Hold { user, .. }
        | Call::Confirm { user, .. }
        | Call::Cancel { user, .. }
        | Call::Join { user }
        | Call::Look { user } => Some(*user),
        Call::Event | Call::Seats { .. } | Call::RoomStats | Call::ChangeRoom { .. } => None,
    }
}

async fn open_with_retries(target: &Target) -> std::io::Result<Conn> {
    let mut attempt = 0;
    loop {
        match Conn::open(target).await {
            Ok(conn) => return Ok(conn),
            Err(e) if attempt + 1 >= CONNECT_ATTEMPTS => return Err(e),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
        }
    }
}
