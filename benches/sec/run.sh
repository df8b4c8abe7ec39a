#!/usr/bin/env bash
# vigil rules test against SEC (simple event correlator) on the same
# corpus and the same rule: five failed SSH logins from one address within
# 60 seconds. Prints each one's wall time and lines per second, and the
# ratios. Needs `sec` (apt-get install sec) and a release build of vigil.
#
# Usage: benches/sec/run.sh [LINES] [VIGIL]   (default 1000000, target/release/vigil)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
lines="${1:-1000000}"
vigil="${2:-$here/../../target/release/vigil}"
command -v sec >/dev/null || { echo "sec not installed: apt-get install sec" >&2; exit 1; }
[ -x "$vigil" ] || { echo "no vigil binary at $vigil: cargo build --release" >&2; exit 1; }
work="$(mktemp -d /tmp/vigil-sec-XXXXXX)"
trap 'rm -rf "$work"' EXIT
python3 "$here/corpus.py" "$lines" > "$work/corpus.log"

seconds() { local s; s=$(date +%s.%N); "$@" > /dev/null 2>&1; echo "$(date +%s.%N) - $s" | bc; }
sec_s=$(seconds sec --conf="$here/ssh.sec" --input="$work/corpus.log" --notail --nodetach --log=/dev/null)
run() { "$vigil" rules test --rules "$here/ssh.yaml" --input "$work/corpus.log" --tz UTC --now=2026-11-22T12:00:00Z "$@"; }
one_s=$(seconds run --threads 1)
two_s=$(seconds run --threads 2)
rate() { echo "$lines / $1" | bc; }
echo "sec:                       ${sec_s} s, $(rate "$sec_s") lines/s"
echo "vigil rules test, 1 thread:  ${one_s} s, $(rate "$one_s") lines/s, $(echo "scale=1; $sec_s / $one_s" | bc)x sec"
echo "vigil rules test, 2 threads: ${two_s} s, $(rate "$two_s") lines/s, $(echo "scale=1; $sec_s / $two_s" | bc)x sec"
