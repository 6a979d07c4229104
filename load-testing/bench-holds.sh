#!/usr/bin/env bash
# Benchmark of POST /api/bookings, in one run on this machine, against the HTTP
# ceiling (examples/ceiling.rs: the same hyper server answering a fixed 201).
#
#   load-testing/bench-holds.sh            # full run (about 3 minutes)
#   DURATION=10 DISTINCT_DURATION=20 load-testing/bench-holds.sh
#
# Runs, each with wrk (closed loop) at CONNECTIONS connections:
#   ceiling   fixed 201, no work                       -> the HTTP ceiling
#   herd      every request on one of HERD_SEATS seats -> almost all 409
#   distinct  every request on a new seat              -> all 201
# then waits for the writer to put every 201 into PostgreSQL and reports the
# lag after the last 201 and the writer's rate. Uses its own database, Redis
# prefix and RabbitMQ names, and removes them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
DISTINCT_DURATION=${DISTINCT_DURATION:-60}
CONNECTIONS=${CONNECTIONS:-256}
THREADS=${THREADS:-2}
HERD_SEATS=${HERD_SEATS:-4}
SEATS=${SEATS:-1000000}
USERS=${USERS:-20000}
BENCH_PORT=${BENCH_PORT:-18180}
CEILING_PORT=${CEILING_PORT:-18181}

# shellcheck source=scripts/services.sh
source scripts/services.sh
# shellcheck source=load-testing/bench-lib.sh
source load-testing/bench-lib.sh
ensure_services
ensure_wrk

cargo build --release --bin herdgate --example ceiling
bin=target/release/herdgate

db=herdgate_bench
export DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/$db
export HERDGATE_REDIS_PREFIX=bench: HERDGATE_AMQP_PREFIX=bench
export HERDGATE_ADDR=127.0.0.1:$BENCH_PORT
export HERDGATE_MAX_HOLDS_PER_USER=1000000 HERDGATE_OUTBOX_MAX=10000000
export RUST_LOG=${RUST_LOG:-warn}
work=$(mktemp -d)
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    remove_bench_resources "$db" bench: bench
    rm -rf "$work"
}
trap cleanup EXIT

# Leftovers of an interrupted run.
remove_bench_resources "$db" bench: bench
$bin migrate >/dev/null
$bin seed --seats "$SEATS" --users "$USERS"
$bin token --user 2 --count "$USERS" >"$work/tokens.txt"

# wrk prints "RESULT {...}" from load-testing/holds.lua; keep that JSON.
run_wrk() { # name port duration mode first_seat
    local out
    out=$(MODE=$4 FIRST_SEAT=$5 SEATS=$HERD_SEATS TOKENS=$work/tokens.txt THREADS=$THREADS \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3"s --timeout 10s -s load-testing/holds.lua \
        "http://127.0.0.1:$2")
    grep '^RESULT ' <<<"$out" | sed 's/^RESULT //' >"$work/$1.json"
    echo "$1: $(cat "$work/$1.json")"
}
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/$1.json" "$2"; }
wait_http() {
    for _ in $(seq 1 600); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "no answer from $1" >&2; return 1
}

echo "== ceiling"
target/release/examples/ceiling "127.0.0.1:$CEILING_PORT" 2>/dev/null &
pids+=($!)
sleep 0.5
run_wrk ceiling "$CEILING_PORT" "$DURATION" herd 1
kill "${pids[-1]}"

echo "== herdgate serve (loading $SEATS seats into Redis)"
$bin serve &
pids+=($!)
wait_http "http://127.0.0.1:$BENCH_PORT/readyz"
wait_http "http://127.0.0.1:$BENCH_PORT/api/seats/available?eventId=1&limit=1"

echo "== herd: $CONNECTIONS connections on $HERD_SEATS seats"
run_wrk herd "$BENCH_PORT" "$DURATION" herd 1

echo "== distinct: $CONNECTIONS connections, a new seat per request"
run_wrk distinct "$BENCH_PORT" "$DISTINCT_DURATION" distinct $((HERD_SEATS + 1))
ended=$(date +%s.%N)
# Redis's count of holds, not wrk's count of 201s: wrk stops with requests in
# flight whose holds were placed but whose answers it never read.
expected=$(redis-cli zcard 'bench:{e:1}:holds')
stored=0
for _ in $(seq 1 1200); do
    stored=$(psql -qtAX "$DATABASE_URL" -c "SELECT count(*) FROM bookings")
    ((stored >= expected)) && break
    sleep 0.05
done
lag=$(python3 -c "import time; print(f'{time.time() - $ended:.2f}')")
writer_rate=$(psql -qtAX "$DATABASE_URL" -c \
    "SELECT round(count(*) / greatest(extract(epoch FROM max(updated_at) - min(updated_at)), 0.001))
       FROM bookings")

python3 - "$work" "$expected" "$stored" "$lag" "$writer_rate" "$CONNECTIONS" <<'EOF'
import json, sys, os
work, expected, stored, lag, writer_rate, connections = sys.argv[1:]
runs = {name: json.load(open(os.path.join(work, name + ".json"))) for name in ("ceiling", "herd", "distinct")}
ceiling = runs["ceiling"]["rps"]
print()
print(f"POST /api/bookings, {connections} connections, wrk closed loop, one machine ({os.cpu_count()} cores)")
print(f"{'run':<10}{'req/s':>10}{'x ceiling':>11}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}  statuses")
for name, r in runs.items():
    statuses = f"201:{r['s201']} 409:{r['s409']} 429:{r['s429']} 503:{r['s503']} other:{r['other']} socket-errors:{r['socketErrors']}"
    print(f"{name:<10}{r['rps']:>10.0f}{r['rps'] / ceiling:>11.2f}{r['p50'] / 1000:>9.2f}{r['p99'] / 1000:>9.2f}{r['p999'] / 1000:>10.2f}  {statuses}")
print(f"writer: {stored} of {expected} holds placed in Redis are in PostgreSQL, lag after the last 201: {lag} s, "
      f"writer rate: {writer_rate} bookings/s")
EOF
