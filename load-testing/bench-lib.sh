# shellcheck shell=bash
# Shared by the benchmarks in load-testing/: source it after scripts/services.sh.

# Removes what a benchmark created: its database, its Redis keys, its RabbitMQ
# queues and exchanges, on the shared PostgreSQL.
remove_bench_resources() { # database redis_prefix amqp_prefix
    remove_bench_resources_on "postgres://postgres:postgres@127.0.0.1:5432" "$@"
}

# The same on the PostgreSQL at PG_BASE.
remove_bench_resources_on() { # pg_base database redis_prefix amqp_prefix
    psql -qX "$1/postgres" -c "DROP DATABASE IF EXISTS \"$2\" WITH (FORCE)" >/dev/null 2>&1 || true
    redis-cli --scan --pattern "$3*" | xargs -r -n 1000 redis-cli del >/dev/null || true
    for q in "$4.writer" "$4.dead"; do rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true; done
    for e in "$4.holds" "$4.dead"; do delete_exchange "$e"; done
}

# A port in LOW..LOW+SPAN-1 nothing listens on, nor on the port plus each
# OFFSET (a Redis Cluster node's bus, a RabbitMQ node's distribution port).
free_port() { # low span [offset...]
    local low=$1 span=$2 port offset busy
    shift 2
    while :; do
        port=$((low + RANDOM % span)) busy=0
        for offset in 0 "$@"; do
            if (: </dev/tcp/127.0.0.1/$((port + offset))) 2>/dev/null; then busy=1; fi
        done
        ((busy)) || { echo "$port"; return; }
    done
}

# Waits until URL answers 2xx; fails after two minutes.
wait_http() { # url
    for _ in $(seq 1 1200); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "no answer from $1" >&2
    return 1
}

# Waits until the herdgate at BASE is ready and serves event 1's seats (its inventory is loaded).
wait_for_herdgate() { # base
    wait_http "$1/readyz" && wait_http "$1/api/seats/available?eventId=1&limit=1"
}

# wrk, installed from Debian's packages when missing.
ensure_wrk() {
    command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
}

# rabbitmqctl cannot delete an exchange: the management API can, when the plugin is
# enabled; otherwise the broker's own function does, through rabbitmqctl eval.
delete_exchange() { # name, on vhost /
    curl -sf -o /dev/null -u guest:guest -X DELETE "http://127.0.0.1:15672/api/exchanges/%2f/$1" ||
        rabbitmqctl -q eval \
            "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$1\">>), false, <<\"bench\">>)." \
            >/dev/null 2>&1 || true
}

# A PostgreSQL cluster of the benchmark's own in DIR on PORT (trust auth, local
# only), so it can be configured without touching the shared one.
start_private_postgres() { # dir port [postgres options...]
    local dir=$1 port=$2 bin
    shift 2
    bin=$(postgres_bin)
    mkdir -p "$dir"
    local as=()
    if ((EUID == 0)); then
        chown postgres: "$dir"
        chmod 755 "$(dirname "$dir")"
        as=(runuser -u postgres --)
    fi
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust >/dev/null
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w start \
        -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir $*" >/dev/null ||
        { tail -n 20 "$dir/log" >&2; return 1; }
}

stop_private_postgres() { # dir
    [[ -d $1/data ]] || return 0
    local bin as=()
    bin=$(postgres_bin)
    ((EUID == 0)) && as=(runuser -u postgres --)
    "${as[@]}" "$bin/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null 2>&1 || true
}

# The newest installed PostgreSQL's bin directory.
postgres_bin() {
    printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1
}

# A Redis of the benchmark's own on PORT, data in DIR (no persistence unless
# options say so), so no other client's commands count in its CPU time.
# Prints nothing; its pid is in DIR/redis.pid.
start_private_redis() { # dir port [redis-server options...]
    local dir=$1 port=$2
    shift 2
    mkdir -p "$dir"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "$@" >/dev/null
    for _ in $(seq 1 100); do
        [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && return 0
        sleep 0.1
    done
    echo "private redis on :$port did not start (log: $dir/redis.log)" >&2
    return 1
}

stop_private_redis() { # dir
    [[ -f $1/redis.pid ]] && kill "$(cat "$1/redis.pid")" 2>/dev/null || true
}

# A RabbitMQ node of the benchmark's own: node name NAME, AMQP on PORT,
# distribution on PORT+20000, data and logs in DIR. The Debian wrapper runs the
# server as the rabbitmq user, and /etc/rabbitmq/rabbitmq.conf pins the shared
# node's listener, so the node gets a config file of its own. Its beam.smp pid
# is printed.
start_private_rabbitmq() { # dir name port
    local dir=$1 name=$2 port=$3
    mkdir -p "$dir"
    printf 'listeners.tcp.local = 127.0.0.1:%s\nloopback_users = none\n' "$port" >"$dir/rabbitmq.conf"
    echo '[].' >"$dir/enabled_plugins"
    if ((EUID == 0)); then
        chown -R rabbitmq: "$dir"
        chmod 755 "$(dirname "$dir")"
    fi
    RABBITMQ_NODENAME=$name RABBITMQ_CONFIG_FILE=$dir/rabbitmq RABBITMQ_DIST_PORT=$((port + 20000)) \
        RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log \
        RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins RABBITMQ_PID_FILE=$dir/rabbit.pid \
        rabbitmq-server -detached >/dev/null 2>&1
    # The node is not reachable at all for its first seconds: await_startup fails at once then.
    for _ in $(seq 1 60); do
        if rabbitmqctl -q -n "$name" await_startup --timeout 5 >/dev/null 2>&1; then
            cat "$dir/rabbit.pid"
            return 0
        fi
        sleep 1
    done
    echo "private rabbitmq $name did not start (logs: $dir/log)" >&2
    return 1
}

stop_private_rabbitmq() { # name
    rabbitmqctl -q -n "$1" stop >/dev/null 2>&1 || true
}
