#!/usr/bin/env bash
# Serving throughput and latency, same server, same run: consent-gated
# recommendations (a consented subject with 50 stored events) against
# /healthz, 64 connections, with wrk (Debian's package, installed here if
# missing). The model has 10k items at rank 64.
#
#   benches/serve_load.sh [SECONDS]
#
# Targets (issue 5): recommendations >= 0.25x healthz throughput; p99 <= 20 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
if ! command -v wrk >/dev/null; then
  (apt-get install -y wrk || (apt-get update && apt-get install -y wrk)) >/dev/null
fi
cargo build --release --quiet --bin hush
hush=$PWD/target/release/hush
work=$(mktemp -d "${TMPDIR:-/tmp}/hush-serve-bench.XXXXXX")
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
export HUSH_DB=$work/hush.db HUSH_KEY_FILE=$work/hush.key
$hush synth --out shop --subjects 30000 --items 10000 --mean-events 20 --seed 5 -q >/dev/null
$hush init -q >/dev/null
$hush consent import shop/consent.csv -q >/dev/null
printf '[train]\nrank = 64\niterations = 3\nlambda = 10.0\nalpha = 1.0\n' > train.toml
$hush extract --input shop/events.csv --config "$OLDPWD/models/sample.toml" --out f.hfs -q >/dev/null
$hush train --features f.hfs --config train.toml --non-private --out model.hmdl -q >/dev/null
$hush consent grant --subject bench-subject --purpose personalization --notice-version bench -q >/dev/null
$hush consent grant --subject bench-newcomer --purpose personalization --notice-version bench -q >/dev/null
{
  echo "subject_id,item_id,kind,value,timestamp"
  for i in $(seq 0 49); do echo "bench-subject,sku-$(printf %06d $((i * 37 % 10000))),view,1,1735689600"; done
} > mine.csv
$hush events import mine.csv -q >/dev/null
key=$($hush keys create --name bench --scopes recommend 2>/dev/null)
$hush serve --model model.hmdl --bind 127.0.0.1:18181 > serve.log 2>&1 &
server=$!
for _ in $(seq 50); do curl -fs http://127.0.0.1:18181/healthz >/dev/null 2>&1 && break; sleep 0.2; done

run() { wrk -t2 -c64 -d"${seconds}s" --latency -H "Authorization: Bearer $key" "$1"; }
recs=$(run "http://127.0.0.1:18181/v1/subjects/bench-subject/recommendations?k=10")
health=$(run "http://127.0.0.1:18181/healthz")
# For context: the refusal path (key check and consent lookup, nothing
# scored) and the non-personalized fallback, on the same server.
refused=$(run "http://127.0.0.1:18181/v1/subjects/no-consent-subject/recommendations?k=10")
popular=$(run "http://127.0.0.1:18181/v1/recommendations/popular?k=10")
# A consented subject with no stored events: the same route and reads, and
# the same 10-item answer, without the fold-in and the scoring.
newcomer=$(run "http://127.0.0.1:18181/v1/subjects/bench-newcomer/recommendations?k=10")
python3 - "$recs" "$health" "$refused" "$popular" "$newcomer" <<'PY'
import re, sys
def parse(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", text)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return rps, pct(50), pct(99), int(non2xx.group(1)) if non2xx else 0
r, h, f, p, n = (parse(a) for a in sys.argv[1:6])
print(f"recommendations: {r[0]:,.0f} req/s  p50 {r[1]:.2f} ms  p99 {r[2]:.2f} ms  non-2xx {r[3]}")
print(f"healthz:         {h[0]:,.0f} req/s  p50 {h[1]:.2f} ms  p99 {h[2]:.2f} ms  non-2xx {h[3]}")
print(f"403 consent_required (auth + consent lookup only): {f[0]:,.0f} req/s  p99 {f[2]:.2f} ms  non-2xx {f[3]}")
print(f"popular fallback: {p[0]:,.0f} req/s  p99 {p[2]:.2f} ms  non-2xx {p[3]}")
print(f"consented, no stored events (no fold-in or scoring): {n[0]:,.0f} req/s  p99 {n[2]:.2f} ms  non-2xx {n[3]}")
ratio = r[0] / h[0]
print(f"recommendations / healthz throughput: {ratio:.2f}x (target >= 0.25x) {'PASS' if ratio >= 0.25 else 'FAIL'}")
print(f"recommendations p99: {r[2]:.2f} ms (target <= 20 ms) {'PASS' if r[2] <= 20 else 'FAIL'}")
PY
echo "command: benches/serve_load.sh $seconds  (10k items, rank 64, 64 connections, wrk -t2)"
