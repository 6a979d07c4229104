#!/usr/bin/env bash
# A normal client beside an attacker holding ATTACKERS idle connections (issue
# 11's benchmark): `herdgate load normal` alone, then with
# load-testing/idle-attacker.py holding its connections and reopening each one
# the gateway closes, ROUNDS times in turn, against one release `herdgate serve`
# with default limits. Prints each run's p50/p99/max and the gateway's RSS, then
# the medians and the p99 ratio. Uses its own database, Redis prefix and
# RabbitMQ names on the shared services, and removes them afterwards.
#
#   load-testing/bench-attack.sh
#   ATTACKERS=5000 ROUNDS=1 DURATION=10s load-testing/bench-attack.sh
#   HERDGATE_IDLE_TIMEOUT=10m load-testing/bench-attack.sh   # every attacker stays connected
#
# With the default idle timeout (5 s) the gateway closes the attacker's
# connections and the attacker reopens them: it measures the churn. With a long
# one, all ATTACKERS connections stay open for the whole run: it measures what
# holding them costs.
set -euo pipefail
cd "$(dirname "$0")/.."

ATTACKERS=${ATTACKERS:-10000}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20s}
RATE=${RATE:-500}
PORT=${PORT:-18183}

# shellcheck source=scripts/services.sh
source scripts/services.sh
# shellcheck source=load-testing/bench-lib.sh
source load-testing/bench-lib.sh
ensure_services
if [[ -z ${HERDGATE_BIN:-} ]]; then
    cargo build --release --bin herdgate --bin herdgate-load
fi
bin=${HERDGATE_BIN:-target/release/herdgate}
# Both the attacker and the gateway hold ATTACKERS sockets.
ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < ATTACKERS + 1000)); then
    echo "the open-files limit ($(ulimit -n)) is too low for $ATTACKERS attackers" >&2
    exit 1
fi

db=herdgate_bench_attack
export DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/$db
export HERDGATE_REDIS_PREFIX=benchattack: HERDGATE_AMQP_PREFIX=benchattack
export HERDGATE_ADDR=127.0.0.1:$PORT RUST_LOG=${RUST_LOG:-warn}
export HERDGATE_MAX_HOLDS_PER_USER=1000000
base=http://127.0.0.1:$PORT
work=$(mktemp -d)
pid= attacker= sampler=

cleanup() {
    for p in $attacker $sampler $pid; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    remove_bench_resources "$db" benchattack: benchattack
    rm -rf "$work"
}
trap cleanup EXIT

$bin migrate >/dev/null
$bin seed --users 1000 >/dev/null
$bin serve &
pid=$!
wait_for_herdgate "$base"

# The gateway's RSS in KiB, sampled every 100 ms into FILE until killed.
sample_rss() { # file
    while sleep 0.1; do awk '/^VmRSS/ {print $2}' "/proc/$pid/status" >>"$1"; done
}

run() { # label
    local label=$1
    : >"$work/$label.rss"
    sample_rss "$work/$label.rss" &
    sampler=$!
    $bin load normal --base "$base" --users 1000 --rate "$RATE" --connections 16 \
        --duration "$DURATION" --json --svg "$work/$label.svg" | tail -n 1 >"$work/$label.json"
    kill "$sampler"
    wait "$sampler" 2>/dev/null || true
    sampler=
}

for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round: normal client alone"
    run "alone-$round"
    echo "== round $round: beside $ATTACKERS idle connections"
    python3 load-testing/idle-attacker.py 127.0.0.1 "$PORT" "$ATTACKERS" >"$work/attacker-$round.out" &
    attacker=$!
    until grep -q "connections open" "$work/attacker-$round.out"; do sleep 0.2; done
    open=$(curl -s "$base/metrics" | awk '/^herdgate_http_connections_open/ {print $2}')
    echo "   gateway: $open connections open once the attacker is in"
    run "attacked-$round"
    kill -TERM "$attacker"
    wait "$attacker" || true
    attacker=
    cat "$work/attacker-$round.out"
done
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")

python3 - "$work" "$ROUNDS" "$hwm" <<'PY'
import json, statistics, sys
work, rounds, hwm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def runs(label):
    out = []
    for r in range(1, rounds + 1):
        summary = json.load(open(f"{work}/{label}-{r}.json"))
        rss = [int(l) for l in open(f"{work}/{label}-{r}.rss") if l.strip()]
        out.append((summary, max(rss) / 1024 if rss else 0.0))
    return out
print(f"\n{'':>10} {'round':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7} {'peak RSS MiB':>13}")
medians = {}
for label in ("alone", "attacked"):
    rows = runs(label)
    for r, (s, rss) in enumerate(rows, 1):
        lat = s["latencyMs"]
        print(f"{label:>10} {r:>5} {lat['p50']:>8.1f} {lat['p99']:>8.1f} {lat['max']:>8.1f} "
              f"{s['errors'] + s['failures']:>7} {rss:>13.1f}")
    medians[label] = (statistics.median(s["latencyMs"]["p99"] for s, _ in rows),
                      statistics.median(rss for _, rss in rows))
(alone, _), (attacked, rss) = medians["alone"], medians["attacked"]
print(f"\nmedian p99: {alone:.1f} ms alone, {attacked:.1f} ms attacked: {attacked / alone:.2f}x "
      f"(target under 2x)")
print(f"median peak RSS attacked: {rss:.1f} MiB; gateway VmHWM over the whole run: "
      f"{hwm / 1024:.1f} MiB (target under 256 MiB)")
PY
