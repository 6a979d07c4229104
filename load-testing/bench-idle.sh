#!/usr/bin/env bash
# What a large catalogue costs when nobody buys: herdgate serve with EVENTS
# on-sale events of SEATS_EACH seats beside the demo events, CPU seconds of
# herdgate and Redis over IDLE seconds without traffic (after the loader has
# loaded them all); then a distinct run on the demo event with that catalogue
# and without it, CPU µs per durable hold each, back to back. Private
# PostgreSQL, Redis and RabbitMQ, as bench.sh.
#
#   load-testing/bench-idle.sh                 # 10,000 events
#   EVENTS="1000 10000" load-testing/bench-idle.sh
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-1000 10000}
SEATS_EACH=${SEATS_EACH:-10}
IDLE=${IDLE:-10}
REQUESTS=${REQUESTS:-20000}
PG_PORT=${PG_PORT:-55433}
REDIS_PORT=${REDIS_PORT:-16391}
RABBIT_PORT=${RABBIT_PORT:-5684}
BENCH_PORT=${BENCH_PORT:-18290}

# shellcheck source=scripts/services.sh
source scripts/services.sh
# shellcheck source=load-testing/bench-lib.sh
source load-testing/bench-lib.sh
if [[ -z ${HERDGATE_BIN:-} ]]; then
    cargo build --release --bin herdgate --bin herdgate-load
fi
bin=${HERDGATE_BIN:-target/release/herdgate}
work=$(mktemp -d)
rabbit_node=herdgate-idle@localhost
pid=

cleanup() {
    [[ -z $pid ]] || { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }
    stop_private_postgres "$work/pg"
    stop_private_redis "$work/redis"
    stop_private_rabbitmq "$rabbit_node"
    rm -rf "$work"
}
trap cleanup EXIT

start_private_postgres "$work/pg" "$PG_PORT" -c max_connections=300
pg_pid=$(head -n 1 "$work/pg/data/postmaster.pid")
start_private_redis "$work/redis" "$REDIS_PORT"
redis_pid=$(cat "$work/redis/redis.pid")
rabbit_pid=$(start_private_rabbitmq "$work/rabbitmq" "$rabbit_node" "$RABBIT_PORT")
pg_base=postgres://postgres@127.0.0.1:$PG_PORT
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 AMQP_URL=amqp://guest:guest@127.0.0.1:$RABBIT_PORT/%2f
export RUST_LOG=${RUST_LOG:-warn} HERDGATE_ADDR=127.0.0.1:$BENCH_PORT
export HERDGATE_MAX_HOLDS_PER_USER=1000000
base=http://127.0.0.1:$BENCH_PORT

# A catalogue of N extra on-sale events, each with SEATS_EACH seats.
catalogue() { # n
    psql -qX "$DATABASE_URL" -c "
        INSERT INTO events (id, name, venue, starts_at, status)
        SELECT 1000 + g, 'Quiet event ' || g, 'Hall ' || g, now() + interval '30 days', 'ON_SALE'
          FROM generate_series(1, $1) g;
        INSERT INTO seats (event_id, section, row_label, number)
        SELECT 1000 + g, 'A', '1', n FROM generate_series(1, $1) g, generate_series(1, $SEATS_EACH) n;"
}

run() { # label extra_events
    local label=$1 n=$2
    export DATABASE_URL=$pg_base/idle_$n
    psql -qX "$pg_base/postgres" -c "CREATE DATABASE idle_$n" >/dev/null
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    $bin migrate >/dev/null
    $bin seed --seats $((REQUESTS * 2)) --users 1000 >/dev/null
    ((n == 0)) || catalogue "$n"
    $bin serve &
    pid=$!
    wait_for_herdgate "$base"
    # Every event loaded: its event hash exists in Redis.
    local want=$((n + 3))
    for _ in $(seq 1 600); do
        [[ $(redis-cli -p "$REDIS_PORT" --scan --pattern 'hg:{e:*}:event' | wc -l) -ge $want ]] && break
        sleep 0.5
    done
    sleep 2
    echo "== $label: idle ${IDLE}s with $want events on sale"
    python3 load-testing/cpu.py --json "$work/idle-$n.json" herdgate="$pid" redis="$redis_pid" \
        rabbitmq="$rabbit_pid" postgres="$pg_pid" -- sleep "$IDLE"
    echo "== $label: herdgate load distinct --requests $REQUESTS --connections 64"
    python3 load-testing/cpu.py --json "$work/distinct-$n.json" --from " against http" \
        --until "load: drained" herdgate="$pid" redis="$redis_pid" \
        rabbitmq="$rabbit_pid" postgres="$pg_pid" -- \
        $bin load distinct --base "$base" --users 1000 --requests "$REQUESTS" --connections 64 \
        --json --svg "$work/distinct-$n.svg" >"$work/distinct-$n.out"
    tail -n 1 "$work/distinct-$n.out" >"$work/distinct-$n.summary.json"
    kill -TERM "$pid"
    wait "$pid" || true
    pid=
    for q in herdgate.writer herdgate.dead; do
        rabbitmqctl -q -n "$rabbit_node" delete_queue "$q" >/dev/null 2>&1 || true
    done
}

run "alone" 0
for n in $EVENTS; do run "catalogue of $n" "$n"; done

python3 - "$work" "$IDLE" 0 $EVENTS <<'EOF'
import json, sys
work, idle, sizes = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
print(f"\n{'extra events':>12}  {'idle: herdgate % of a core':>27}{'redis %':>9}  "
      f"{'distinct: µs per durable hold':>30}  (herdgate redis rabbitmq postgres)")
for n in sizes:
    cpu = json.load(open(f"{work}/idle-{n}.json"))["cpuSecs"]
    load = json.load(open(f"{work}/distinct-{n}.json"))["cpuSecs"]
    summary = json.load(open(f"{work}/distinct-{n}.summary.json"))
    held = summary["statuses"].get("201", 0)
    per = {g: load[g] / max(held, 1) * 1e6 for g in ("herdgate", "redis", "rabbitmq", "postgres")}
    print(f"{n:>12}  {cpu['herdgate'] / idle * 100:>27.1f}{cpu['redis'] / idle * 100:>9.1f}  "
          f"{sum(per.values()):>30.0f}  ({' '.join(f'{v:.0f}' for v in per.values())})")
EOF
