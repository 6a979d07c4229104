# shellcheck shell=bash disable=SC2016
# herdgate's local services on their default ports: source this, then `ensure_services
# [aof] [management]`. Each ensure_* leaves a running service alone (never stops or restarts
# it), starts a stopped one, installs a missing one, or prints ERROR and returns non-zero.

_svc_apt_updated=0
_svc_apt_log=${TMPDIR:-/tmp}/herdgate-apt.log
# The server tools (rabbitmq-*, pg_*) live in /usr/sbin, which a user's PATH may lack.
[[ :$PATH: == *:/usr/sbin:* ]] || PATH=$PATH:/usr/sbin

_svc_err() { printf 'ERROR: %s\n' "$*" >&2; return 1; }

# Runs a command as root: through sudo when we are not root and sudo exists.
_svc_root() { if ((EUID)) && command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

# True when something accepts TCP connections on 127.0.0.1:PORT (bash's /dev/tcp).
_svc_port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null; }

# _svc_wait WHAT SECONDS CMD...: retries CMD every second, for at most SECONDS.
_svc_wait() {
    local what=$1 secs=$2 deadline=$((SECONDS + $2)) && shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { _svc_err "$what did not become ready within ${secs}s"; return; }
        sleep 1
    done
}

# _svc_elsewhere NAME VAR PORT: true, saying so, when $VAR is a URL off this machine's PORT.
_svc_elsewhere() {
    [[ -n ${!2:-} && ${!2} =~ ^[a-z0-9+]+://([^@/]*@)?(\[[^]]*\]|[^:/?]*)(:([0-9]+))? ]] || return 1
    # Port first: matching the host with =~ overwrites BASH_REMATCH.
    [[ ${BASH_REMATCH[4]:-$3} == "$3" && ${BASH_REMATCH[2],,} =~ ^(localhost|127\.0\.0\.1|\[::1\])?$ ]] && return 1
    echo "$1: $2 is not local :$3, left alone"
}

# Installs Debian packages, apt's output going to $_svc_apt_log; updates once per shell.
_svc_apt_install() {
    command -v apt-get >/dev/null || { _svc_err "no apt-get here: install $* by hand"; return; }
    echo "installing $* (apt-get, log: $_svc_apt_log)"
    # Packages start their service on install with Debian's settings (Redis without AOF):
    # a policy-rc.d (unless the machine has one) forbids that, as we start them ourselves.
    _svc_root bash -c '{ (($0)) || apt-get update -q; } &&
        { [[ -e /usr/sbin/policy-rc.d ]] || { trap "rm -f /usr/sbin/policy-rc.d" EXIT
            printf "#!/bin/sh\nexit 101\n" >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; }; } &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"' \
        "$_svc_apt_updated" "$@" >>"$_svc_apt_log" 2>&1 ||
        { tail -n 20 "$_svc_apt_log" >&2; _svc_err "apt-get failed installing $* (log above)"; return; }
    _svc_apt_updated=1
}

# _svc_have WHAT PKG...: installs PKGs unless WHAT (command or path glob) exists; sets $how.
_svc_have() {
    how=started && { [[ -n $(compgen -G "$1") ]] || command -v "$1" >/dev/null; } && return 0
    shift && _svc_apt_install "$@" && how="installed and started"
}

ensure_postgres() {
    local how ver alter="ALTER USER postgres PASSWORD 'postgres'"
    _svc_elsewhere postgres DATABASE_URL 5432 && return 0
    if _svc_port_open 5432; then
        how="already running on :5432"
    else
        _svc_have '/usr/lib/postgresql/*/bin/postgres' postgresql postgresql-client || return
        # The newest configured version; with no cluster, the newest installed server's.
        ver=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n1)
        if [[ -z $ver || ! -e /etc/postgresql/$ver/main/postgresql.conf ]]; then
            ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n1)
            _svc_root pg_createcluster "$ver" main || { _svc_err "pg_createcluster $ver main failed"; return; }
        fi
        _svc_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start ||
            { _svc_err "postgres $ver/main did not start (see /var/log/postgresql/)"; return; }
    fi
    command -v psql >/dev/null || _svc_apt_install postgresql-client || return
    _svc_wait "postgres on :5432" 30 pg_isready -q -h 127.0.0.1 -p 5432 || return
    echo "postgres: $how"
    # A fresh Debian cluster refuses password-less TCP logins, and herdgate logs in as
    # postgres/postgres: set that password on a server we started, else only say how.
    psql postgres://postgres:postgres@127.0.0.1:5432/postgres -qc 'select 1' &>/dev/null && return 0
    if [[ $how != already* ]]; then
        # cd /: the postgres user may not be allowed into the caller's directory.
        (cd / && _svc_root runuser -u postgres -- psql -qc "$alter") || _svc_err "could not set a password"
    else
        printf '%s\n' "postgres: WARNING: cannot log in as postgres/postgres over TCP; to allow it:" \
            "  su postgres -c \"psql -c \\\"$alter\\\"\"" >&2
    fi
}

# ensure_redis [aof]: with aof, a Redis we start keeps an append-only file (fsync every
# second), so acknowledged holds survive a Redis crash. Tests run without it. redis-cli
# is given REDIS_URL (-u), which may carry a password and a database number.
ensure_redis() {
    local url=${REDIS_URL:-redis://127.0.0.1:6379/0} aof=${1:-} how args appendonly
    _svc_elsewhere redis REDIS_URL 6379 && return 0
    if _svc_port_open 6379; then
        how="already running on :6379"
        command -v redis-cli >/dev/null || _svc_apt_install redis-tools || return
    else
        _svc_have redis-server redis-server redis-tools || return
        args=(--appendonly no --logfile /var/log/redis/ci.log)
        if [[ $aof == aof ]]; then
            args=(--appendonly yes --appendfsync everysec --logfile /var/log/redis/herdgate.log)
            how+=" with AOF"
        fi
        _svc_root mkdir -p /var/lib/redis /var/log/redis || return
        _svc_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
            --dir /var/lib/redis "${args[@]}" || { _svc_err "redis-server did not start"; return; }
    fi
    _svc_wait "redis on :6379" 15 eval '[[ $(redis-cli -u "$url" ping) == PONG ]]' || return
    echo "redis: $how"
    [[ $aof == aof && $how == already* ]] || return 0
    appendonly=$(redis-cli -u "$url" config get appendonly 2>/dev/null | sed -n 2p)
    [[ $appendonly == yes ]] && return 0
    printf '%s\n' "redis: WARNING: AOF is off (appendonly ${appendonly:-unreadable}), so holds do not" \
        "  survive a Redis crash. Left as is; to turn it on: redis-cli config set appendonly yes" >&2
}

# ensure_rabbitmq [management]: management also tries to enable the web UI on :15672.
ensure_rabbitmq() {
    local how
    _svc_elsewhere rabbitmq AMQP_URL 5672 && return 0
    if _svc_port_open 5672; then
        how="already running on :5672"
    else
        _svc_have rabbitmq-server rabbitmq-server || return
        _svc_root rabbitmq-server -detached || { _svc_err "rabbitmq-server -detached failed"; return; }
        # Erlang boots slowly. The AMQP port opens once the broker is up; the ping (as
        # root, who can read the Erlang cookie) confirms that the node answers.
        _svc_wait "rabbitmq on :5672 (log: /var/log/rabbitmq/)" 60 eval '_svc_port_open 5672 &&
            { ! command -v rabbitmq-diagnostics || _svc_root rabbitmq-diagnostics -q ping; }' || return
    fi
    echo "rabbitmq: $how"
    [[ ${1:-} == management ]] && ! _svc_port_open 15672 || return 0
    # Best effort: the web UI is a convenience, never a reason to fail.
    if { command -v rabbitmq-plugins && _svc_root rabbitmq-plugins -q enable rabbitmq_management &&
        _svc_wait "rabbitmq management" 20 _svc_port_open 15672; } &>/dev/null; then
        echo "rabbitmq: management plugin enabled on :15672"
    else
        echo "rabbitmq: note: could not enable the management plugin (continuing)"
    fi
}

# ensure_services [aof] [management]: all three; aof is for Redis, management for RabbitMQ.
ensure_services() {
    local aof='' mgmt=''
    [[ " $* " == *" aof "* ]] && aof=aof
    [[ " $* " == *" management "* ]] && mgmt=management
    ensure_postgres && ensure_redis "$aof" && ensure_rabbitmq "$mgmt"
}

# What building herdgate needs beside Rust: a C compiler and make, for jemalloc (its
# allocator). rustup needs a linker, so cc is usually there; make may not be.
ensure_build_tools() {
    local missing=()
    command -v cc >/dev/null || missing+=(gcc libc6-dev)
    command -v make >/dev/null || missing+=(make)
    ((${#missing[@]} == 0)) || _svc_apt_install "${missing[@]}"
}
