//! Seat inventory: each on-sale event's seats, loaded from PostgreSQL into Redis.
//!
//! Redis can be emptied at any time and is rebuilt from PostgreSQL: at start and
//! then every `interval`, any on-sale event whose `event` key is missing is loaded
//! again. One process loads an event at a time (the `loading` key); the `event`
//! key is written last, so its presence means the inventory is complete.
//!
//! Between syncs, the gateway remembers which events PostgreSQL had on sale. A
//! request that finds such an event missing from Redis (Redis lost its data, or
//! the event was just put on sale) is told to try again shortly, and nudges the
//! loader to sync at once: however many requests nudge, a gateway syncs at most
//! once per [`NUDGE_GAP`], so a herd never reaches PostgreSQL.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    holds::{EventEntry, RoomSettings, RoomWrite, RoomWritten, SeatEntry, Store},
    status::{EventStatus, SeatStatus},
    waiting_room::settings,
};

mod restore;

/// A rebuilt counter starts this far past PostgreSQL's highest `seq`: events
/// Redis made before it lost its data may still be on their way to the writer,
/// and new holds must be ordered after them, not reuse their numbers.
const SEQ_GAP: i64 = 1_000_000_000;
/// Every this many syncs, every event's status is read from Redis, not only the
/// events whose status moved in PostgreSQL (a key lost in Redis is found then).
const FULL_SYNC_EVERY: u32 = 12;
/// A loader that died keeps others out for at most this long.
const LOADING_LOCK: Duration = Duration::from_secs(120);
/// Nudged syncs (see [`Inventory::awaits_load`]) start at least this far apart,
/// whatever the number of requests that nudge.
pub const NUDGE_GAP: Duration = Duration::from_millis(250);

/// An event that takes bookings now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnSaleEvent {
    pub id: i64,
    pub name: String,
}

pub struct Inventory {
    store: Store,
    pg: deadpool_postgres::Pool,
    /// Sorted by id.
    on_sale: RwLock<Arc<Vec<OnSaleEvent>>>,
    seen: Mutex<Seen>,
    /// Wakes the loader before its interval: an on-sale event was missing from Redis.
    nudge: Notify,
    /// The next sync looks at every event in Redis, not only those whose status moved.
    full_next: AtomicBool,
    /// Events this process rebuilt lately: when, and how many catch-ups ran
    /// (see [`restore::CATCH_UP_AT`]).
    rebuilt: Mutex<HashMap<i64, (Instant, usize)>>,
}

/// What the last syncs saw, so a quiet catalogue is not read again from Redis
/// on every round.
#[derive(Default)]
struct Seen {
    rounds: u32,
    /// Each event's status in PostgreSQL at the last sync that went through.
    statuses: HashMap<i64, EventStatus>,
    /// The waiting rooms in PostgreSQL at the last sync, by event.
    rooms: HashMap<i64, RoomSettings>,
}

impl Inventory {
    pub fn new(store: Store, pg: deadpool_postgres::Pool) -> Self {
        Inventory {
            store,
            pg,
            on_sale: RwLock::new(Arc::new(Vec::new())),
            seen: Mutex::new(Seen::default()),
            nudge: Notify::new(),
            full_next: AtomicBool::new(false),
            rebuilt: Mutex::new(HashMap::new()),
        }
    }

    /// Leading zero bits a join to the event's waiting room must prove, as of
    /// the last sync (0: none asked, or no room).
    pub fn proof_bits(&self, event_id: i64) -> u8 {
        let seen = self.seen.lock().expect("inventory lock");
        seen.rooms.get(&event_id).map_or(0, |room| room.proof_bits)
    }

    /// Whether PostgreSQL had `event_id` on sale at the last sync.
    pub fn was_on_sale(&self, event_id: i64) -> bool {
        self.on_sale()
            .binary_search_by_key(&event_id, |e| e.id)
            .is_ok()
    }

    /// Called when Redis does not have `event_id` (or not on sale): true when
    /// PostgreSQL had it on sale at the last sync, so the answer is "try again
    /// shortly", not "unknown". Then the loader is nudged to sync now; many
    /// nudges between two syncs make one sync.
    pub fn awaits_load(&self, event_id: i64) -> bool {
        let on_sale = self.was_on_sale(event_id);
        if on_sale {
            self.full_next.store(true, Ordering::Relaxed);
            self.nudge.notify_one();
        }
        on_sale
    }

    /// The on-sale events as of the last sync.
    pub fn on_sale(&self) -> Arc<Vec<OnSaleEvent>> {
        self.on_sale.read().expect("on-sale lock").clone()
    }

    /// Reads the events from PostgreSQL, loads the on-sale ones missing from
    /// Redis, and makes every loaded event's status follow PostgreSQL's, so an
    /// event taken off sale stops taking holds (and one put back resumes).
    /// Redis is asked, in one pipeline, for the status of the events whose status
    /// moved in PostgreSQL since the last sync, and written to only where it
    /// differs; every event is asked for every `FULL_SYNC_EVERY` syncs, and
    /// whenever Redis has fewer loaded events than PostgreSQL has on sale (it
    /// lost its data). A large, quiet catalogue costs one query and one `SCARD`.
    pub async fn sync(&self) -> anyhow::Result<()> {
        let client = self
            .pg
            .get()
            .await
            .context("failed to get a PostgreSQL connection")?;
        let rows = client
            .query(
                "SELECT id, name, venue, starts_at, status FROM events ORDER BY id",
                &[],
            )
            .await
            .context("failed to list events")?;
        drop(client);
        let rows: Vec<EventRow> = rows
            .iter()
            .map(|row| EventRow {
                id: row.get("id"),
                name: row.get("name"),
                venue: row.get("venue"),
                starts_at: row.get("starts_at"),
                status: row.get("status"),
            })
            .collect();
        let statuses: HashMap<i64, EventStatus> =
            rows.iter().map(|event| (event.id, event.status)).collect();
        // First: from now on, a request for an event PostgreSQL just took off sale
        // is 404, and one for an event just put on sale is 503 until it is loaded.
        let events: Vec<OnSaleEvent> = rows
            .iter()
            .filter(|event| event.status == EventStatus::OnSale)
            .map(|event| OnSaleEvent {
                id: event.id,
                name: event.name.clone(),
            })
            .collect();
        let on_sale = events.len();
        *self.on_sale.write().expect("on-sale lock") = Arc::new(events);
        let (round, previous) = {
            let mut seen = self.seen.lock().expect("inventory lock");
            seen.rounds += 1;
            (seen.rounds - 1, std::mem::take(&mut seen.statuses))
        };
        let full = round % FULL_SYNC_EVERY == 0
            // A request found an on-sale event missing from Redis.
            || self.full_next.swap(false, Ordering::Relaxed)
            // Fewer loaded events than on sale: Redis lost data, or an event is new.
            || (self.store.loaded_event_count().await? as usize) < on_sale;
        // Only events whose status moved since the last sync need a look in Redis,
        // unless this is a full round.
        let moved: Vec<&EventRow> = rows
            .iter()
            .filter(|event| full || previous.get(&event.id) != Some(&event.status))
            .collect();
        let ids: Vec<i64> = moved.iter().map(|event| event.id).collect();
        let loaded = self.store.event_statuses(&ids).await?;
        // One query for every room, whatever is loaded below.
        let rooms = self.waiting_rooms().await?;
        for (event, in_redis) in moved.into_iter().zip(loaded) {
            let changed = match in_redis {
                None if event.status == EventStatus::OnSale => {
                    self.ensure_loaded(event, rooms.get(&event.id))
                        .await
                        .with_context(|| format!("failed to load event {} into Redis", event.id))?;
                    false
                }
                Some(status) if status != event.status => {
                    if event.status == EventStatus::OnSale {
                        // Before it takes holds again, as when it was loaded.
                        self.store.watch_events(&[event.id]).await?;
                    }
                    self.store.set_event_status(event.id, event.status).await?
                }
                _ => false,
            };
            if changed {
                tracing::info!(
                    event_id = event.id,
                    status = event.status.as_str(),
                    "event status changed"
                );
            }
        }
        if full {
            self.watch_only_live_events(&statuses).await?;
        }
        self.sync_rooms(rooms).await?;
        // Only once every event has been seen through: a failed sync looks again.
        self.seen.lock().expect("inventory lock").statuses = statuses;
        Ok(())
    }

    /// Makes each loaded event's waiting room follow `waiting_rooms`: settings
    /// changed there (rate, maximum active, pause, times) reach Redis at the next
    /// sync and nobody loses a place; a room added to a loaded event starts
    /// admission, one removed ends it. Redis is written only for rooms that
    /// changed since the last sync, and never with settings older than its own
    /// (the operator API wrote newer ones since this sync read the table).
    async fn sync_rooms(&self, rooms: HashMap<i64, RoomSettings>) -> anyhow::Result<()> {
        let previous = self.seen.lock().expect("inventory lock").rooms.clone();
        for (&event_id, room) in &rooms {
            if previous.get(&event_id) != Some(room)
                && self.store.is_loaded(event_id).await?
                && self.store.set_room(event_id, room, RoomWrite::Load).await? == RoomWritten::Set
            {
                self.store
                    .require_admission(event_id, Some(room.idle_ms))
                    .await?;
                tracing::info!(
                    event_id,
                    rate = room.rate,
                    paused = room.paused,
                    "waiting room set"
                );
            }
        }
        for &event_id in previous.keys().filter(|id| !rooms.contains_key(id)) {
            self.store.require_admission(event_id, None).await?;
            tracing::info!(event_id, "waiting room removed: buyers need no admission");
        }
        self.seen.lock().expect("inventory lock").rooms = rooms;
        Ok(())
    }

    /// Keeps the `outboxes` set to the events with work: every event on sale
    /// (again, should another gateway have taken one out on a stale view), and
    /// of the others only those with entries to relay or holds to expire, so
    /// the relay's and sweeper's scans do not grow with every event ever sold.
    async fn watch_only_live_events(
        &self,
        statuses: &HashMap<i64, EventStatus>,
    ) -> anyhow::Result<()> {
        let on_sale: Vec<i64> = statuses
            .iter()
            .filter(|(_, status)| **status == EventStatus::OnSale)
            .map(|(&id, _)| id)
            .collect();
        self.store.watch_events(&on_sale).await?;
        let off_sale: Vec<i64> = self
            .store
            .loaded_events()
            .await?
            .into_iter()
            .filter(|id| statuses.get(id) != Some(&EventStatus::OnSale))
            .collect();
        let forgotten = self.store.forget_finished_events(&off_sale).await?;
        if !forgotten.is_empty() {
            tracing::info!(
                events = ?forgotten,
                "events off sale with nothing left to relay or expire are no longer watched"
            );
        }
        Ok(())
    }

    /// Syncs every `interval`, and when nudged (at most once per [`NUDGE_GAP`]),
    /// until `stop` is cancelled; failures are logged and retried.
    pub async fn run(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        tokio::spawn(self.clone().catch_up_loop(stop.clone()));
        let mut last = Instant::now();
        loop {
            let nudged = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => false,
                _ = self.nudge.notified() => true,
            };
            if nudged {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(NUDGE_GAP.saturating_sub(last.elapsed())) => {}
                }
                tracing::debug!("an on-sale event is missing from Redis: syncing now");
            }
            last = Instant::now();
            if let Err(e) = self.sync().await {
                tracing::warn!(error = format!("{e:#}"), "inventory sync failed");
            }
        }
    }

    /// Loads one event unless it is loaded already or another process is loading it.
    async fn ensure_loaded(
        &self,
        event: &EventRow,
        room: Option<&RoomSettings>,
    ) -> anyhow::Result<()> {
        if self.store.is_loaded(event.id).await? {
            return Ok(());
        }
        let token = uuid::Uuid::new_v4().to_string();
        if !self
            .store
            .lock_loading(event.id, &token, LOADING_LOCK)
            .await?
        {
            tracing::debug!(event_id = event.id, "another process is loading this event");
            return Ok(());
        }
        // Another process may have finished loading between our look and our lock:
        // loading over a live event would undo its holds.
        if self.store.is_loaded(event.id).await? {
            self.store.unlock_loading(event.id, &token).await?;
            return Ok(());
        }
        let started = Instant::now();
        let result = self.load(event, room).await;
        self.store.unlock_loading(event.id, &token).await?;
        let available = result?;
        self.rebuilt
            .lock()
            .expect("inventory lock")
            .insert(event.id, (Instant::now(), 0));
        tracing::info!(
            event_id = event.id,
            available,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded event inventory into Redis"
        );
        Ok(())
    }

    async fn load(&self, event: &EventRow, room: Option<&RoomSettings>) -> anyhow::Result<usize> {
        let client = self.pg.get().await?;
        let rows = client
            .query(
                "SELECT id, section, row_label, number, status FROM seats
                  WHERE event_id = $1 ORDER BY id",
                &[&event.id],
            )
            .await?;
        drop(client);
        let seats: Vec<SeatEntry> = rows
            .iter()
            .map(|row| SeatEntry {
                id: row.get("id"),
                section: row.get("section"),
                row: row.get("row_label"),
                number: row.get("number"),
                available: row.get::<_, SeatStatus>("status") == SeatStatus::Available,
            })
            .collect();
        // Leftovers of a loader that died half-way.
        self.store.clear_seats(event.id).await?;
        self.store.add_seats(event.id, &seats).await?;
        self.restore_holds(event.id).await?;
        // Before the event hash: from then on its buyers need admission.
        if let Some(room) = room {
            self.store.set_room(event.id, room, RoomWrite::Load).await?;
        }
        let entry = EventEntry {
            name: &event.name,
            venue: &event.venue,
            starts_at: event.starts_at,
            total_seats: seats.len(),
            status: event.status,
            admission_idle_ms: room.map(|room| room.idle_ms),
        };
        self.store.complete_load(event.id, &entry).await?;
        Ok(seats.iter().filter(|seat| seat.available).count())
    }
}

impl Inventory {
    /// Every waiting room PostgreSQL has, by event.
    async fn waiting_rooms(&self) -> anyhow::Result<HashMap<i64, RoomSettings>> {
        let client = self.pg.get().await?;
        settings::all(&client)
            .await
            .context("failed to read the waiting rooms")
    }
}

struct EventRow {
    id: i64,
    name: String,
    venue: String,
    starts_at: DateTime<Utc>,
    status: EventStatus,
}
