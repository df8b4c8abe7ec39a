#!/usr/bin/env python3
"""The README's run command, checked: start `vigil run` (the binary the tests
built, or $VIGIL) on
ephemeral loopback ports, create an org, send an SSH brute force with
`vigil send`, expect one incident through the API and the counts in
/metrics, then SIGTERM and expect every accepted event written."""
import json, os, re, signal, subprocess, sys, tempfile, time, urllib.request

VIGIL = os.environ.get("VIGIL", os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "vigil"))
data = tempfile.mkdtemp(prefix="vigil-smoke-")
cfg = os.path.join(data, "vigil.toml")
with open(cfg, "w") as f:
    f.write("[rules]\nlateness_secs = 1.0\n[orgs]\nrefresh_secs = 0.2\n")
proc = subprocess.Popen([VIGIL, "run", "--config", cfg, "--data-dir", os.path.join(data, "d"),
                         "--syslog-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0",
                         "--metrics-addr", "127.0.0.1:0"],
                        stdout=subprocess.PIPE, text=True)
out = {}
deadline = time.time() + 60
while not {"tcp", "api", "token", "metrics"} <= out.keys():
    line = proc.stdout.readline()
    if not line or time.time() > deadline:
        sys.exit("vigil run did not start")
    print(line, end="")
    if line.startswith("syslog: "):
        out["tcp"] = re.search(r"tcp://\S+", line).group(0)
    if line.startswith("api: "):
        out["api"] = line.split()[1]
    if line.startswith("metrics: "):
        out["metrics"] = line.split()[1]
    if line.startswith("admin token"):
        out["token"] = line.split()[-1]

def run(*args):
    subprocess.run([VIGIL, *args, "--data-dir", os.path.join(data, "d")] if args[0] in ("org", "user", "token") else [VIGIL, *args], check=True)

def get(path):
    req = urllib.request.Request(out["api"] + path, headers={"Authorization": "Bearer " + out["token"]})
    return json.load(urllib.request.urlopen(req, timeout=30))

run("org", "create", "Acme", "--ip-range", "10.1.0.0/16")
metrics_url = out["metrics"]
while "vigil_orgs{node=\"node-1\"} 3" not in urllib.request.urlopen(metrics_url).read().decode():
    if time.time() > deadline:
        sys.exit("orgs not reloaded")
    time.sleep(0.2)
stamp = time.strftime("%b %e %H:%M:%S", time.gmtime())
attack = os.path.join(data, "attack.log")
with open(attack, "w") as f:
    for i in range(6):
        f.write(f"<38>{stamp} 10.1.0.5 sshd[2311]: Failed password for root from 203.0.113.45 port 4100{i} ssh2\n")
run("send", "--to", out["tcp"], "--quiet", attack)
while True:
    items = get("/incidents")["items"]
    if items:
        break
    if time.time() > deadline:
        sys.exit("no incident")
    time.sleep(0.2)
assert items[0]["org"] == "Acme" and items[0]["rule"] == "ssh-brute-force", items
metrics = urllib.request.urlopen(metrics_url).read().decode()
assert 'vigil_events_accepted_total{node="node-1",org_id="3",org="Acme"} 6' in metrics, metrics
proc.send_signal(signal.SIGTERM)
rest = proc.stdout.read()
print(rest, end="")
assert proc.wait(timeout=60) == 0
assert "6 events accepted, 6 written to Parquet" in rest, rest
print("smoke ok:", items[0]["title"])
