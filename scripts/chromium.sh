# shellcheck shell=bash
# Headless Chromium for the waiting-room page's browser test
# (tests/it/waiting_room_page.rs): source this after scripts/services.sh, then
# `ensure_chromium`. Debian's `chromium` package, with a font to render text in
# its screenshots; installed with apt-get when missing, never downloaded otherwise.

ensure_chromium() {
    local chromium=${HERDGATE_CHROMIUM:-/usr/bin/chromium}
    if [[ -x $chromium ]]; then
        echo "chromium: $("$chromium" --version 2>/dev/null | head -1), reused"
        return
    fi
    _svc_apt_install chromium fonts-dejavu-core || return
    echo "chromium: $("$chromium" --version 2>/dev/null | head -1)"
}
