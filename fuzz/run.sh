#!/usr/bin/env bash
# Seeds each target's corpus from the test vectors and logs in the repo, then
# fuzzes every target for SECONDS (default 600) in turn; the rules target
# starts from the built-in rule pack. Crashes land in
# fuzz/artifacts/<target>/; copy them to parsers/tests/fixtures/fuzz-regressions/
# so `cargo test` replays them forever. Built with debug assertions, so an
# arithmetic overflow is a crash here as it is in `cargo test`.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
targets=${TARGETS:-"rfc5424 rfc3164 cef leef auto_devices framer rules wire_decode"}
python3 - <<'PY'
import json, glob, os, hashlib
seeds = []
for path in glob.glob("../parsers/tests/fixtures/vectors/*.jsonl"):
    for line in open(path, encoding="utf-8"):
        row = json.loads(line)
        if isinstance(row.get("input"), str):
            seeds.append(row["input"].encode())
        elif row.get("input_hex"):
            seeds.append(bytes.fromhex(row["input_hex"]))
for path in glob.glob("../parsers/tests/fixtures/logs/*.log"):
    seeds += [l for l in open(path, "rb").read().split(b"\n") if l]
# The rule compiler starts from the built-in pack, one seed per rule too.
os.makedirs("corpus/rules", exist_ok=True)
for path in glob.glob("../rules/packs/*.yaml"):
    text = open(path, "rb").read()
    parts = [text] + [b"- id:" + p for p in text.split(b"\n- id:")[1:]]
    for data in parts:
        open(f"corpus/rules/{hashlib.sha1(data).hexdigest()}", "wb").write(data)
# The batch decoder starts from nothing: the target puts the header in
# front of each input itself.
os.makedirs("corpus/wire_decode", exist_ok=True)
for target in ["rfc5424", "rfc3164", "cef", "leef", "auto_devices", "framer"]:
    d = f"corpus/{target}"
    os.makedirs(d, exist_ok=True)
    for s in seeds:
        data = (b"\x00\x40\x07" + s + b"\n" + s) if target == "framer" else s
        open(f"{d}/{hashlib.sha1(data).hexdigest()}", "wb").write(data)
PY
cargo fuzz build -s none -O --debug-assertions
for t in $targets; do
  echo "== $t: ${seconds}s"
  cargo fuzz run -s none -O --debug-assertions "$t" "corpus/$t" -- -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 2>&1 | tail -n 12
done
