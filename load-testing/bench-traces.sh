#!/usr/bin/env bash
# What exporting traces costs the herd: POST /api/bookings on HERD_SEATS seats
# (almost every answer a 409, the hot path), with `herdgate serve` exporting no
# traces and then exporting RATIO of them (1% by default) over OTLP/HTTP to a
# local sink (examples/otlp_sink.rs, which counts spans and drops them), back to
# back in one run; ROUNDS > 1 alternates off and on that many times.
#
#   load-testing/bench-traces.sh                 # 20 s per run
#   DURATION=10 RATIO=0.01 ROUNDS=2 load-testing/bench-traces.sh
#
# Prints req/s, p50 and p99 of each run and the on/off ratios. Uses its own
# database, Redis prefix and RabbitMQ names, and removes them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-256}
THREADS=${THREADS:-2}
HERD_SEATS=${HERD_SEATS:-4}
SEATS=${SEATS:-1000}
USERS=${USERS:-20000}
RATIO=${RATIO:-0.01}
ROUNDS=${ROUNDS:-1}
BENCH_PORT=${BENCH_PORT:-18180}
SINK_PORT=${SINK_PORT:-18184}

# shellcheck source=scripts/services.sh
source scripts/services.sh
# shellcheck source=load-testing/bench-lib.sh
source load-testing/bench-lib.sh
ensure_services
ensure_wrk

cargo build --release --bin herdgate --example otlp_sink
bin=${HERDGATE_BIN:-target/release/herdgate}

db=herdgate_bench_traces
export DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/$db
export HERDGATE_REDIS_PREFIX=benchtraces: HERDGATE_AMQP_PREFIX=benchtraces
export HERDGATE_ADDR=127.0.0.1:$BENCH_PORT
export HERDGATE_MAX_HOLDS_PER_USER=1000000 HERDGATE_OUTBOX_MAX=10000000
export RUST_LOG=${RUST_LOG:-warn}
# Only what this script sets: no collector of the caller's.
unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_PROTOCOL OTEL_SERVICE_NAME \
    OTEL_TRACES_SAMPLER OTEL_TRACES_SAMPLER_ARG OTEL_RESOURCE_ATTRIBUTES
work=$(mktemp -d)
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    remove_bench_resources "$db" benchtraces: benchtraces
    rm -rf "$work"
}
trap cleanup EXIT

remove_bench_resources "$db" benchtraces: benchtraces
$bin migrate >/dev/null
$bin seed --seats "$SEATS" --users "$USERS" >/dev/null
$bin token --user 2 --count "$USERS" >"$work/tokens.txt"

# One herd run against a fresh `herdgate serve` with the given environment;
# wrk's RESULT line (load-testing/holds.lua) goes to $work/<name>.json.
herd_run() { # name [VAR=value ...]
    local name=$1 pid out
    shift
    env "$@" "$bin" serve &
    pid=$!
    pids+=("$pid")
    wait_for_herdgate "http://127.0.0.1:$BENCH_PORT"
    out=$(MODE=herd FIRST_SEAT=1 SEATS=$HERD_SEATS TOKENS=$work/tokens.txt THREADS=$THREADS \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION"s --timeout 10s -s load-testing/holds.lua \
        "http://127.0.0.1:$BENCH_PORT")
    grep '^RESULT ' <<<"$out" | sed 's/^RESULT //' >"$work/$name.json"
    echo "$name: $(cat "$work/$name.json")"
    # SIGTERM: drains, and with export on flushes the last spans to the sink.
    kill -TERM "$pid"
    wait "$pid" || true
}

runs=()
for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round: export off"
    herd_run "off$round"
    runs+=("off$round")

    echo "== round $round: export on, ratio $RATIO, to the sink on :$SINK_PORT"
    target/release/examples/otlp_sink "127.0.0.1:$SINK_PORT" >"$work/sink$round.txt" 2>/dev/null &
    sink=$!
    pids+=("$sink")
    herd_run "on$round" OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" \
        OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG="$RATIO"
    kill -TERM "$sink"
    wait "$sink" || true
    runs+=("on$round")
done

python3 - "$work" "$CONNECTIONS" "$RATIO" "${runs[@]}" <<'EOF_PY'
import json, os, sys
work, connections, ratio, *names = sys.argv[1:]
runs = {n: json.load(open(os.path.join(work, n + ".json"))) for n in names}
print()
print(f"POST /api/bookings herd, {connections} connections, wrk closed loop, one machine ({os.cpu_count()} cores)")
print(f"{'run':<8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}  statuses; spans exported")
for n, r in runs.items():
    spans = ""
    if n.startswith("on"):
        sink = open(os.path.join(work, "sink" + n[2:] + ".txt")).read().strip() or "?"
        spans = f"; {sink} spans at ratio {ratio}"
    print(f"{n:<8}{r['rps']:>10.0f}{r['p50'] / 1000:>9.2f}{r['p99'] / 1000:>9.2f}{r['p999'] / 1000:>10.2f}"
          f"  201:{r['s201']} 409:{r['s409']} 503:{r['s503']} other:{r['other']} socket-errors:{r['socketErrors']}{spans}")
for n in names:
    if n.startswith("on"):
        on, off = runs[n], runs["off" + n[2:]]
        print(f"round {n[2:]}: on/off req/s {on['rps'] / off['rps']:.3f}, p99 {on['p99'] / max(off['p99'], 1):.3f}")
EOF_PY
