# Shared by the benchmarks in load-testing/: source it after scripts/services.sh.

# Removes what a benchmark created: its database, its Redis keys, its RabbitMQ
# queues, and its exchanges (through the management API when it is enabled).
remove_bench_resources() { # database redis_prefix amqp_prefix
    psql -qX "postgres://postgres:postgres@127.0.0.1:5432/postgres" \
        -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null 2>&1 || true
    redis-cli --scan --pattern "$2*" | xargs -r -n 1000 redis-cli del >/dev/null || true
    for q in "$3.writer" "$3.dead"; do rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true; done
    for e in "$3.holds" "$3.dead"; do
        curl -s -o /dev/null -u guest:guest -X DELETE "http://127.0.0.1:15672/api/exchanges/%2f/$e" || true
    done
}

# wrk, installed from Debian's packages when missing.
ensure_wrk() {
    command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
}
