#!/usr/bin/env python3
"""pgbench's per-transaction logs (--log) as the JSON fields `herdgate load --json`
prints: requests, durationSecs, throughput, latencyMs {p50, p90, p99, p99.9, max}.

Log lines are `client transaction latency_us script epoch_s epoch_us`, written
when each transaction ends."""
import json
import sys

latencies, starts, ends = [], [], []
for path in sys.argv[1:]:
    with open(path) as log:
        for line in log:
            fields = line.split()
            latency_us = int(fields[2])
            end = int(fields[4]) + int(fields[5]) / 1e6
            latencies.append(latency_us)
            ends.append(end)
            starts.append(end - latency_us / 1e6)
latencies.sort()
n = len(latencies)


def ms(q):
    return latencies[min(n - 1, int(q * n))] / 1000 if n else 0.0


duration = max(ends) - min(starts) if n else 0.0
print(json.dumps({
    "requests": n,
    "durationSecs": duration,
    "throughput": n / duration if duration else 0.0,
    "errors": 0,
    "latencyMs": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p99.9": ms(0.999),
                  "max": latencies[-1] / 1000 if n else 0.0},
}))
