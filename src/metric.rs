//! Metrics: the name of every metric herdgate records, so dashboards and code
//! agree on one list, and the recorder. `GET /metrics` renders them in
//! Prometheus's text format.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by `route` and `status`.
pub const HTTP_REQUESTS: &str = "herdgate_http_requests_total";
/// Time to answer, by `route` (seconds).
pub const HTTP_DURATION: &str = "herdgate_http_request_duration_seconds";
/// Open client connections.
pub const HTTP_CONNECTIONS: &str = "herdgate_http_connections_open";
/// Connections turned away with a 503 because HERDGATE_MAX_CONNECTIONS were open.
pub const HTTP_CONNECTIONS_REFUSED: &str = "herdgate_http_connections_refused_total";
/// Bytes held by the read cache (events and seat pages), as of the last scrape.
pub const READ_CACHE_BYTES: &str = "herdgate_read_cache_bytes";
/// Login attempts answered 429, by `scope` (account or client).
pub const LOGIN_LIMITED: &str = "herdgate_login_limited_total";
/// Waiting-room visits answered 429, by `scope` (user or client).
pub const ROOM_LIMITED: &str = "herdgate_waiting_room_limited_total";
/// Waiting-room visits that reached the script, by `kind` (join, look) and
/// `outcome`: admitted, queued, pre_queue, not_queued, not_open, no_room.
pub const ROOM_VISITS: &str = "herdgate_waiting_room_visits_total";
/// Buyers waiting in an event's room, by `event`, as the last visit here saw it.
pub const ROOM_QUEUED: &str = "herdgate_waiting_room_queued";
/// Hold requests by `outcome`: placed, replayed, own, taken, limited, busy,
/// not_found, mismatch, not_admitted, unavailable; and lifecycle changes: confirmed,
/// cancelled, expired.
pub const HOLDS: &str = "herdgate_holds_total";
/// Hold requests answered from another request's script call for the same seat.
pub const HOLDS_COALESCED: &str = "herdgate_holds_coalesced_total";
/// Redis script round-trips, by `script` (seconds).
pub const SCRIPT_DURATION: &str = "herdgate_redis_script_duration_seconds";
/// Hold events in an event's outbox, by `event`: not yet relayed, or relayed
/// and not yet in PostgreSQL.
pub const OUTBOX_DEPTH: &str = "herdgate_outbox_depth";
/// Hold events the relay published and RabbitMQ confirmed.
pub const RELAY_CONFIRMED: &str = "herdgate_relay_confirmed_total";
/// Hold events RabbitMQ refused (nack); they are published again.
pub const RELAY_REFUSED: &str = "herdgate_relay_refused_total";
/// Hold events published again because, confirmed long ago, they never reached
/// PostgreSQL (their messages were lost with a deleted or purged writer queue).
pub const RELAY_RESENT: &str = "herdgate_relay_resent_total";
/// Outbox entries the writer failed to delete after its commit (Redis away);
/// they are published again later and applied as repeats.
pub const WRITER_OUTBOX_LEFT: &str = "herdgate_writer_outbox_left_total";
/// Hold events per writer transaction.
pub const WRITER_BATCH: &str = "herdgate_writer_batch_size";
/// Hold events the writer settled (applied, stale or dead-lettered) and acked.
pub const WRITER_EVENTS: &str = "herdgate_writer_events_total";
/// Bookings inserted or moved to a newer version.
pub const WRITER_ROWS: &str = "herdgate_writer_rows_applied_total";
/// From a change in Redis to its commit in PostgreSQL (seconds), per batch's oldest event.
pub const WRITER_LAG: &str = "herdgate_writer_lag_seconds";
/// Messages or hold events the writer can never apply, sent to the dead-letter queue.
pub const DEAD_LETTERED: &str = "herdgate_writer_dead_lettered_total";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const LAG_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once per process; later calls share it.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(SCRIPT_DURATION.into()), LATENCY_BUCKETS)
            })
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(WRITER_LAG.into()), LAG_BUCKETS))
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(WRITER_BATCH.into()), BATCH_BUCKETS)
            })
            .expect("bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (a test harness): then ours only renders.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
