#!/usr/bin/env bash
# Benchmark of the read API with wrk: GET /api/events/1 and
# GET /api/seats/available?eventId=1 (a default page of 1,000 seats, and a page of 50),
# against a release herdgate on the 50,000-seat demo event. Uses its own database,
# Redis prefix and RabbitMQ names, and removes them afterwards.
#
#   load-testing/bench-reads.sh                    # 20 s per endpoint, 256 connections
#   DURATION=5 CONNECTIONS=64 load-testing/bench-reads.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-256}
THREADS=${THREADS:-2}
PORT=${PORT:-18182}

# shellcheck source=scripts/services.sh
source scripts/services.sh
# shellcheck source=load-testing/bench-lib.sh
source load-testing/bench-lib.sh
ensure_services
ensure_wrk
cargo build --release --bin herdgate
bin=target/release/herdgate

db=herdgate_bench_reads
export DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/$db
export HERDGATE_REDIS_PREFIX=benchreads: HERDGATE_AMQP_PREFIX=benchreads
export HERDGATE_ADDR=127.0.0.1:$PORT RUST_LOG=${RUST_LOG:-warn}
pid=

cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    remove_bench_resources "$db" benchreads: benchreads
}
trap cleanup EXIT

$bin migrate >/dev/null
$bin seed --users 0 >/dev/null
$bin serve &
pid=$!
wait_for_herdgate "http://127.0.0.1:$PORT"

printf '\nGET, %s connections, %s s each, wrk closed loop, %s cores\n' "$CONNECTIONS" "$DURATION" "$(nproc)"
printf '%-45s %10s %9s %9s %12s\n' path req/s p50 p99 bytes/answer
for path in /api/events/1 '/api/seats/available?eventId=1&limit=50' '/api/seats/available?eventId=1'; do
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION"s --latency "http://127.0.0.1:$PORT$path")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    bytes=$(curl -s "http://127.0.0.1:$PORT$path" | wc -c)
    non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out")
    printf '%-45s %10s %9s %9s %12s%s\n' "$path" "$rps" "$p50" "$p99" "$bytes" \
        "${non2xx:+  (non-2xx: $non2xx)}"
done
