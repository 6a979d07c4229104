# shellcheck shell=bash
# schemathesis for the contract test (tests/it/schemathesis.rs): source this after
# scripts/services.sh, then `ensure_schemathesis`. Installs the version pinned in scripts/schemathesis.txt (its
# dependencies pinned by scripts/schemathesis.lock) from PyPI into .venv-schemathesis at
# the repository root, and reuses that venv while it holds exactly these pins.

_st_dir=.venv-schemathesis

_st_err() { printf 'ERROR: %s\n' "$*" >&2; return 1; }

# The pins, as one line: what the venv was built from.
_st_pins() { cat scripts/schemathesis.txt scripts/schemathesis.lock | sha256sum | cut -d' ' -f1; }

ensure_schemathesis() {
    local want log=${TMPDIR:-/tmp}/herdgate-schemathesis-pip.log
    want=$(_st_pins)
    if [[ -x $_st_dir/bin/schemathesis && $(cat "$_st_dir/pins" 2>/dev/null) == "$want" ]] &&
        "$_st_dir/bin/schemathesis" --version >/dev/null 2>&1; then
        echo "schemathesis: $("$_st_dir/bin/schemathesis" --version) in $_st_dir, reused"
        return
    fi
    # A fresh Debian has neither python3 nor its venv module (services.sh installs them).
    if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        _svc_apt_install python3 python3-venv || return
    fi
    echo "schemathesis: installing $(grep -v '^#' scripts/schemathesis.txt) into $_st_dir (pip log: $log)"
    rm -rf "$_st_dir"
    python3 -m venv "$_st_dir" || { _st_err "python3 -m venv failed"; return; }
    "$_st_dir/bin/pip" install --disable-pip-version-check -q \
        -r scripts/schemathesis.txt -c scripts/schemathesis.lock >"$log" 2>&1 ||
        { tail -20 "$log" >&2; _st_err "pip could not install schemathesis"; return; }
    echo "$want" >"$_st_dir/pins"
    echo "schemathesis: $("$_st_dir/bin/schemathesis" --version)"
}
