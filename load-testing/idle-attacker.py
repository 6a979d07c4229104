#!/usr/bin/env python3
"""An attacker holding N idle TCP connections to HOST:PORT: it sends nothing, and
reopens each connection the server closes, until killed (SIGTERM) or DURATION
seconds pass. Prints, at exit, how many it opened and how many the server closed.

On loopback, each connection comes from one of 200 source addresses
(127.0.0.2 and on): from one address, reopened connections draw ports still in
TIME-WAIT from the last ones, and each such connect stalls a second.

    python3 load-testing/idle-attacker.py 127.0.0.1 8080 10000 [duration]
"""
import selectors
import signal
import socket
import sys
import time

host, port, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
until = time.monotonic() + float(sys.argv[4]) if len(sys.argv) > 4 else float("inf")
sel = selectors.DefaultSelector()
opened = closed = failed = 0
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def open_one():
    global opened, failed
    source = (f"127.0.0.{2 + opened % 200}", 0) if host.startswith("127.") else None
    try:
        s = socket.create_connection((host, port), timeout=5, source_address=source)
    except OSError:
        failed += 1
        return
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    opened += 1


while len(sel.get_map()) < want and not stop:
    open_one()
print(f"attacker: {len(sel.get_map())} connections open", flush=True)
while not stop and time.monotonic() < until:
    for key, _ in sel.select(timeout=0.5):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if data:
            continue  # a refusal's 503: its close comes next
        sel.unregister(s)
        s.close()
        closed += 1
    while len(sel.get_map()) < want and not stop:
        open_one()
print(f"attacker: opened {opened}, closed by the server {closed}, failed to connect {failed}")
