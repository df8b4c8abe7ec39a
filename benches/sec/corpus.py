"""The corpus of the rules-versus-SEC benchmark (benches/sec/run.sh):
sshd failures (2 % from 200 brute-forcing addresses, 38 % scattered),
accepted logins and firewall lines, 1,000 lines per second of log time.

Usage: corpus.py LINES > FILE
"""
import random
import sys

random.seed(7)
lines = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
out = sys.stdout
hosts = [f"srv-{i:02d}" for i in range(20)]
for n in range(lines):
    t = n // 1000
    h, m, s = 10 + t // 3600, (t // 60) % 60, t % 60
    ts = f"Nov 22 {h:02d}:{m:02d}:{s:02d}"
    host = random.choice(hosts)
    r = n % 100
    if r < 2:
        ip = f"198.51.100.{(n // 100) % 200}"
        line = f"{ts} {host} sshd[{1000 + n % 5000}]: Failed password for root from {ip} port {40000 + n % 20000} ssh2"
    elif r < 40:
        ip = f"10.{n % 250}.{(n // 250) % 250}.{(n // 7) % 250}"
        line = f"{ts} {host} sshd[{1000 + n % 5000}]: Failed password for invalid user u{n % 977} from {ip} port {40000 + n % 20000} ssh2"
    elif r < 60:
        ip = f"172.16.{n % 250}.{(n // 3) % 250}"
        line = f"{ts} {host} sshd[{1000 + n % 5000}]: Accepted publickey for deploy from {ip} port {40000 + n % 20000} ssh2"
    else:
        line = f"{ts} {host} kernel: [UFW BLOCK] IN=eth0 OUT= SRC=203.0.113.{n % 250} DST=10.0.0.1 PROTO=TCP SPT={n % 60000} DPT=443"
    out.write(line + "\n")
