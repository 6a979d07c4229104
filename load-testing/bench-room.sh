#!/usr/bin/env bash
# The waiting room's benchmark, in one run on this machine (about 5 minutes on 2
# cores after the release build):
#
#   1. joins and looks a second against the HTTP ceiling, at CONNECTIONS:
#        ceiling  examples/ceiling.rs: the same hyper stack answering a fixed 201
#        join     `herdgate load join`: every request a join of event 5's room by the
#                 next of USERS users (one waiting_room.lua call each)
#        look     `herdgate load look`: every request a look at one's place, by the
#                 users the join run queued
#      with the CPU each cost per answer (load-testing/cpu.py);
#   2. the room itself, ROOM_SECS seconds of admission: BUYERS buyers of event 5
#      arrive over RAMP seconds into its pre-queue, the draw is checked against the
#      revealed seed (admission held at the start meanwhile), then admission runs at
#      RATE a second, at most MAX_ACTIVE at once; buyers book and confirm once
#      admitted, LEAVE of them walk away. The admissions a second against RATE are
#      drawn in $OUT/room.svg.
#
#   load-testing/bench-room.sh
#   CONNECTIONS=64 ROOM_SECS=30 load-testing/bench-room.sh
#
# Private PostgreSQL, Redis and RabbitMQ instances, as in bench.sh, so the CPU times
# count this benchmark's work only. Each part runs on a fresh herdgate of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-256}
USERS=${USERS:-200000}
BUYERS=${BUYERS:-5000}
RAMP=${RAMP:-10}
RATE=${RATE:-50}
MAX_ACTIVE=${MAX_ACTIVE:-1000}
LEAVE=${LEAVE:-0.1}
ROOM_SECS=${ROOM_SECS:-65}
PG_PORT=${PG_PORT:-55442}
BENCH_PORT=${BENCH_PORT:-18290}
CEILING_PORT=${CEILING_PORT:-18291}
REDIS_PORT=${REDIS_PORT:-16391}
RABBIT_PORT=${RABBIT_PORT:-5684}
PARTS=${PARTS:-visits room}
OUT=${OUT:-load-testing/results/room}

# shellcheck source=scripts/services.sh
source scripts/services.sh
# shellcheck source=load-testing/bench-lib.sh
source load-testing/bench-lib.sh
# shellcheck disable=SC2119 # our arguments are not for it
ensure_services

if [[ -z ${HERDGATE_BIN:-} ]]; then
    cargo build --release --bin herdgate --bin herdgate-load --example ceiling
fi
bin=${HERDGATE_BIN:-target/release/herdgate}
ceiling=$(dirname "$bin")/examples/ceiling
[[ -x $ceiling ]] || ceiling=target/release/examples/ceiling
work=$(mktemp -d)
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.svg "$OUT"/*.txt
pids=()
export RUST_LOG=${RUST_LOG:-warn}
export HERDGATE_ADDR=127.0.0.1:$BENCH_PORT
# The benchmark measures the room, not the limits meant for one person's browser:
# every buyer comes from 127.0.0.1.
export HERDGATE_ROOM_CLIENT_RATE=1000000000 HERDGATE_ROOM_USER_RATE=1000000
export HERDGATE_MAX_IN_FLIGHT=16384 HERDGATE_IDLE_TIMEOUT=60s
export HERDGATE_OPERATOR_TOKEN=${HERDGATE_OPERATOR_TOKEN:-bench-room-operator-secret-0123456789abcdef}
pg_base=postgres://postgres@127.0.0.1:$PG_PORT

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    stop_private_postgres "$work/pg"
    stop_private_redis "$work/redis"
    stop_private_rabbitmq "$rabbit_node"
    rm -rf "$work"
}
trap cleanup EXIT

start_private_postgres "$work/pg" "$PG_PORT" -c max_connections=300 -c shared_buffers=256MB
pg_pid=$(head -n 1 "$work/pg/data/postmaster.pid")
start_private_redis "$work/redis" "$REDIS_PORT"
redis_pid=$(cat "$work/redis/redis.pid")
rabbit_node=herdgate-bench-room@localhost
rabbit_pid=$(start_private_rabbitmq "$work/rabbitmq" "$rabbit_node" "$RABBIT_PORT")
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 AMQP_URL=amqp://guest:guest@127.0.0.1:$RABBIT_PORT/%2f

# A fresh herdgate whose event 5 room has the settings SQL gives it (run before the
# loader reads it).
start_stack() { # name users room-sql
    export DATABASE_URL=$pg_base/bench_$1 HERDGATE_REDIS_PREFIX=bench_$1: HERDGATE_AMQP_PREFIX=bench_$1
    psql -qX "$pg_base/postgres" -c "DROP DATABASE IF EXISTS \"bench_$1\" WITH (FORCE)" >/dev/null
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    $bin migrate >/dev/null
    $bin seed --seats 1000 --users "$2" >/dev/null
    psql -qX "$DATABASE_URL" -c "UPDATE waiting_rooms SET $3 WHERE event_id = 5" >/dev/null
    $bin serve &
    pids+=($!)
    server_group=(herdgate=$!)
    wait_for_herdgate "http://127.0.0.1:$BENCH_PORT"
}
stop_stack() {
    kill -TERM "${pids[-1]}"
    wait "${pids[-1]}" || true
    unset 'pids[-1]'
}
# `herdgate load ... --json`, its summary to the terminal, its JSON to $OUT/<name>.json,
# its CPU per process group to $OUT/<name>.cpu.json.
load() { # name args...
    local name=$1
    shift
    echo "== $name: herdgate load $*"
    python3 load-testing/cpu.py --json "$OUT/$name.cpu.json" --from " against http" \
        --until "load: drained" "${server_group[@]}" \
        redis="$redis_pid" rabbitmq="$rabbit_pid" postgres="$pg_pid" -- \
        "$bin" load "$@" --json | tee "$work/$name.out"
    tail -n 1 "$work/$name.out" >"$OUT/$name.json"
}
part() { [[ " $PARTS " == *" $1 "* ]]; }

part visits && {
    "$ceiling" "127.0.0.1:$CEILING_PORT" 2>/dev/null &
    ceiling_pid=$!
    pids+=("$ceiling_pid")
    export DATABASE_URL=$pg_base/bench_ceiling
    $bin migrate >/dev/null && $bin seed --seats 1 --users "$USERS" >/dev/null
    server_group=(ceiling="$ceiling_pid")
    load ceiling herd --base "http://127.0.0.1:$CEILING_PORT" --users "$USERS" \
        --connections "$CONNECTIONS" --duration "${DURATION}s" --no-check
    kill "$ceiling_pid"
    # Started, admitting RATE a second, places kept for 10 minutes: the looks find
    # the joins' places.
    start_stack visits "$USERS" "opens_at = now() - interval '1 hour',
        starts_at = now() - interval '1 second', admit_per_sec = $RATE,
        max_active = $MAX_ACTIVE, grace_ms = 600000"
    load join join --base "http://127.0.0.1:$BENCH_PORT" --users "$USERS" \
        --connections "$CONNECTIONS" --duration "${DURATION}s"
    queued=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['statuses']['200'])" "$OUT/join.json")
    ((queued < USERS)) || queued=$USERS
    load look look --base "http://127.0.0.1:$BENCH_PORT" --users "$queued" \
        --connections "$CONNECTIONS" --duration "${DURATION}s"
    stop_stack
}

part room && {
    # The draw 25 s after the server starts: every buyer arrives in the pre-queue.
    start_stack room "$BUYERS" "opens_at = now() - interval '1 minute',
        starts_at = now() + interval '25 seconds', grace_ms = 60000, idle_ms = 120000"
    load room waiting-room --base "http://127.0.0.1:$BENCH_PORT" --users "$BUYERS" \
        --ramp "${RAMP}s" --leave "$LEAVE" --admission-rate "$RATE" --max-active "$MAX_ACTIVE" \
        --duration "$((ROOM_SECS + 30))s" --svg "$OUT/room.svg"
    stop_stack
}

python3 load-testing/bench-room-table.py "$OUT" | tee "$OUT/bench-room.txt"
