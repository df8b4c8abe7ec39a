#!/usr/bin/env python3
"""Resident memory of `vigil run` under load and after it.

Starts VIGIL's `vigil run` on loopback with the given licence and allowed
lateness, creates the bench's orgs through the API, replays a workload
file over TCP with `vigil send` as fast as vigil takes it, and samples the
process's RSS (/proc/PID/status) every 0.2 s: the peak during the load,
then once a minute for --after seconds with no load. Any two binaries can
be compared on the same file in the same session.

    vigil bench --license L --no-syslog-ng --keep --dir /tmp/vb   # writes /tmp/vb/workload.log
    benches/memory.py --vigil target/release/vigil --license L --workload /tmp/vb/workload.log
"""
import argparse, json, os, re, shutil, signal, subprocess, sys, tempfile, threading, time, urllib.request

p = argparse.ArgumentParser()
p.add_argument("--vigil", required=True)
p.add_argument("--license", required=True)
p.add_argument("--workload", required=True)
p.add_argument("--orgs", type=int, default=100)
p.add_argument("--lateness", type=float, default=10.0)
p.add_argument("--after", type=int, default=300, help="seconds to watch after the load")
p.add_argument("--extra", default="", help="more vigil.toml text, e.g. '[storage]\\nnice = 0' (\\n: a new line)")
a = p.parse_args()

def state():
    """The rule engine's state and window keys, when the binary exports them."""
    url = out.get("metrics") or out["api"].rsplit("/api/v1", 1)[0] + "/metrics"
    try:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
    except OSError:
        return ""
    got = {}
    for line in text.splitlines():
        for name in ("vigil_rule_state_bytes", "vigil_rule_window_keys"):
            if line.startswith(name + "{") or line.startswith(name + " "):
                # One sample per worker shard: the process holds their sum.
                got[name] = got.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    if not got:
        return ""
    return (f"; rule state {got.get('vigil_rule_state_bytes', 0) / 2**20:.0f} MiB, "
            f"{got.get('vigil_rule_window_keys', 0):.0f} window keys")

def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None

data = tempfile.mkdtemp(prefix="vigil-memory-")
cfg = os.path.join(data, "vigil.toml")
with open(cfg, "w") as f:
    f.write(f'data_dir = "{data}/d"\nlicense = "{os.path.abspath(a.license)}"\n'
            '[syslog]\naddr = "127.0.0.1:0"\nudp = false\n[api]\naddr = "127.0.0.1:0"\n'
            f'[rules]\nlateness_secs = {a.lateness}\n[orgs]\nrefresh_secs = 0.2\n')
    f.write(a.extra.replace("\\n", "\n") + "\n")
# Older binaries have no [metrics] section; they serve /metrics on the API.
help_text = subprocess.run([a.vigil, "run", "--help"], capture_output=True, text=True).stdout
if "--metrics-addr" in help_text:
    with open(cfg, "a") as f:
        f.write('[metrics]\naddr = "127.0.0.1:0"\n')
token = "vgl_memory_0123456789abcdef"
proc = subprocess.Popen([a.vigil, "run", "--config", cfg], stdout=subprocess.PIPE, text=True,
                        env={**os.environ, "VIGIL_ADMIN_TOKEN": token})
out = {}
wanted = {"tcp", "api", "metrics"} if "--metrics-addr" in help_text else {"tcp", "api"}
while not wanted <= out.keys():
    line = proc.stdout.readline()
    if not line:
        sys.exit("vigil run did not start")
    if line.startswith("syslog: "):
        out["tcp"] = re.search(r"tcp://\S+", line).group(0)
    if line.startswith("api: "):
        out["api"] = line.split()[1]
    if line.startswith("metrics: "):
        out["metrics"] = line.split()[1]
threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
for k in range(1, a.orgs + 1):
    body = json.dumps({"name": f"org-{k:03}", "ip_ranges": [f"10.{k >> 8}.{k & 255}.0/24"]}).encode()
    req = urllib.request.Request(out["api"] + "/orgs", data=body, method="POST",
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()
time.sleep(1)

base = rss_kib(proc.pid)
peak = base
sender = subprocess.Popen([a.vigil, "send", "--to", out["tcp"], "--quiet", "--restamp", a.workload],
                          stdout=subprocess.DEVNULL)
started = time.time()
while sender.poll() is None:
    peak = max(peak, rss_kib(proc.pid) or 0)
    time.sleep(0.2)
sent = time.time() - started
with open(a.workload, "rb") as f:
    lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
# vigil holds the tail of the load for the lateness and the last flush.
until = time.time() + a.lateness + 5
while time.time() < until:
    peak = max(peak, rss_kib(proc.pid) or 0)
    time.sleep(0.2)
print(f"{a.vigil}: RSS before the load {base / 1024:.0f} MiB; peak {peak / 1024:.0f} MiB "
      f"(load sent in {sent:.1f} s: {lines / sent:.0f} EPS)", flush=True)
done = time.time()
next_report = 60
while time.time() - done < a.after:
    time.sleep(1)
    if time.time() - done >= next_report:
        print(f"  {next_report:>4} s after the load: RSS {rss_kib(proc.pid) / 1024:.0f} MiB{state()}", flush=True)
        next_report += 60
proc.send_signal(signal.SIGTERM)
proc.wait(timeout=120)
# The run's data directory holds the whole workload as Parquet: gone with it.
shutil.rmtree(data, ignore_errors=True)
