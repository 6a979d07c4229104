#!/usr/bin/env bash
# How long the sweeper takes when many holds fall due at once: places HOLDS
# holds with a short TTL (as fast as wrk can), then times from the moment the
# last of them is due until Redis has released them all and PostgreSQL shows
# them all EXPIRED. Uses its own database, Redis prefix and RabbitMQ names.
#
#   load-testing/bench-sweeper.sh            # 10,000 holds
set -euo pipefail
cd "$(dirname "$0")/.."

HOLDS=${HOLDS:-10000}
TTL=${TTL:-15}
PORT=${PORT:-18183}

# shellcheck source=scripts/services.sh
source scripts/services.sh
# shellcheck source=load-testing/bench-lib.sh
source load-testing/bench-lib.sh
ensure_services
ensure_wrk
cargo build --release --bin herdgate
bin=target/release/herdgate

db=herdgate_bench_sweeper
export DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/$db
export HERDGATE_REDIS_PREFIX=benchsweep: HERDGATE_AMQP_PREFIX=benchsweep
export HERDGATE_ADDR=127.0.0.1:$PORT RUST_LOG=${RUST_LOG:-warn}
export HERDGATE_HOLD_TTL=${TTL}s HERDGATE_MAX_HOLDS_PER_USER=1000000
work=$(mktemp -d)
pid=

cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    remove_bench_resources "$db" benchsweep: benchsweep
    rm -rf "$work"
}
trap cleanup EXIT

$bin migrate >/dev/null
$bin seed --seats $((HOLDS * 2)) --users 1000 >/dev/null
$bin token --user 2 --count 1000 >"$work/tokens.txt"
$bin serve &
pid=$!
wait_for_herdgate "http://127.0.0.1:$PORT"

holds='benchsweep:{e:1}:holds'
# wrk cannot stop at a count: run until HOLDS holds exist, then stop it.
MODE=distinct FIRST_SEAT=1 TOKENS=$work/tokens.txt THREADS=2 \
    wrk -t2 -c64 -d60s -s load-testing/holds.lua "http://127.0.0.1:$PORT" >/dev/null &
wrk_pid=$!
while (($(redis-cli zcard "$holds") < HOLDS)); do sleep 0.01; done
kill "$wrk_pid"; wait "$wrk_pid" 2>/dev/null || true
placed=$(redis-cli zcard "$holds")
last_due_ms=$(redis-cli zrange "$holds" -1 -1 withscores | tail -1)
first_due_ms=$(redis-cli zrange "$holds" 0 0 withscores | tail -1)
echo "placed $placed holds, due over $(((last_due_ms - first_due_ms)))ms"

now_ms() { date +%s%3N; }
while (($(redis-cli zcard "$holds") > 0)); do sleep 0.01; done
released_ms=$(now_ms)
while (($(psql -qtAX "$DATABASE_URL" -c "SELECT count(*) FROM bookings WHERE status = 'EXPIRED'") < placed)); do
    sleep 0.05
done
stored_ms=$(now_ms)
available=$(redis-cli zcard 'benchsweep:{e:1}:available')
echo "all $placed released in Redis $((released_ms - last_due_ms)) ms after the last was due"
echo "all $placed EXPIRED in PostgreSQL $((stored_ms - last_due_ms)) ms after the last was due"
echo "available seats in Redis afterwards: $available of $((HOLDS * 2))"
