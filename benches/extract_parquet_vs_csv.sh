#!/usr/bin/env bash
# Extraction of the same events from CSV and from Parquet, measured in the
# same run, alternating (this machine is shared and noisy).
#
#   benches/extract_parquet_vs_csv.sh [SUBJECTS] [MEAN_EVENTS] [ROUNDS]
#
# Defaults generate about 10M events (350k subjects), 3 rounds. Target
# (issue 17): Parquet extraction at least as fast as CSV (ratio >= 1.0).
set -euo pipefail
cd "$(dirname "$0")/.."
subjects=${1:-350000}
mean_events=${2:-12}
rounds=${3:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/hush-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet --bin hush --example events_to_parquet
hush=target/release/hush
echo "generating $subjects subjects into $work ..." >&2
$hush synth --out "$work/shop" --subjects "$subjects" --mean-events "$mean_events" --seed 1 -q >&2
target/release/examples/events_to_parquet "$work/shop/events.csv" "$work/shop/events.parquet" >/dev/null
$hush --db "$work/hush.db" --key-file "$work/hush.key" init -q >&2
$hush --db "$work/hush.db" --key-file "$work/hush.key" consent import "$work/shop/consent.csv" -q >&2
events=$(($(wc -l < "$work/shop/events.csv") - 1))

run() {
  python3 benches/peak_rss.py $hush --db "$work/hush.db" --key-file "$work/hush.key" extract \
    --input "$work/shop/events.$1" --config models/sample.toml --out "$work/$1.hfs" --json -q
}
# Warm-up (page cache, first open of the fresh database), then alternate.
run csv >/dev/null
run parquet >/dev/null
results=()
for _ in $(seq "$rounds"); do
  results+=("$(run csv)" "$(run parquet)")
done
# Both extractions must keep the same events.
cmp <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["events_kept"], r["subjects"])' "$work/csv.report.json") \
    <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["events_kept"], r["subjects"])' "$work/parquet.report.json")

python3 - "$events" "$work/shop/events.csv" "$work/shop/events.parquet" "${results[@]}" <<'PY'
import json, os, statistics, sys
events, csv_path, parquet_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
runs = [json.loads(r) for r in sys.argv[4:]]
csv_s = [r["seconds"] for r in runs[0::2]]
pq_s = [r["seconds"] for r in runs[1::2]]
csv_m, pq_m = statistics.median(csv_s), statistics.median(pq_s)
print(f"input events:        {events:,}")
print(f"file sizes:          CSV {os.path.getsize(csv_path)/2**20:.0f} MiB, Parquet {os.path.getsize(parquet_path)/2**20:.0f} MiB")
print(f"CSV extraction:      median {csv_m:.2f} s of {[round(s, 2) for s in csv_s]} ({events/csv_m:,.0f} events/s), peak RSS {max(r['peak_rss_bytes'] for r in runs[0::2])/2**20:.0f} MiB")
print(f"Parquet extraction:  median {pq_m:.2f} s of {[round(s, 2) for s in pq_s]} ({events/pq_m:,.0f} events/s), peak RSS {max(r['peak_rss_bytes'] for r in runs[1::2])/2**20:.0f} MiB")
ratio = csv_m / pq_m
print(f"Parquet / CSV speed: {ratio:.2f}x  (target >= 1.00x)  {'PASS' if ratio >= 1.0 else 'FAIL'}")
PY
