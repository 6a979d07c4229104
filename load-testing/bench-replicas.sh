#!/usr/bin/env bash
# The cost of HERDGATE_REDIS_MIN_REPLICAS (the group-commit WAIT, see
# src/holds/replication.rs): one gateway (`herdgate serve`) on a private Redis
# master with one replica, rounds alternated between 0 (off) and 1 replica
# required. Each round runs `herdgate load distinct` on event 1, every answer
# a durable hold, and prints holds/s, p50 and p99 (ms), the CPU µs per hold of
# the gateway and of the master (load-testing/cpu.py), and WAITs per hold
# (the master's INFO commandstats).
#
#   load-testing/bench-replicas.sh
#   ROUNDS=3 DURATION=10 CONNECTIONS=64 PROFILE=debug load-testing/bench-replicas.sh
#
# Uses the shared PostgreSQL and RabbitMQ (a database and names of its own per
# round, removed after) and binaries of PROFILE (release unless told), built first.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=load-testing/bench-lib.sh
source load-testing/bench-lib.sh

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
SEATS=${SEATS:-60000}
PROFILE=${PROFILE:-release}
PG=${PG:-postgres://postgres:postgres@127.0.0.1:5432}

if [[ $PROFILE == release ]]; then
    cargo build --release --bins -q
else
    cargo build --bins -q
fi
BIN=target/$PROFILE
DIR=$(mktemp -d)
PIDS=()
CURRENT=() # the running round's database, Redis prefix and AMQP prefix
cleanup() {
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    stop_private_redis "$DIR/replica"
    stop_private_redis "$DIR/master"
    ((${#CURRENT[@]} == 0)) || remove_bench_resources_on "$PG" "${CURRENT[@]}"
    rm -rf "$DIR"
}
trap cleanup EXIT


MASTER=$(free_port 20000 10000)
start_private_redis "$DIR/master" "$MASTER"
REPLICA=$(free_port 20000 10000)
start_private_redis "$DIR/replica" "$REPLICA" --replicaof 127.0.0.1 "$MASTER"
until redis-cli -p "$REPLICA" INFO replication | grep -q master_link_status:up; do sleep 0.1; done
MASTER_PID=$(cat "$DIR/master/redis.pid")

round() { # min_replicas
    local id db prefix amqp port pid out
    id=$(date +%s%N)
    db="bench_replicas_$id"
    prefix="bench:$id:"
    amqp="bench.$id"
    port=$(free_port 20000 10000)
    CURRENT=("$db" "$prefix" "$amqp")
    export DATABASE_URL="$PG/$db" REDIS_URL="redis://127.0.0.1:$MASTER/0" HERDGATE_REDIS_PREFIX=$prefix
    export HERDGATE_AMQP_PREFIX=$amqp HERDGATE_ADDR=127.0.0.1:$port
    export HERDGATE_TOKEN_SECRET=bench-replicas-secret-bench-replicas-secret
    export HERDGATE_MAX_HOLDS_PER_USER=1000 # 2,000 users hold every seat
    export HERDGATE_REDIS_MIN_REPLICAS=$1
    "$BIN/herdgate" migrate >/dev/null
    "$BIN/herdgate" seed --seats "$SEATS" >/dev/null
    "$BIN/herdgate" serve >"$DIR/serve.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_for_herdgate "http://127.0.0.1:$port"
    redis-cli -p "$MASTER" CONFIG RESETSTAT >/dev/null
    out=$(python3 load-testing/cpu.py --json "$DIR/cpu.json" --from " against http" \
        --until "load: drained" herdgate="$pid" redis="$MASTER_PID" -- \
        "$BIN/herdgate-load" distinct --event 1 --users 2000 --seats "$SEATS" \
        --connections "$CONNECTIONS" --duration "${DURATION}s" \
        --base "http://127.0.0.1:$port" --json 2>/dev/null | tail -n 1)
    redis-cli -p "$MASTER" INFO commandstats >"$DIR/stats.txt"
    kill -TERM "$pid"
    wait "$pid" || true
    python3 -c '
import json, re, sys
s = json.loads(sys.argv[2])
cpu = json.load(open(sys.argv[3]))["cpuSecs"]
stats = open(sys.argv[4]).read()
def calls(cmd):
    m = re.search(r"cmdstat_%s:calls=(\d+)" % cmd, stats)
    return int(m.group(1)) if m else 0
holds = s["statuses"].get("201", 0)
l = s["latencyMs"]
print("min_replicas=%s %7.0f holds/s  p50 %6.2f ms  p99 %6.2f ms  gateway %5.0f us/hold  "
      "master %4.0f us/hold  %d WAIT for %d holds  passed %s"
      % (sys.argv[1], s["throughput"], l["p50"], l["p99"],
         cpu["herdgate"] / holds * 1e6, cpu["redis"] / holds * 1e6,
         calls("wait"), holds, s["passed"]))
' "$1" "$out" "$DIR/cpu.json" "$DIR/stats.txt"
    remove_bench_resources_on "$PG" "$db" "$prefix" "$amqp"
    CURRENT=()
}

for _ in $(seq 1 "$ROUNDS"); do
    round 0
    round 1
done
