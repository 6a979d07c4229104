#!/usr/bin/env python3
"""The table load-testing/bench-room.sh ends with, from the JSON each run left in WORK."""
import json
import os
import platform
import sys

work = sys.argv[1]
SERVER = ("herdgate", "ceiling", "redis", "rabbitmq", "postgres")


def load(name, suffix=".json"):
    path = os.path.join(work, name + suffix)
    return json.load(open(path)) if os.path.exists(path) else None


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


print(f"\nwaiting-room benchmark: {os.cpu_count()} cores ({cpu_model()}); herdgate, Redis, "
      f"RabbitMQ, PostgreSQL and the load generator share the machine.")
ceiling = load("ceiling")
print(f"\n{'run':<9}{'conns':>6}{'req/s':>9}{'x ceiling':>11}{'p50 ms':>9}{'p99 ms':>9}"
      f"{'errors':>8}{'µs CPU/answer':>15}  answers")
for name in ("ceiling", "join", "look"):
    r, u = load(name), load(name, ".cpu.json")
    if r is None:
        continue
    ratio = r["throughput"] / ceiling["throughput"] if ceiling else float("nan")
    counted = ("ceiling",) if name == "ceiling" else SERVER
    per = (sum(v for g, v in u["cpuSecs"].items() if g in counted) / max(r["requests"], 1) * 1e6
           if u else float("nan"))
    answers = " ".join(f"{k}:{v}" for k, v in r.get("statuses", {}).items())
    lat = r["latencyMs"]
    print(f"{name:<9}{r['connections']:>6}{r['throughput']:>9.0f}{ratio:>11.2f}{lat['p50']:>9.2f}"
          f"{lat['p99']:>9.2f}{r['errors']:>8}{per:>15.1f}  {answers}")

room = load("room")
if room:
    w = room["waitingRoom"]
    print(f"\nroom: event {room['event']}, {room['users']:,} buyers over the run, set to "
          f"{w['targetRate']:g} a second, at most {w['maxActive']:,} admitted at once")
    win = w.get("window")
    if win:
        print(f"  admitted {win['admitted']:,} in {win['toSecs'] - win['fromSecs']:.1f} s with "
              f"buyers waiting: {win['rate']:.2f} a second, {100 * win['ratio']:.1f}% of the set "
              f"rate (between one-second samples: {win['perSecondMin']:.0f} to "
              f"{win['perSecondMax']:.0f})")
    d = w.get("draw")
    draw = "no draw checked"
    if d:
        draw = (f"draw: {d['preQueue']:,} joined before the start, {d['placed']:,} places read "
                f"after it, {'all in' if d['inOrder'] else 'NOT in'} the order of "
                f"SHA-1(seed:userId) for the revealed seed; SHA-256(seed) "
                f"{'is' if d['commitmentKept'] else 'is NOT'} the commitment")
    print(f"  fairness: {w['outOfOrder']} admissions out of order; {draw}")
    b = w["buyers"]
    print(f"  buyers: {b['joined']:,} joined, {b['admitted']:,} admitted, {b['booked']:,} held a "
          f"seat, {b['confirmed']:,} confirmed; walked away {b['walkedInLine']:,} in line and "
          f"{b['walkedAdmitted']:,} admitted; {b['lost']} lost their place, {b['noSeat']} found "
          f"no seat")
    lat = room["latencyMs"]
    print(f"  {room['requests']:,} requests, {room['errors']} errors, p50 {lat['p50']:.2f} ms, "
          f"p99 {lat['p99']:.2f} ms; invariants {'PASS' if room['passed'] else 'FAIL'}; "
          f"picture: {os.path.join(work, 'room.svg')}")
