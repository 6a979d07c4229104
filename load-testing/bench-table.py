#!/usr/bin/env python3
"""The table load-testing/bench.sh ends with, from the JSON each run left in WORK."""
import json
import os
import platform
import sys

work, connections, herd_users = sys.argv[1], sys.argv[2].split(), sys.argv[3]


def run(name):
    path = os.path.join(work, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
print(f"\nherdgate benchmark: {os.cpu_count()} cores ({cpu_model()}), {mem_gib:.0f} GiB, "
      f"{platform.system()} {platform.release()}; herdgate, Redis, RabbitMQ, PostgreSQL and "
      f"the load generator share the machine.")
print(f"\n{'conns':>6}  {'run':<11}{'req/s':>9}{'x ceiling':>11}{'p50 ms':>9}{'p99 ms':>9}"
      f"{'errors':>8}  answers / writer lag")
for c in connections:
    ceiling = run(f"ceiling-{c}")
    for kind in ("ceiling", "herd", "distinct", "seed-style"):
        r = run(f"{kind}-{c}")
        if r is None:
            print(f"{c:>6}  {kind:<11}{'(missing)':>9}")
            continue
        ratio = r["throughput"] / ceiling["throughput"] if ceiling else float("nan")
        answers = " ".join(f"{k}:{v}" for k, v in r.get("statuses", {}).items())
        if r.get("writerLagSecs") is not None:
            answers += f"  lag {r['writerLagSecs']:.1f} s"
        backlog = os.path.join(work, f"{kind}-{c}.backlog.json")
        if kind == "distinct" and os.path.exists(backlog):
            answers += f"  backlog max {json.load(open(backlog))['maxBacklog']:,}"
        lat = r["latencyMs"]
        print(f"{c:>6}  {kind:<11}{r['throughput']:>9.0f}{ratio:>11.2f}{lat['p50']:>9.2f}"
              f"{lat['p99']:>9.2f}{r['errors']:>8}  {answers}")

sellout, seed = run("sellout"), run("seed-style-sellout")
if sellout:
    s = sellout["sellout"]
    held = f"all held after {s['allHeldSecs']:.2f} s" if s.get("allHeldSecs") else \
        f"{s['held']} of {s['seats']} held"
    pg = f", all in PostgreSQL after {s['inPostgresSecs']:.2f} s" if s.get("inPostgresSecs") else ""
    print(f"\nsellout: {s['seats']:,} seats, {sellout['users']:,} users, "
          f"{sellout['connections']} connections: {held}{pg} "
          f"({sellout['requests']:,} requests, p99 {sellout['latencyMs']['p99']:.1f} ms)")
if seed:
    print(f"seed-style: the same {seed['requests']:,} seats, one transaction each, "
          f"in {seed['durationSecs']:.2f} s (p99 {seed['latencyMs']['p99']:.1f} ms)")
if sellout and seed and sellout["sellout"].get("allHeldSecs"):
    print(f"  -> herdgate held every seat in "
          f"{sellout['sellout']['allHeldSecs'] / seed['durationSecs']:.2f}x the seed-style time")


def cpu(name):
    path = os.path.join(work, name + ".cpu.json")
    return json.load(open(path)) if os.path.exists(path) else None


SERVER = ("herdgate", "ceiling", "redis", "rabbitmq", "postgres")
print("\nCPU per answer, summed over the server side (herdgate, Redis, RabbitMQ, PostgreSQL;"
      "\nthe ceiling alone for its row), from /proc before and after each run, the writer's"
      "\ncatch-up included; for distinct every answer is a durable hold:")
print(f"\n{'conns':>6}  {'run':<11}{'answers':>9}{'µs/answer':>11}{'x ceiling':>11}  "
      f"CPU seconds by process (client = the load generator)")
for c in connections:
    base = None
    for kind in ("ceiling", "herd", "distinct", "seed-style"):
        r, u = run(f"{kind}-{c}"), cpu(f"{kind}-{c}")
        if r is None or u is None:
            continue
        secs = u["cpuSecs"]
        # The ceiling touches no store: what they spend meanwhile is not its work.
        counted = ("ceiling",) if kind == "ceiling" else SERVER
        server = sum(v for g, v in secs.items() if g in counted)
        per = server / max(r["requests"], 1) * 1e6
        base = per if kind == "ceiling" else base
        ratio = f"{per / base:>11.2f}" if base else f"{'':>11}"
        groups = " ".join(f"{g} {v:.2f}" for g, v in secs.items())
        print(f"{c:>6}  {kind:<11}{r['requests']:>9}{per:>11.1f}{ratio}  {groups}")
for name in ("sellout", "seed-style-sellout", f"herd-{herd_users}-users"):
    r, u = run(name), cpu(name)
    if r and u:
        secs = u["cpuSecs"]
        server = sum(v for g, v in secs.items() if g in SERVER)
        rss = ", ".join(f"{g} peak RSS {v:.0f} MiB" for g, v in u.get("peakRssMiB", {}).items()
                        if v is not None and g == "herdgate")
        print(f"{name}: {server:.2f} CPU s on the server side "
              f"({server / max(r['requests'], 1) * 1e6:.1f} µs per answer)"
              + (f"; {rss}" if rss else ""))

herd = run(f"herd-{herd_users}-users")
if herd:
    print(f"\nherd: {herd['users']:,} users on one seat, one connection each: "
          + " ".join(f"{k}:{v}" for k, v in herd["statuses"].items())
          + f", p50 {herd['latencyMs']['p50']:.1f} ms, p99 {herd['latencyMs']['p99']:.1f} ms, "
          f"all answered in {herd['durationSecs']:.2f} s; invariants "
          + ("PASS" if herd["passed"] else "FAIL"))
