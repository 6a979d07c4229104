//! The read side: events and their available seats.
//!
//! On-sale events are answered from Redis alone; events that are not on sale
//! (not loaded into Redis) from PostgreSQL. Both sit behind a [`Flight`] cache, so
//! a herd of identical reads costs one backend call per `ttl`, and the two caches
//! together hold at most HERDGATE_READ_CACHE_BYTES.

use std::{sync::Arc, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::{
    flight::{Flight, Weigh},
    holds::{Store, StoreError},
    status::EventStatus,
};

pub const DEFAULT_PAGE: u32 = 1_000;
pub const MAX_PAGE: u32 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    /// The failure of a fetch another request led (see [`Flight`]).
    #[error(transparent)]
    Shared(Arc<CatalogError>),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub id: i64,
    pub name: String,
    pub venue: String,
    pub starts_at: String,
    pub total_seats: u64,
    pub available_seats: u64,
    pub status: EventStatus,
}

impl EventView {
    pub fn on_sale(&self) -> bool {
        self.status == EventStatus::OnSale
    }
}

impl Weigh for Option<EventView> {
    fn weight(&self) -> usize {
        let text = self
            .as_ref()
            .map_or(0, |e| e.name.len() + e.venue.len() + e.starts_at.len());
        std::mem::size_of::<Self>() + text
    }
}

impl Weigh for Option<Bytes> {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.as_ref().map_or(0, Bytes::len)
    }
}

pub struct Catalog {
    store: Store,
    pg: deadpool_postgres::Pool,
    events: Flight<i64, Option<EventView>>,
    pages: Flight<(i64, i64, u32), Option<Bytes>>,
}

impl Catalog {
    /// Caches answers for `ttl`, in at most `max_bytes` (events get a sixteenth).
    pub fn new(store: Store, pg: deadpool_postgres::Pool, ttl: Duration, max_bytes: u64) -> Self {
        let events = (max_bytes / 16).max(1);
        Catalog {
            store,
            pg,
            events: Flight::new(ttl, events),
            pages: Flight::new(ttl, max_bytes.saturating_sub(events).max(1)),
        }
    }

    /// Bytes the read caches hold now.
    pub async fn cache_bytes(&self) -> u64 {
        self.events.weighted_size().await + self.pages.weighted_size().await
    }

    /// The event, or `None` when no event has this id.
    pub async fn event(&self, id: i64) -> Result<Option<EventView>, CatalogError> {
        self.events
            .get_or_fetch(id, || async move {
                match self.store.read_event(id).await? {
                    Some(e) => Ok(Some(EventView {
                        id,
                        name: e.name,
                        venue: e.venue,
                        starts_at: e.starts_at,
                        total_seats: e.total_seats,
                        available_seats: e.available,
                        status: e.status,
                    })),
                    None => self.event_from_db(id).await,
                }
            })
            .await
            .map_err(CatalogError::Shared)
    }

    async fn event_from_db(&self, id: i64) -> Result<Option<EventView>, CatalogError> {
        let client = self.pg.get().await?;
        let row = client
            .query_opt(
                "SELECT e.name, e.venue, e.starts_at, e.status,
                        count(s.id) AS total,
                        count(s.id) FILTER (WHERE s.status = 'AVAILABLE') AS available
                   FROM events e LEFT JOIN seats s ON s.event_id = e.id
                  WHERE e.id = $1 GROUP BY e.id",
                &[&id],
            )
            .await?;
        Ok(row.map(|row| EventView {
            id,
            name: row.get("name"),
            venue: row.get("venue"),
            starts_at: row
                .get::<_, DateTime<Utc>>("starts_at")
                .to_rfc3339_opts(SecondsFormat::Secs, true),
            total_seats: row.get::<_, i64>("total") as u64,
            available_seats: row.get::<_, i64>("available") as u64,
            status: row.get("status"),
        }))
    }

    /// One page of available seats as a finished JSON body, or `None` when the
    /// event is unknown or not on sale. Never touches PostgreSQL.
    pub async fn available_seats(
        &self,
        event_id: i64,
        after: i64,
        limit: u32,
    ) -> Result<Option<Bytes>, CatalogError> {
        self.pages
            .get_or_fetch((event_id, after, limit), || async move {
                let page = self.store.list_available(event_id, after, limit).await?;
                Ok(page.map(|page| {
                    let next = page.last_id.filter(|_| page.seats.len() == limit as usize);
                    render_page(event_id, page.count, &page.seats, next)
                }))
            })
            .await
            .map_err(CatalogError::Shared)
    }
}

/// `{"eventId","count","seats":[...],"nextAfter"}`, joined from the seat JSON Redis holds.
fn render_page(event_id: i64, count: u64, seats: &[Bytes], next_after: Option<i64>) -> Bytes {
    let size = seats.iter().map(|s| s.len() + 1).sum::<usize>() + 96;
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(format!(r#"{{"eventId":{event_id},"count":{count},"seats":["#).as_bytes());
    for (i, seat) in seats.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(seat);
    }
    let next = next_after.map_or("null".to_string(), |id| id.to_string());
    out.put_slice(format!(r#"],"nextAfter":{next}}}"#).as_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_renders_as_valid_json() {
        let seats = [
            Bytes::from_static(br#"{"id":1,"section":"A","row":"B","number":1}"#),
            Bytes::from_static(br#"{"id":2,"section":"A","row":"B","number":2}"#),
        ];
        let body: serde_json::Value =
            serde_json::from_slice(&render_page(7, 40, &seats, Some(2))).unwrap();
        assert_eq!(body["eventId"], 7);
        assert_eq!(body["count"], 40);
        assert_eq!(body["seats"][1]["number"], 2);
        assert_eq!(body["nextAfter"], 2);
        let empty: serde_json::Value =
            serde_json::from_slice(&render_page(7, 0, &[], None)).unwrap();
        assert_eq!(empty["seats"].as_array().unwrap().len(), 0);
        assert!(empty["nextAfter"].is_null());
    }
}
