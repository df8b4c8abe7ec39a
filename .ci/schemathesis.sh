#!/usr/bin/env bash
# Holds the incident API to its OpenAPI document: starts the real debug
# binary (`vigil supervisor`, which serves the same /api/v1 router that
# `vigil run` mounts) on an ephemeral loopback port with a throw-away data
# directory, gives it content (devices heard by `vigil run`, orgs, users,
# teams, roles, incidents, alerts, comments, a node, a connector and a
# policy with its deliveries), and runs schemathesis against it with every check. Any
# failure fails the script.
#
# Expects the debug binary to exist (.ci/run calls this after its test
# step). Knobs: VIGIL_BIN (default $CARGO_TARGET_DIR/debug/vigil or
# target/debug/vigil), SCHEMATHESIS_EXAMPLES (per operation, default 30),
# SCHEMATHESIS_SEED (default 1, so a CI failure reproduces),
# SCHEMATHESIS_VENV (where the pinned schemathesis is installed).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
bin="${VIGIL_BIN:-${CARGO_TARGET_DIR:-target}/debug/vigil}"
examples="${SCHEMATHESIS_EXAMPLES:-100}"
seed="${SCHEMATHESIS_SEED:-1}"
venv="${SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/vigil-schemathesis-$SCHEMATHESIS_VERSION}"

if [ ! -x "$bin" ]; then
  echo "schemathesis: no binary at $bin (build it first: cargo build)" >&2
  exit 2
fi
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

tmp="$(mktemp -d -t vigil-schemathesis-XXXXXX)"
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

token="vgl_schemathesis_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"

# Devices come only from logs: `vigil run` on the same data directory hears
# a few relayed hosts, merges them into the inventory and stops, so the
# device endpoints have ids that exist.
printf '[devices]\nreport_secs = 1.0\n' >"$tmp/run.toml"
VIGIL_ADMIN_TOKEN="$token" "$bin" run --config "$tmp/run.toml" --data-dir "$tmp/data" --syslog-addr 127.0.0.1:0 \
  --api-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 >"$tmp/run.log" 2>&1 &
run_pid=$!
syslog=""
for _ in $(seq 1 300); do
  syslog="$(sed -n 's/^syslog: .*\(tcp:[^ ]*\).*/\1/p' "$tmp/run.log")"
  [ -n "$syslog" ] && break
  sleep 0.1
done
if [ -z "$syslog" ]; then
  cat "$tmp/run.log" >&2
  echo "schemathesis: vigil run did not start" >&2
  exit 1
fi
for host in fw-1 fw-2 web-01 10.1.0.7; do
  echo "<38>Dec  2 10:15:42 $host sshd[1]: Accepted password for bob from 192.0.2.9 port 4000 ssh2"
done >"$tmp/devices.log"
"$bin" send --to "$syslog" --quiet "$tmp/devices.log" >/dev/null
sleep 2
kill -TERM "$run_pid"
wait "$run_pid"

VIGIL_ADMIN_TOKEN="$token" "$bin" supervisor --data-dir "$tmp/data" --api-addr 127.0.0.1:0 >"$tmp/server.log" 2>&1 &
server=$!
api=""
for _ in $(seq 1 300); do
  api="$(sed -n 's/^api: \(http:[^ ]*\).*/\1/p' "$tmp/server.log")"
  [ -n "$api" ] && break
  if ! kill -0 "$server" 2>/dev/null; then
    cat "$tmp/server.log" >&2
    echo "schemathesis: vigil supervisor exited" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$api" ]; then
  cat "$tmp/server.log" >&2
  echo "schemathesis: vigil supervisor did not start" >&2
  exit 1
fi
echo "schemathesis: vigil supervisor at $api"

# Content for the lists and for ids that exist. The run's own token is made
# last, after enough others that its id is far from the small and boundary
# ids schemathesis tries on DELETE /tokens/{id}: revoking it would turn the
# rest of the run into 401s (checked at the end).
run_token="$(API="$api" TOKEN="$token" python3 - <<'PY'
import json, os, urllib.request

api, token = os.environ["API"], os.environ["TOKEN"]

def call(method, path, body=None, as_token=token):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(api + path, data=data, method=method,
                                 headers={"Authorization": "Bearer " + as_token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)

for name, cidr in [("Acme", "10.1.0.0/16"), ("Globex", "10.2.0.0/16"), ("Initech", "2001:db8::/32")]:
    call("POST", "/orgs", {"name": name, "description": f"{name} Inc.\nA tenant", "ip_ranges": [cidr]})
users = {}
for name, org, role in [("alice", "Acme", "admin"), ("arthur", "Acme", "analyst"), ("bob", "Globex", "viewer")]:
    users[name] = call("POST", "/users", {"name": name, "org": org, "role": role})["id"]
call("POST", "/users", {"name": "sam", "org": "Super/Global", "role": "viewer", "scope": ["Acme"]})
call("POST", "/teams", {"name": "SOC", "org": "Acme", "members": [users["alice"], users["arthur"]]})
call("POST", "/roles", {"name": "triage", "org": "Acme", "permissions": {"incidents": ["read", "update"]}})
# A connector and a policy, so the incidents below queue deliveries (the
# dispatcher's attempts at hooks.example.com fail and are retried).
hook = call("POST", "/connectors", {"name": "acme-hook", "org": "Acme", "type": "webhook", "default": True,
                                     "url": "https://hooks.example.com/services/T0KEN", "secret": "k" * 32})
call("POST", "/policies", {"name": "acme-high", "org": "Acme", "connector": hook["id"], "on": ["created", "status"],
                           "min_severity": "high", "throttle_secs": 600})
# Incidents and alerts share one id sequence: interleaved, both kinds have
# small ids, which are the ones schemathesis tries most.
for i, org in enumerate(["Acme", "Globex", "Initech", None] * 3):
    for kind in ["incidents", "alerts"]:
        body = {"title": f"{kind[:-1]} {i}", "severity": ["low", "high", "critical"][i % 3], "event_ids": [i, i + 1]}
        if org:
            body["org"] = org
        record = call("POST", f"/{kind}", body)
        call("POST", f"/{kind}/{record['id']}/comments", {"body": f"looked at it\n- {i}"})
run = None
while run is None or run["id"] < 1200:
    run = call("POST", "/tokens", {"name": "schemathesis"})
print(run["token_secret"])
PY
)"

# A node for GET /nodes to list (the admin CLI writes the same store).
"$bin" node set edge-1 --guaranteed-eps 100 --data-dir "$tmp/data" >/dev/null
"$bin" node maintenance edge-1 on --data-dir "$tmp/data" >/dev/null

# Explicit links only (the document declares create -> read, change,
# delete): the inferred ones fan out over list items and, schemathesis
# 4.32 not skipping nulls among the matches, send a Self record's
# `org_id: null` as /orgs/None.
#
# POST /search takes SQL, whose validity no JSON Schema can express: a
# string that is not one valid SELECT over `events` is answered 400 with
# the reason, which is not a schema-valid request wrongly refused.
cat >"$tmp/schemathesis.toml" <<'TOML'
[phases.stateful.inference]
algorithms = []

[[operations]]
include-operation-id = "post_search"
checks.positive_data_acceptance.expected-statuses = [200, 400, 401, 403, 404, 422, 503]

# Connector targets (URLs, hosts, addresses, header names) and templates
# (minijinja syntax, known variables) are checked when saved; their
# validity is beyond JSON Schema, so a schema-valid one may be a 422.
[[operations]]
include-operation-id = "post_connectors"
checks.positive_data_acceptance.expected-statuses = [201, 401, 403, 404, 409, 422]

[[operations]]
include-operation-id = "patch_connectors_by_id"
checks.positive_data_acceptance.expected-statuses = [200, 401, 403, 404, 409, 422]

[[operations]]
include-operation-id = "post_policies"
checks.positive_data_acceptance.expected-statuses = [201, 401, 403, 404, 409, 422]

[[operations]]
include-operation-id = "patch_policies_by_id"
checks.positive_data_acceptance.expected-statuses = [200, 401, 403, 404, 409, 422]

[[operations]]
include-operation-id = "post_incidents_by_id_actions"
checks.positive_data_acceptance.expected-statuses = [202, 401, 403, 404, 409, 422]
TOML

started=$(date +%s)
status=0
# From the temporary directory: schemathesis keeps its example database in
# the working directory, which must not be the repository. One worker: with
# two, hypothesis describing strategies from two threads at once trips
# CPython 3.11's ast.parse ("AST constructor recursion depth mismatch").
(cd "$tmp" && "$venv/bin/st" --config-file "$tmp/schemathesis.toml" run "$api/openapi.json" \
  --header "Authorization: Bearer $run_token" \
  --checks all \
  --max-examples "$examples" \
  --seed "$seed" \
  --workers 1 \
  --request-timeout 30) || status=$?
echo "schemathesis: finished in $(( $(date +%s) - started )) s (exit $status)"

# A run that lost its credentials tested nothing past that point.
if ! API="$api" TOKEN="$run_token" python3 -c '
import os, urllib.request
req = urllib.request.Request(os.environ["API"] + "/me", headers={"Authorization": "Bearer " + os.environ["TOKEN"]})
urllib.request.urlopen(req, timeout=30)' 2>/dev/null; then
  echo "schemathesis: the run's token no longer works; the results above are not a full run" >&2
  status=1
fi
exit "$status"
