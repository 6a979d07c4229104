#!/usr/bin/env bash
# What a RabbitMQ cluster costs against one node: the same open-loop load of distinct
# holds (`herdgate load distinct --rate`) through `herdgate serve`, first on one private
# RabbitMQ node, then on a private cluster of three (the writer queue a quorum queue with
# a member on each), and the brokers' CPU seconds per hold (every node's VM, from /proc,
# from before the load until it has been checked, so the writer's catch-up counts).
# Never touches the shared broker; PostgreSQL and Redis are the shared ones, with a
# database and a key prefix of the run's own, removed afterwards.
#
#   load-testing/bench-rabbit-cluster.sh                # 2,000 holds/s for 10 s each
#   RATE=4000 DURATION=20 HERDGATE_BIN=target/release/herdgate load-testing/bench-rabbit-cluster.sh
#
# The load generator's own summary follows each line; the figures are in docs/deployment.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
# shellcheck source=load-testing/bench-lib.sh
source load-testing/bench-lib.sh

RATE=${RATE:-2000}
DURATION=${DURATION:-10}
USERS=${USERS:-5000}
BIN=${HERDGATE_BIN:-target/release/herdgate}
[[ -n ${HERDGATE_BIN:-} ]] || cargo build --release --bins -q
DIR=$(mktemp -d /tmp/herdgate-bench-rabbit.XXXXXX)
ID=$$
NODES=()

CURRENT=() # the running round's database, Redis prefix and AMQP prefix
cleanup() {
    for node in "${NODES[@]}"; do stop_private_rabbitmq "$node"; done
    [[ -n ${SERVE:-} ]] && kill "$SERVE" 2>/dev/null && wait "$SERVE" 2>/dev/null
    # A round that failed or was interrupted leaves nothing in the shared services either.
    ((${#CURRENT[@]} == 0)) || remove_bench_resources "${CURRENT[@]}"
    rm -rf "$DIR"
}
trap cleanup EXIT

# start NAME VAR: a private node; its AMQP port goes to VAR.
start() {
    local p
    p=$(free_port 10000 2000 20000) # with its distribution port (+20,000) free too
    NODES+=("$1@localhost")
    start_private_rabbitmq "$DIR/$1" "$1@localhost" "$p" >/dev/null
    printf -v "$2" '%s' "$p"
}

# CPU seconds (user + system) of the VMs of the nodes named.
cpu() {
    local total=0 pid
    for node in "$@"; do
        pid=$(rabbitmqctl -q -n "$node" eval 'os:getpid().' | tr -d '"')
        total=$(awk -v t="$total" '{ print t + ($14 + $15) / 100 }' "/proc/$pid/stat")
    done
    echo "$total"
}

# run LABEL AMQP_URL NODE...: serve on the broker, load, report.
run() {
    local label=$1 url=$2 db="herdgate_bench_rabbit_${1}_$ID" base="http://127.0.0.1:18$((RANDOM % 900 + 100))"
    shift 2
    CURRENT=("$db" "bench-rabbit:$label:$ID:" "bench-rabbit.$label.$ID")
    local env=(DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/$db" AMQP_URL="$url"
        HERDGATE_REDIS_PREFIX="bench-rabbit:$label:$ID:" HERDGATE_AMQP_PREFIX="bench-rabbit.$label.$ID"
        HERDGATE_ADDR="${base#http://}" HERDGATE_OUTBOX_MAX=1000000 HERDGATE_MAX_HOLDS_PER_USER=1000)
    env "${env[@]}" "$BIN" migrate >/dev/null
    env "${env[@]}" "$BIN" seed --users "$USERS" >/dev/null
    env "${env[@]}" RUST_LOG=warn "$BIN" serve 2>"$DIR/$label.log" &
    SERVE=$!
    wait_for_herdgate "$base"
    local before after holds
    before=$(cpu "$@")
    env "${env[@]}" "$BIN" load distinct --base "$base" --users "$USERS" --rate "$RATE" \
        --duration "${DURATION}s" >"$DIR/$label.load" 2>&1
    after=$(cpu "$@")
    holds=$(psql -qtAX "postgres://postgres:postgres@127.0.0.1:5432/$db" -c "SELECT count(*) FROM bookings")
    awk -v l="$label" -v n="$#" -v h="$holds" -v b="$before" -v a="$after" 'BEGIN {
        printf "%-8s %s node(s): %d holds in PostgreSQL, broker CPU %.2f s, %.1f us per hold\n",
            l, n, h, a - b, (a - b) * 1e6 / h }'
    grep -vE '^\{|^ +[0-9]+s ' "$DIR/$label.load" | tail -n 4 | sed 's/^/    /' || true
    kill "$SERVE" && wait "$SERVE" || true
    SERVE=
    remove_bench_resources "$db" "bench-rabbit:$label:$ID:" "bench-rabbit.$label.$ID"
    CURRENT=()
}

start "hg-rs1-$ID" single
start "hg-rc1-$ID" c1
start "hg-rc2-$ID" c2
start "hg-rc3-$ID" c3
for n in 2 3; do
    rabbitmqctl -q -n "hg-rc$n-$ID@localhost" stop_app
    rabbitmqctl -q -n "hg-rc$n-$ID@localhost" join_cluster "hg-rc1-$ID@localhost"
    rabbitmqctl -q -n "hg-rc$n-$ID@localhost" start_app
done
echo "rabbitmq: $(nproc) cores, ${RATE} holds/s for ${DURATION} s, $(rabbitmqctl -q -n "hg-rs1-$ID@localhost" version)"
run single "amqp://guest:guest@127.0.0.1:$single/%2f" "hg-rs1-$ID@localhost"
urls="amqp://guest:guest@127.0.0.1:$c1/%2f,amqp://guest:guest@127.0.0.1:$c2/%2f,amqp://guest:guest@127.0.0.1:$c3/%2f"
# A build from before AMQP_URL took a list of nodes: FIRST_NODE_ONLY=1.
[[ ${FIRST_NODE_ONLY:-0} == 1 ]] && urls=${urls%%,*}
run cluster "$urls" "hg-rc1-$ID@localhost" "hg-rc2-$ID@localhost" "hg-rc3-$ID@localhost"
