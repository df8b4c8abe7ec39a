#!/usr/bin/env python3
"""Writes the benchmark corpora (deterministic; re-run to regenerate).

Each file has N lines shaped like real traffic: BSD syslog from Linux hosts
(sshd, sudo, systemd, cron, haproxy, kernel/UFW), RFC 5424 from applications
with structured data, CEF from a firewall with ~12 extensions, and an sshd mix
in the proportions seen in internet-facing auth logs. Addresses are from the
documentation ranges.
"""
import random, sys

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
rng = random.Random(20261122)
HOSTS = ["web-%02d" % i for i in range(1, 13)] + ["db-01", "db-02", "lb-1", "lb-2", "fw-edge", "bastion"]
USERS = ["root", "admin", "alice", "bob", "deploy", "oracle", "test", "ubuntu", "git", "postgres", "guest", "user1"]
MON = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

def ip(private=False):
    if private:
        return "10.%d.%d.%d" % (rng.randrange(256), rng.randrange(256), rng.randrange(1, 255))
    net = rng.choice(["192.0.2", "198.51.100", "203.0.113"])
    return "%s.%d" % (net, rng.randrange(1, 255))

def bsd_time(i):
    s = 36000 + i
    return "Nov %2d %02d:%02d:%02d" % (22, (s // 3600) % 24, (s // 60) % 60, s % 60)

def sshd_message():
    r = rng.random()
    u, a, p = rng.choice(USERS), ip(), rng.randrange(1024, 65535)
    if r < 0.40:
        return "Failed password for %s from %s port %d ssh2" % (u, a, p)
    if r < 0.50:
        return "Failed password for invalid user %s from %s port %d ssh2" % (u, a, p)
    if r < 0.62:
        return "Invalid user %s from %s port %d" % (u, a, p)
    if r < 0.67:
        return "Accepted publickey for %s from %s port %d ssh2: RSA SHA256:Yf0tB0tJcZrtxYjZs7Wd8u2kYQb5hP1nq0Qe" % (u, a, p)
    if r < 0.77:
        return "Disconnected from authenticating user %s %s port %d [preauth]" % (u, a, p)
    if r < 0.85:
        return "Connection closed by %s port %d [preauth]" % (a, p)
    if r < 0.95:
        return "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=%s  user=%s" % (a, u)
    return "Received disconnect from %s port %d:11: Bye Bye [preauth]" % (a, p)

def line_3164(i):
    h = rng.choice(HOSTS)
    r = rng.random()
    pid = rng.randrange(100, 40000)
    if r < 0.45:
        return "<38>%s %s sshd[%d]: %s" % (bsd_time(i), h, pid, sshd_message())
    if r < 0.55:
        u = rng.choice(USERS)
        return "<85>%s %s sudo:   %s : TTY=pts/%d ; PWD=/home/%s ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx" % (bsd_time(i), h, u, rng.randrange(9), u)
    if r < 0.70:
        return "<30>%s %s systemd[1]: Started Session %d of User %s." % (bsd_time(i), h, rng.randrange(1, 99999), rng.choice(USERS))
    if r < 0.78:
        return "<78>%s %s CRON[%d]: (root) CMD (/usr/local/bin/backup.sh --incremental)" % (bsd_time(i), h, pid)
    if r < 0.90:
        return ('<134>%s %s haproxy[%d]: %s:%d [22/Nov/2026:10:15:44.123] fe_https be_app/web-07 0/0/1/12/13 200 5123 - - ---- 12/12/0/0/0 0/0 "GET /api/v1/items?page=%d HTTP/1.1"'
                % (bsd_time(i), h, pid, ip(), rng.randrange(1024, 65535), rng.randrange(100)))
    return ("<4>%s %s kernel: [%d.%06d] [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=%s DST=%s LEN=44 TOS=0x00 PREC=0x00 TTL=243 ID=%d PROTO=TCP SPT=%d DPT=%d WINDOW=1024 RES=0x00 SYN URGP=0"
            % (bsd_time(i), h, rng.randrange(10**6), rng.randrange(10**6), ip(), ip(True), rng.randrange(65535), rng.randrange(1024, 65535), rng.choice([22, 23, 80, 443, 3389, 8080])))

def line_5424(i):
    h = rng.choice(HOSTS) + ".example.com"
    t = "2026-11-22T%02d:%02d:%02d.%06d+01:00" % (10 + (i // 3600) % 10, (i // 60) % 60, i % 60, rng.randrange(10**6))
    r = rng.random()
    if r < 0.4:
        return ('<165>1 %s %s nginx %d ACCESS [meta sequenceId="%d" sysUpTime="%d"][origin ip="%s" software="nginx"] %s - - "GET /index.html HTTP/1.1" 200 %d'
                % (t, h, rng.randrange(100, 9999), i, rng.randrange(10**6), ip(True), ip(), rng.randrange(100, 90000)))
    if r < 0.7:
        return "<134>1 %s %s postgres %d - - LOG:  duration: %d.%03d ms  statement: SELECT id, name FROM items WHERE owner = $1" % (t, h, rng.randrange(100, 9999), rng.randrange(200), rng.randrange(1000))
    if r < 0.85:
        return '<86>1 %s %s app %d AUTH [auth@32473 user="%s" method="password" result="failure"] login failed for %s from %s' % (t, h, rng.randrange(100, 9999), rng.choice(USERS), rng.choice(USERS), ip())
    return "<38>1 %s %s sshd %d - - %s" % (t, h, rng.randrange(100, 40000), sshd_message())

def line_cef(i):
    ext = ("rt=%d src=%s spt=%d dst=%s dpt=%d proto=6 act=%s suser=%s cs1Label=policyname cs1=allow-web deviceInboundInterface=port1 deviceOutboundInterface=wan1 in=%d out=%d"
           % (1763806542000 + i * 37, ip(True), rng.randrange(1024, 65535), ip(), rng.choice([80, 443, 22, 53]), rng.choice(["close", "deny", "accept"]),
              rng.choice(USERS), rng.randrange(10**5), rng.randrange(10**6)))
    cef = "CEF:0|Fortinet|FortiGate|7.2.5|0000000013|traffic:forward %s|3|%s" % (rng.choice(["close", "deny"]), ext)
    if i % 2:
        return "<134>%s fw-edge %s" % (bsd_time(i), cef)
    return cef

def line_sshd(i):
    return "%s bastion sshd[%d]: %s" % (bsd_time(i), rng.randrange(100, 40000), sshd_message())

for name, fn in [("rfc3164", line_3164), ("rfc5424", line_5424), ("cef", line_cef), ("sshd", line_sshd)]:
    with open("%s.log" % name, "w") as f:
        for i in range(N):
            f.write(fn(i) + "\n")
