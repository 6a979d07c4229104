#!/usr/bin/env python3
"""The durable backlog of a running herdgate serve, sampled until stopped.

    load-testing/backlog.py URL OUT &   ...   kill -TERM $!

Every 0.5 s it reads URL/metrics: holds placed (herdgate_holds_total
{outcome="placed"}) less hold events the writer has settled
(herdgate_writer_events_total) is what waits between the answer and
PostgreSQL: in the outbox, in RabbitMQ, or in the writer's hands. On SIGTERM it
writes {"maxBacklog": n, "samples": k} to OUT. Meaningful for runs that only
place holds (distinct, sellout), where every hold is one event.
"""
import json
import re
import signal
import sys
import time
import urllib.request

url, out = sys.argv[1].rstrip("/") + "/metrics", sys.argv[2]
PLACED = re.compile(r'^herdgate_holds_total\{outcome="placed"\} (\S+)$', re.M)
SETTLED = re.compile(r"^herdgate_writer_events_total (\S+)$", re.M)
highest, samples = 0, 0


def finish(*_):
    with open(out, "w") as f:
        json.dump({"maxBacklog": highest, "samples": samples}, f)
    sys.exit(0)


signal.signal(signal.SIGTERM, finish)
while True:
    try:
        text = urllib.request.urlopen(url, timeout=2).read().decode()
        placed, settled = PLACED.search(text), SETTLED.search(text)
        backlog = float(placed.group(1) if placed else 0) - float(settled.group(1) if settled else 0)
        highest, samples = max(highest, int(backlog)), samples + 1
    except OSError:
        pass
    time.sleep(0.5)
