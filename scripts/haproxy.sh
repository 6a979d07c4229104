# shellcheck shell=bash
# HAProxy, the load balancer in front of several gateways (deploy/haproxy/haproxy.cfg),
# for the rolling-restart test (tests/it/balancer.rs): source this after
# scripts/services.sh, then `ensure_haproxy`. Debian's `haproxy` package, installed with
# apt-get when missing. Only the binary is used: the package's own service is never
# started (services.sh's policy-rc.d keeps it off), each test runs a private haproxy.

ensure_haproxy() {
    [[ :$PATH: == *:/usr/sbin:* ]] || PATH=$PATH:/usr/sbin
    if command -v haproxy >/dev/null; then
        echo "haproxy: $(haproxy -v 2>/dev/null | head -1), reused"
        return
    fi
    _svc_apt_install haproxy || return
    echo "haproxy: $(haproxy -v 2>/dev/null | head -1)"
}
