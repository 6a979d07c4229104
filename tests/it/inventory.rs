//! The Redis inventory is rebuilt from PostgreSQL, and only when it is missing.

use fred::interfaces::{KeysInterface, SortedSetsInterface};
use herdgate::holds::Keys;

use crate::helpers::{DEMO_SEATS, spawn_app};

#[tokio::test]
async fn the_inventory_is_rebuilt_after_redis_is_emptied() {
    let app = spawn_app().await;
    app.iso.flush_redis().await;
    app.wait_until(|| async {
        let response = app.get("/api/seats/available?eventId=1&limit=1").await;
        if response.status() != 200 {
            return false;
        }
        let page: serde_json::Value = response.json().await.unwrap();
        page["count"] == DEMO_SEATS
    })
    .await;
    let redis = app.iso.redis().await;
    let keys = Keys::new(app.iso.prefix.clone()).event(1);
    let available: u64 = redis.zcard(keys.available()).await.unwrap();
    assert_eq!(available, DEMO_SEATS as u64);
    // Loading ended: nobody holds the loading lock.
    assert_eq!(redis.exists::<u32, _>(keys.loading()).await.unwrap(), 0);
}

#[tokio::test]
async fn a_loaded_event_is_never_loaded_over() {
    let app = spawn_app().await;
    let redis = app.iso.redis().await;
    let keys = Keys::new(app.iso.prefix.clone()).event(3);
    // Stands in for a hold: the seat is gone from Redis but not from PostgreSQL.
    let taken: Vec<i64> = redis
        .zrange(keys.available(), 0, 0, None, false, None, false)
        .await
        .unwrap();
    redis
        .zrem::<(), _, _>(keys.available(), taken[0])
        .await
        .unwrap();
    let interval = app.config.inventory_interval;
    tokio::time::sleep(interval * 3).await;
    let still_gone: Option<f64> = redis.zscore(keys.available(), taken[0]).await.unwrap();
    assert_eq!(still_gone, None);
}
