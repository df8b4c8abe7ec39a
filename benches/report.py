#!/usr/bin/env python3
"""Prints the last `cargo bench --bench parsers` run as lines/s and as a
ratio to the same run's memchr line-splitting baseline."""
import json, os, sys

root = os.path.join(os.path.dirname(__file__), "..", "target", "criterion")
groups = {"rfc3164": "event", "rfc5424": "event", "cef": "event", "sshd": "classify"}
print("%-10s %-20s %14s %14s %10s" % ("corpus", "benchmark", "lines/s", "memchr lines/s", "ratio"))
for group in ["rfc3164", "rfc5424", "cef", "sshd"]:
    gdir = os.path.join(root, group)
    if not os.path.isdir(gdir):
        continue
    def rate(bench):
        path = os.path.join(gdir, bench, "new")
        est = json.load(open(os.path.join(path, "estimates.json")))
        bm = json.load(open(os.path.join(path, "benchmark.json")))
        n = bm["throughput"]["Elements"]
        return n / (est["mean"]["point_estimate"] / 1e9)
    base = rate("memchr_lines")
    for bench in sorted(os.listdir(gdir)):
        if bench in ("memchr_lines", "report") or not os.path.isdir(os.path.join(gdir, bench, "new")):
            continue
        r = rate(bench)
        print("%-10s %-20s %14.0f %14.0f %9.4f" % (group, bench, r, base, r / base))
