#!/usr/bin/env bash
# One gateway (`herdgate serve`) on one Redis against the same gateway on a
# Redis Cluster (3 masters, a replica each), both private to this run, the
# rounds alternated: `herdgate load distinct` on event 1, every answer a
# durable hold. Prints one line per round: target, holds/s, p50 and p99 (ms).
#
#   load-testing/bench-cluster.sh
#   ROUNDS=3 DURATION=10 CONNECTIONS=64 load-testing/bench-cluster.sh
#
# Uses the shared PostgreSQL and RabbitMQ (a database and names of its own per
# round, removed after) and release binaries (built first).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=load-testing/bench-lib.sh
source load-testing/bench-lib.sh

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
SEATS=${SEATS:-60000}
PG=${PG:-postgres://postgres:postgres@127.0.0.1:5432}

cargo build --release --bins -q
BIN=target/release
DIR=$(mktemp -d)
PIDS=()
CURRENT=() # the running round's database, Redis prefix and AMQP prefix
cleanup() {
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    # A round that failed or was interrupted leaves nothing in the shared services either.
    ((${#CURRENT[@]} == 0)) || remove_bench_resources_on "$PG" "${CURRENT[@]}"
    rm -rf "$DIR"
}
trap cleanup EXIT

node_port() { free_port 20000 10000 10000; } # with its cluster bus (+10000) free too

redis_node() { # port [options...]
    local port=$1
    shift
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$DIR" "$@" >/dev/null &
    PIDS+=($!)
    until [[ $(redis-cli -p "$port" PING 2>/dev/null) == PONG ]]; do sleep 0.05; done
}

SINGLE=$(node_port)
redis_node "$SINGLE"
NODES=()
for _ in 1 2 3 4 5 6; do
    port=$(node_port)
    redis_node "$port" --cluster-enabled yes --cluster-config-file "nodes-$port.conf" \
        --cluster-node-timeout 2000
    NODES+=("$port")
done
redis-cli --cluster create "${NODES[@]/#/127.0.0.1:}" --cluster-replicas 1 --cluster-yes >/dev/null
for port in "${NODES[@]}"; do
    until redis-cli -p "$port" CLUSTER INFO | grep -q cluster_state:ok; do sleep 0.1; done
done
CLUSTER_URL="redis-cluster://127.0.0.1:${NODES[0]}?$(printf 'node=127.0.0.1:%s&' "${NODES[@]:1}")"
CLUSTER_URL=${CLUSTER_URL%&}

round() { # name redis_url
    local id db prefix amqp port pid out
    id=$(date +%s%N)
    db="bench_cluster_$id"
    prefix="bench:$id:"
    amqp="bench.$id"
    port=$(node_port)
    CURRENT=("$db" "$prefix" "$amqp")
    export DATABASE_URL="$PG/$db" REDIS_URL=$2 HERDGATE_REDIS_PREFIX=$prefix
    export HERDGATE_AMQP_PREFIX=$amqp HERDGATE_ADDR=127.0.0.1:$port
    export HERDGATE_TOKEN_SECRET=bench-cluster-secret-bench-cluster-secret
    export HERDGATE_MAX_HOLDS_PER_USER=1000 # 2,000 users hold every seat
    "$BIN/herdgate" migrate >/dev/null
    "$BIN/herdgate" seed --seats "$SEATS" >/dev/null
    "$BIN/herdgate" serve >"$DIR/serve.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_for_herdgate "http://127.0.0.1:$port"
    out=$("$BIN/herdgate-load" distinct --event 1 --users 2000 --seats "$SEATS" \
        --connections "$CONNECTIONS" --duration "${DURATION}s" \
        --base "http://127.0.0.1:$port" --json | tail -n 1)
    kill -TERM "$pid"
    wait "$pid" || true
    python3 -c '
import json, sys
s = json.loads(sys.argv[2])
l = s["latencyMs"]
print("%-8s %8.0f holds/s  p50 %6.2f ms  p99 %6.2f ms  passed %s"
      % (sys.argv[1], s["throughput"], l["p50"], l["p99"], s["passed"]))
' "$1" "$out"
    # The cluster's keys go with its processes; the single Redis is private too.
    remove_bench_resources_on "$PG" "$db" "$prefix" "$amqp"
    CURRENT=()
}

for _ in $(seq 1 "$ROUNDS"); do
    round single "redis://127.0.0.1:$SINGLE/0"
    round cluster "$CLUSTER_URL"
done
