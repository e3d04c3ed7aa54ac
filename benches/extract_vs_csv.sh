#!/usr/bin/env bash
# Extraction throughput and memory against a bare csv-crate parse of the same
# file, measured in the same run.
#
#   benches/extract_vs_csv.sh [SUBJECTS] [MEAN_EVENTS]
#
# Defaults generate about 10M events (350k subjects). Targets (issue 3):
# extraction >= 0.3x the bare parse rate; peak RSS <= 100 bytes per input event.
set -euo pipefail
cd "$(dirname "$0")/.."
subjects=${1:-350000}
mean_events=${2:-12}
work=$(mktemp -d "${TMPDIR:-/tmp}/hush-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet --bin hush --example bare_csv_parse
hush=target/release/hush
echo "generating $subjects subjects into $work ..." >&2
$hush synth --out "$work/shop" --subjects "$subjects" --mean-events "$mean_events" --seed 1 -q >&2
$hush --db "$work/hush.db" --key-file "$work/hush.key" init -q >&2
$hush --db "$work/hush.db" --key-file "$work/hush.key" consent import "$work/shop/consent.csv" -q >&2
events=$(($(wc -l < "$work/shop/events.csv") - 1))

bare_cmd=(target/release/examples/bare_csv_parse "$work/shop/events.csv")
extract_cmd=($hush --db "$work/hush.db" --key-file "$work/hush.key" extract
  --input "$work/shop/events.csv" --config models/sample.toml --out "$work/f.hfs" -q)
# One warm-up run of each (page cache, first open of the fresh database), then the measured runs.
"${bare_cmd[@]}" >/dev/null
"${extract_cmd[@]}" >/dev/null
bare=$(python3 benches/peak_rss.py "${bare_cmd[@]}")
extract=$(python3 benches/peak_rss.py "${extract_cmd[@]}")

python3 - "$events" "$bare" "$extract" <<'PY'
import json, sys
events = int(sys.argv[1])
bare, extract = json.loads(sys.argv[2]), json.loads(sys.argv[3])
bare_rate = events / bare["seconds"]
extract_rate = events / extract["seconds"]
ratio = extract_rate / bare_rate
bytes_per_event = extract["peak_rss_bytes"] / events
print(f"input events:            {events:,}")
print(f"bare csv parse:          {bare_rate:,.0f} events/s ({bare['seconds']:.2f} s, peak RSS {bare['peak_rss_bytes']/2**20:.0f} MiB)")
print(f"hush extract:            {extract_rate:,.0f} events/s ({extract['seconds']:.2f} s, peak RSS {extract['peak_rss_bytes']/2**20:.0f} MiB)")
print(f"extract / bare rate:     {ratio:.2f}x   (target >= 0.30x)  {'PASS' if ratio >= 0.3 else 'FAIL'}")
print(f"peak RSS per event:      {bytes_per_event:.1f} B  (target <= 100 B)  {'PASS' if bytes_per_event <= 100 else 'FAIL'}")
PY
