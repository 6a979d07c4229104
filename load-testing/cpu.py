#!/usr/bin/env python3
"""CPU seconds that a command's run cost each process group, from /proc.

    load-testing/cpu.py [--json OUT] [--from TEXT] [--until TEXT] GROUP=PID [GROUP=PID ...] -- command [args...]

Runs the command (its output passes through), and reads utime+stime of every
group before and after it. A group is the process PID and all its descendants,
plus what the dead ones among them cost (cutime/cstime of their parent): a
PostgreSQL backend that exits during the run still counts. The command itself is
the group "client" (its own rusage). Prints one line to standard error and,
with --json, writes {"cpuSecs": {group: seconds}, "wallSecs": s,
"peakRssMiB": {group: MiB of its root process}} to OUT.

With --from, the "before" reading is taken when the command first writes a line
containing TEXT to standard error (herdgate load's "load: <scenario> against"
line, so its set-up queries do not count); with --until, the "after" reading is
taken at the first line containing that TEXT (its "load: drained" line, so its
audit of the stores does not count), or at the exit if the line never comes.

CPU seconds per unit of work repeat within 10-20% on a shared, noisy machine
where requests per second move 2x, so benchmarks quote them beside req/s.
"""
import json
import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def stat(pid):
    """(ppid, own+reaped-children CPU ticks) of one process, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = data[data.rindex(")") + 2:].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, utime + stime + cutime + cstime


def tree_ticks(roots):
    """Ticks per group: each root with all its live descendants."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = stat(int(entry))
            if s:
                procs[int(entry)] = s
    children = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    totals = {}
    for group, root in roots.items():
        seen, stack, ticks = set(), [root], 0
        while stack:
            pid = stack.pop()
            if pid in seen or pid not in procs:
                continue
            seen.add(pid)
            ticks += procs[pid][1]
            stack.extend(children.get(pid, []))
        totals[group] = ticks
    return totals


def peak_rss_mib(pid):
    """The process's peak resident set (VmHWM), in MiB; None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main(argv):
    options = {"--json": None, "--from": None, "--until": None}
    while argv[:1] and argv[0] in options:
        options[argv[0]] = argv[1]
        argv = argv[2:]
    out, since, until = options["--json"], options["--from"], options["--until"]
    if "--" not in argv:
        sys.exit(__doc__)
    split = argv.index("--")
    roots = {}
    for spec in argv[:split]:
        group, _, pid = spec.partition("=")
        if not pid.isdigit():
            sys.exit(f"cpu.py: {spec!r} is not GROUP=PID")
        roots[group] = int(pid)
    command = argv[split + 1:]
    before, started = tree_ticks(roots), time.monotonic()
    after = wall = None
    if since is None and until is None:
        child = subprocess.Popen(command)
    else:
        child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, bufsize=1)
        waiting = since is not None
        for line in child.stderr:
            sys.stderr.write(line)
            if waiting and since in line:
                before, started, waiting = tree_ticks(roots), time.monotonic(), False
            elif not waiting and after is None and until and until in line:
                after, wall = tree_ticks(roots), time.monotonic() - started
    _, status, usage = os.wait4(child.pid, 0)
    if after is None:
        after, wall = tree_ticks(roots), time.monotonic() - started
    cpu = {g: (after[g] - before[g]) / TICK for g in roots}
    cpu["client"] = usage.ru_utime + usage.ru_stime
    peak = {g: peak_rss_mib(pid) for g, pid in roots.items()}
    print("cpu: " + ", ".join(f"{g} {s:.2f} s" for g, s in cpu.items())
          + f" in {wall:.1f} s", file=sys.stderr)
    if out:
        with open(out, "w") as f:
            json.dump({"cpuSecs": cpu, "wallSecs": wall, "peakRssMiB": peak}, f)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main(sys.argv[1:])
