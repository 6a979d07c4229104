//! Metrics: the name of every metric herdgate records, so dashboards and code
//! agree on one list, and the recorder. `GET /metrics` renders them in
//! Prometheus's text format, followed by the process's own CPU time and
//! memory ([`render`]), on every kind of process: the gateway on its API, a
//! writer-only process on its metrics listener (`http::metrics_only`).

use std::{fmt::Write, sync::OnceLock};

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
/// not_found, mismatch, not_admitted, unavailable, unreplicated; and lifecycle changes: confirmed,
/// cancelled, expired.
pub const HOLDS: &str = "herdgate_holds_total";
/// Hold requests answered from another request's script call for the same seat.
pub const HOLDS_COALESCED: &str = "herdgate_holds_coalesced_total";
/// Redis script round-trips, by `script` (seconds).
pub const SCRIPT_DURATION: &str = "herdgate_redis_script_duration_seconds";
/// Replication barriers (`WAIT` after a write, see `holds::replication`), by
/// `outcome`: replicated, short (too few replicas in time), failed.
pub const REPLICATION_BARRIERS: &str = "herdgate_redis_replication_barriers_total";
/// Time a replication barrier took, its write and its `WAIT` (seconds).
pub const REPLICATION_WAIT: &str = "herdgate_redis_replication_wait_seconds";
/// Changes (holds, confirms, cancels) one replication barrier covered.
pub const REPLICATION_COVERED: &str = "herdgate_redis_replication_covered";
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

/// CPU time the process has used, user and system (seconds), read at each scrape.
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
/// The process's resident memory (bytes), read at each scrape.
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";

/// The kernel's clock ticks per second in /proc/<pid>/stat (`USER_HZ`): 100 on
/// every Linux architecture herdgate builds for.
const USER_HZ: f64 = 100.0;

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
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(REPLICATION_WAIT.into()), LATENCY_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(REPLICATION_COVERED.into()), BATCH_BUCKETS)
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

/// Every recorded metric, then the process metrics (the same names and
/// meaning as the Prometheus client libraries' `process_*`, so dashboards
/// built for those work unchanged).
pub fn render(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    if let Some(cpu) = cpu_seconds() {
        let _ = write!(
            text,
            "# HELP {PROCESS_CPU} Total user and system CPU time spent in seconds.\n\
             # TYPE {PROCESS_CPU} counter\n{PROCESS_CPU} {cpu}\n"
        );
    }
    if let Some(rss) = resident_bytes() {
        let _ = write!(
            text,
            "# HELP {PROCESS_RSS} Resident memory size in bytes.\n\
             # TYPE {PROCESS_RSS} gauge\n{PROCESS_RSS} {rss}\n"
        );
    }
    text
}

/// utime + stime of /proc/self/stat (fields 14 and 15), in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // Field 3 (the state) is fields[0].
    Some((ticks(11)? + ticks(12)?) as f64 / USER_HZ)
}

/// VmRSS of /proc/self/status, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_metrics_follow_the_recorded_ones() {
        let text = render(install());
        let value = |name: &str| -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing from {text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(
            value(PROCESS_RSS) > 1_000_000.0,
            "a test binary uses over 1 MB"
        );
        assert!(value(PROCESS_CPU) >= 0.0);
        assert!(text.contains(&format!("# TYPE {PROCESS_CPU} counter")));
    }
}
