#!/usr/bin/env bash
# The benchmark, in one run on this machine: herdgate against the HTTP ceiling
# and against the prototype's seed-style design, at 64, 256 and 1,024
# connections, then the on-sale itself. Builds release binaries and starts what
# it needs; about 10 minutes on 2 cores.
#
#   load-testing/bench.sh
#   DURATION=5 CONNECTIONS="64 256" load-testing/bench.sh
#
# Each row is one `herdgate load` run (or pgbench), each on a fresh herdgate with
# its own database, Redis prefix and RabbitMQ names:
#   ceiling     examples/ceiling.rs: the same hyper stack answering a fixed 201
#   herd        every request on one seat: one 201, then 409s
#   distinct    every request a new seat: all 201
#   seed-style  pgbench: the prototype's PostgreSQL transaction per booking
#               (insert a PENDING booking, set the seat HELD), same concurrency
# then `sellout`: SELLOUT_USERS users race for the SEATS seats of event 1,
# against seed-style's time to book the same seats one transaction each; and a
# herd of HERD_USERS users, one connection each, on one seat.
#
# PostgreSQL is a private cluster started here (max_connections 1,200, so
# pgbench's 1,024 clients can connect), used by herdgate and pgbench alike;
# Redis and RabbitMQ are private instances too, so that every run's CPU time
# (load-testing/cpu.py: utime+stime of each process group, before and after)
# counts this benchmark's work and nobody else's. The table gives, beside req/s,
# CPU µs per answer summed over herdgate, Redis, RabbitMQ and PostgreSQL, and
# per 201 (a durable hold: its cost until PostgreSQL holds it).
#
# PARTS picks what runs: matrix (ceiling, herd, distinct, seed-style at each
# CONNECTIONS; RUNS picks among those), sellout, herd-users; all by default.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64 256 1024}
SEATS=${SEATS:-50000}
DISTINCT_SEATS=${DISTINCT_SEATS:-400000}
SELLOUT_USERS=${SELLOUT_USERS:-200000}
SELLOUT_CONNECTIONS=${SELLOUT_CONNECTIONS:-250} # seed-style books SEATS / this per client
HERD_USERS=${HERD_USERS:-10000}
PG_PORT=${PG_PORT:-55432}
BENCH_PORT=${BENCH_PORT:-18280}
CEILING_PORT=${CEILING_PORT:-18281}
REDIS_PORT=${REDIS_PORT:-16390}
RABBIT_PORT=${RABBIT_PORT:-5683}
PARTS=${PARTS:-matrix sellout herd-users}
OUT=${OUT:-load-testing/results} # each run's JSON summary and latency picture, and the table

# shellcheck source=scripts/services.sh
source scripts/services.sh
# shellcheck source=load-testing/bench-lib.sh
source load-testing/bench-lib.sh
# shellcheck disable=SC2119 # our arguments are not for it
ensure_services

# HERDGATE_BIN runs another build (say, the last release's) through the same benchmark.
if [[ -z ${HERDGATE_BIN:-} ]]; then
    cargo build --release --bin herdgate --bin herdgate-load --example ceiling
fi
bin=${HERDGATE_BIN:-target/release/herdgate}
# The generator may be another build than the server (the current one against an old server).
load_bin=${LOAD_BIN:-$bin}
ceiling=$(dirname "$bin")/examples/ceiling
[[ -x $ceiling ]] || ceiling=target/release/examples/ceiling
work=$(mktemp -d)
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.svg
pids=()
export RUST_LOG=${RUST_LOG:-warn}
export HERDGATE_ADDR=127.0.0.1:$BENCH_PORT
# The bench measures the hot path, not the per-user limit or backpressure.
export HERDGATE_MAX_HOLDS_PER_USER=1000000 HERDGATE_OUTBOX_MAX=10000000
export HERDGATE_MAX_IN_FLIGHT=16384
# The 10,000-user herd opens every connection before the release: keep them open meanwhile.
export HERDGATE_IDLE_TIMEOUT=60s
pg_base=postgres://postgres@127.0.0.1:$PG_PORT
current=""

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    stop_private_postgres "$work/pg"
    stop_private_redis "$work/redis"
    stop_private_rabbitmq "$rabbit_node"
    rm -rf "$work"
}
trap cleanup EXIT

((SEATS % SELLOUT_CONNECTIONS == 0)) || { echo "SEATS must be a multiple of SELLOUT_CONNECTIONS" >&2; exit 64; }
# PG_STATS=1: each run also leaves PostgreSQL's statements by total time in $OUT/<name>.pgstat.txt.
pg_stats=()
[[ -z ${PG_STATS:-} ]] || pg_stats=(-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all)
start_private_postgres "$work/pg" "$PG_PORT" -c max_connections=1200 -c shared_buffers=512MB "${pg_stats[@]}"
pg_pid=$(head -n 1 "$work/pg/data/postmaster.pid")
start_private_redis "$work/redis" "$REDIS_PORT"
redis_pid=$(cat "$work/redis/redis.pid")
rabbit_node=herdgate-bench@localhost
rabbit_pid=$(start_private_rabbitmq "$work/rabbitmq" "$rabbit_node" "$RABBIT_PORT")
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 AMQP_URL=amqp://guest:guest@127.0.0.1:$RABBIT_PORT/%2f

# The private instances serve one run at a time: empty them between runs.
remove_run_resources() { # name
    psql -qX "$pg_base/postgres" -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    for q in "$1.writer" "$1.dead"; do rabbitmqctl -q -n "$rabbit_node" delete_queue "$q" >/dev/null 2>&1 || true; done
}
# A fresh herdgate on its own database, Redis prefix and RabbitMQ names.
start_stack() { # name seats users
    current=bench_$1
    export DATABASE_URL=$pg_base/$current HERDGATE_REDIS_PREFIX=$current: HERDGATE_AMQP_PREFIX=$current
    remove_run_resources "$current"
    $bin migrate >/dev/null
    $bin seed --seats "$2" --users "$3" >/dev/null
    [[ -z ${PG_STATS:-} ]] || psql -qX "$DATABASE_URL" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()" >/dev/null
    $bin serve &
    pids+=($!)
    server_group=(herdgate=$!)
    wait_for_herdgate "http://127.0.0.1:$BENCH_PORT"
}
stop_stack() {
    kill -TERM "${pids[-1]}"
    wait "${pids[-1]}" || true
    unset 'pids[-1]'
    remove_run_resources "$current"
    current=""
}
# `herdgate load ... --json`: the summary goes to the terminal, its JSON to $OUT/<name>.json.
# Its CPU time per process group goes to $OUT/<name>.cpu.json: herdgate (or the
# ceiling) with Redis, RabbitMQ and PostgreSQL, and the generator as "client".
load() { # name args...
    local name=$1
    shift
    echo "== $name: herdgate load $*"
    redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
    local sampler=
    if [[ ${server_group[0]} == herdgate=* ]]; then
        python3 load-testing/backlog.py "http://127.0.0.1:$BENCH_PORT" "$OUT/$name.backlog.json" &
        sampler=$!
    fi
    python3 load-testing/cpu.py --json "$OUT/$name.cpu.json" --from " against http" \
        --until "load: drained" "${server_group[@]}" \
        redis="$redis_pid" rabbitmq="$rabbit_pid" postgres="$pg_pid" -- \
        "$load_bin" load "$@" --json --svg "$OUT/$name.svg" | tee "$work/$name.out"
    tail -n 1 "$work/$name.out" >"$OUT/$name.json"
    if [[ -n $sampler ]]; then
        kill -TERM "$sampler"
        wait "$sampler" || true
    fi
    redis-cli -p "$REDIS_PORT" info commandstats >"$OUT/$name.redis.txt"
    [[ -z ${PG_STATS:-} || -z $current ]] || psql -X "$pg_base/$current" -c "
        SELECT calls, round(total_exec_time) AS ms, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query
          FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12" >"$OUT/$name.pgstat.txt"
}
# pgbench's figures as the same JSON fields.
seed_style() { # name clients script [pgbench args...]
    local name=$1 clients=$2 script=$3
    shift 3
    echo "== $name: pgbench -c $clients $*"
    psql -qX "$pg_base/bench_seed_style" -f load-testing/seed-style/schema.sql >/dev/null
    python3 load-testing/cpu.py --json "$OUT/$name.cpu.json" postgres="$pg_pid" -- \
        pgbench -n -r -P 5 -c "$clients" -j 2 "$@" -f "$script" --log --log-prefix="$work/pgbench" \
        "$pg_base/bench_seed_style" | tee "$work/$name.out"
    python3 load-testing/pgbench-summary.py "$work"/pgbench.* >"$OUT/$name.json"
    rm -f "$work"/pgbench.*
    cat "$OUT/$name.json"
}
psql -qX "$pg_base/postgres" -c "CREATE DATABASE bench_seed_style" >/dev/null

part() { [[ " $PARTS " == *" $1 "* ]]; }
# RUNS picks the matrix's rows.
wanted() { [[ " ${RUNS:-ceiling herd distinct seed-style} " == *" $1 "* ]]; }

part matrix && {
"$ceiling" "127.0.0.1:$CEILING_PORT" 2>/dev/null &
ceiling_pid=$!
pids+=("$ceiling_pid")
export DATABASE_URL=$pg_base/bench_ceiling
$bin migrate >/dev/null && $bin seed --seats 1 --users "$SELLOUT_USERS" >/dev/null

for c in $CONNECTIONS; do
    export DATABASE_URL=$pg_base/bench_ceiling
    server_group=(ceiling="$ceiling_pid")
    wanted ceiling && load "ceiling-$c" herd --base "http://127.0.0.1:$CEILING_PORT" \
        --users "$SELLOUT_USERS" --connections "$c" --duration "${DURATION}s" --no-check
    wanted herd && {
        start_stack "herd-$c" "$SEATS" "$SELLOUT_USERS"
        load "herd-$c" herd --base "http://127.0.0.1:$BENCH_PORT" --users "$SELLOUT_USERS" \
            --connections "$c" --duration "${DURATION}s"
        stop_stack
    }
    wanted distinct && {
        start_stack "distinct-$c" "$DISTINCT_SEATS" "$SELLOUT_USERS"
        load "distinct-$c" distinct --base "http://127.0.0.1:$BENCH_PORT" --users "$SELLOUT_USERS" \
            --connections "$c" --duration "${DURATION}s"
        stop_stack
    }
    wanted seed-style && seed_style "seed-style-$c" "$c" load-testing/seed-style/booking.sql -T "$DURATION"
done
kill "$ceiling_pid"
}

part sellout && {
start_stack sellout "$SEATS" "$SELLOUT_USERS"
load sellout sellout --base "http://127.0.0.1:$BENCH_PORT" --users "$SELLOUT_USERS" \
    --connections "$SELLOUT_CONNECTIONS"
stop_stack
seed_style seed-style-sellout "$SELLOUT_CONNECTIONS" load-testing/seed-style/sellout.sql \
    -t $((SEATS / SELLOUT_CONNECTIONS))
}

part herd-users && {
start_stack herd-users "$SEATS" "$HERD_USERS"
load "herd-$HERD_USERS-users" herd --base "http://127.0.0.1:$BENCH_PORT" --users "$HERD_USERS"
stop_stack
}

python3 load-testing/bench-table.py "$OUT" "$CONNECTIONS" "$HERD_USERS" | tee "$OUT/bench.txt"
