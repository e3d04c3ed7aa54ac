#!/usr/bin/env bash
# The store backends under load, same model, same load, same run (wrk, 64
# connections, 2 threads): consent-gated recommendations and event ingestion
# on SQLite and on PostgreSQL, and two serving replicas on one PostgreSQL
# against one. A throwaway PostgreSQL cluster is started here (Debian's
# postgresql package; as the postgres user when run as root).
#
#   benches/store_load.sh [SECONDS]
#
# Targets (issues 7 and 19): PostgreSQL-backed serving >= 0.5x SQLite-backed
# throughput with p99 <= 20 ms at 64 connections; PostgreSQL ingestion >= 0.5x
# SQLite's; two replicas together >= 1.0x one replica's throughput (both
# share these two cores, so only the cost of sharing the store shows).
#
# Then, to see where PostgreSQL-backed serving's tail comes from: both
# stores at 8 to 64 connections with the CPU seconds each process used, and
# both again with PostgreSQL on a core of its own (taskset), as it would be
# on a machine of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
command -v wrk >/dev/null || (apt-get install -y wrk || (apt-get update && apt-get install -y wrk)) >/dev/null
[ -x /usr/bin/time ] || (apt-get install -y time || (apt-get update && apt-get install -y time)) >/dev/null
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get install -y postgresql || (apt-get update && apt-get install -y postgresql)) >/dev/null
cargo build --release --quiet --bin hush
hush=$PWD/target/release/hush
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d "${TMPDIR:-/tmp}/hush-store-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${pgdata:-}" ] && $as_owner "$pgbin/pg_ctl" -D "$pgdata" -m fast stop >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

# The cluster.
as_owner=""
if [ "$(id -u)" -eq 0 ]; then chown postgres "$work"; as_owner="runuser -u postgres --"; fi
pgdata=$work/pg
pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$as_owner "$pgbin/initdb" -D "$pgdata" --auth=trust --username=postgres --no-instructions >/dev/null
$as_owner "$pgbin/pg_ctl" -D "$pgdata" -l "$work/pg.log" -w \
  -o "-p $pgport -k $work -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
pg="postgres://postgres@127.0.0.1:$pgport/postgres"
export HUSH_KEY_FILE=$work/hush.key

# The same data in both stores; one model.
$hush synth --out shop --subjects 30000 --items 10000 --mean-events 20 --seed 5 -q >/dev/null
printf '[train]\nrank = 64\niterations = 3\nlambda = 10.0\nalpha = 1.0\n' > train.toml
{
  echo "subject_id,item_id,kind,value,timestamp"
  for i in $(seq 0 49); do echo "bench-subject,sku-$(printf %06d $((i * 37 % 10000))),view,1,1735689600"; done
} > mine.csv
{
  echo "subject_id,purpose,granted,effective_at,notice_version,proof_ref"
  for i in $(seq 0 9999); do echo "ingest-$i,personalization,true,2025-01-01T00:00:00Z,bench,"; done
} > ingest-consent.csv
for store in "$work/hush.db" "$pg"; do
  $hush --db "$store" init -q >/dev/null
  $hush --db "$store" consent import shop/consent.csv -q >/dev/null
  $hush --db "$store" consent import ingest-consent.csv -q >/dev/null
  $hush --db "$store" consent grant --subject bench-subject --purpose personalization --notice-version bench -q >/dev/null
  $hush --db "$store" events import mine.csv -q >/dev/null
done
$hush --db "$work/hush.db" extract --input shop/events.csv --catalogue shop/items.csv \
  --config "$OLDPWD/models/sample.toml" --out f.hfs -q >/dev/null
# `hush serve` serves only a store's own releases (DP, sealed by the store and
# recorded in its budget ledger): one release per store, same data and shape.
$hush --db "$work/hush.db" train --features f.hfs --config train.toml --epsilon 4 --out sqlite.hmdl -q >/dev/null
$hush --db "$pg" train --features f.hfs --config train.toml --epsilon 4 --out pg.hmdl -q >/dev/null
key_sqlite=$($hush --db "$work/hush.db" keys create --name bench --scopes recommend,ingest 2>/dev/null)
key_pg=$($hush --db "$pg" keys create --name bench --scopes recommend,ingest 2>/dev/null)

serve() { # store port model
  $hush --db "$1" serve --model "$3" --bind "127.0.0.1:$2" > "serve-$2.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$2/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "server on $2 did not start" >&2; exit 1
}
serve "$work/hush.db" 18301 sqlite.hmdl
serve "$pg" 18302 pg.hmdl
serve "$pg" 18303 pg.hmdl

# Ingestion: batches of 100 events for consented subjects, spread over 10,000 subjects.
cat > ingest.lua <<'LUA'
local n = 0
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local subject = "ingest-" .. ((n * 7919 + math.random(0, 9999)) % 10000)
  local events = {}
  for i = 0, 99 do
    events[#events + 1] = string.format('{"subject_id":"%s","item_id":"sku-%06d","kind":"view"}', subject, (n + i * 13) % 10000)
  end
  return wrk.format("POST", "/v1/events", nil, '{"events":[' .. table.concat(events, ",") .. ']}')
end
LUA

recs="/v1/subjects/bench-subject/recommendations?k=10"
non2xx() { grep -Eo "Non-2xx or 3xx responses: +[0-9]+" | awk '{print $NF}'; }
rps() { grep -Eo 'Requests/sec: +[0-9.]+' | awk '{print $2}'; }
p99() { grep -E '^ +99%' | awk '{print $2}'; }
run() { wrk -t2 -c"$2" -d"${seconds}s" --latency -H "Authorization: Bearer $3" "${@:4}" "$1"; }

out=$(run "http://127.0.0.1:18301$recs" 64 "$key_sqlite"); sqlite_rps=$(rps <<<"$out"); sqlite_p99=$(p99 <<<"$out")
out=$(run "http://127.0.0.1:18302$recs" 64 "$key_pg"); pg_rps=$(rps <<<"$out"); pg_p99=$(p99 <<<"$out")
# Two replicas under the same total load: 32 connections each, at the same time.
run "http://127.0.0.1:18302$recs" 32 "$key_pg" > a.txt & wa=$!
run "http://127.0.0.1:18303$recs" 32 "$key_pg" > b.txt & wb=$!
wait $wa $wb
two_rps=$(python3 -c "print($(rps < a.txt) + $(rps < b.txt))")
out=$(run "http://127.0.0.1:18301/v1/events" 16 "$key_sqlite" -s ingest.lua); sqlite_ingest=$(rps <<<"$out")
if [ -n "$(non2xx <<<"$out")" ]; then echo "ingestion on SQLite failed: $out" >&2; exit 1; fi
out=$(run "http://127.0.0.1:18302/v1/events" 16 "$key_pg" -s ingest.lua); pg_ingest=$(rps <<<"$out")
if [ -n "$(non2xx <<<"$out")" ]; then echo "ingestion on PostgreSQL failed: $out" >&2; exit 1; fi
# Group commit: how many batches each store transaction took on average.
group() { # port
  curl -fs "http://127.0.0.1:$1/metrics" | awk '/^hush_events_received_total /{e=$2} /^hush_ingest_commits_total /{c=$2} END{printf "%.1f", (c > 0 ? e / 100 / c : 0)}'
}
echo "batches per ingest transaction: SQLite $(group 18301), PostgreSQL $(group 18302)"

python3 - "$sqlite_rps" "$sqlite_p99" "$pg_rps" "$pg_p99" "$two_rps" "$sqlite_ingest" "$pg_ingest" <<'PY'
import sys
s_rps, s_p99, p_rps, p_p99, two, s_ing, p_ing = sys.argv[1:]
s_rps, p_rps, two, s_ing, p_ing = map(float, (s_rps, p_rps, two, s_ing, p_ing))
print(f"recommendations, SQLite store:        {s_rps:8,.0f} req/s  p99 {s_p99}")
print(f"recommendations, PostgreSQL store:    {p_rps:8,.0f} req/s  p99 {p_p99}")
print(f"recommendations, 2 PostgreSQL replicas: {two:6,.0f} req/s in total")
print(f"ingestion, SQLite store:     {s_ing * 100:10,.0f} events/s ({s_ing:,.0f} batches of 100)")
print(f"ingestion, PostgreSQL store: {p_ing * 100:10,.0f} events/s ({p_ing:,.0f} batches of 100)")
def ms(text):
    # wrk prints latencies as 812.00us, 5.21ms or 1.02s.
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)
r = p_rps / s_rps
print(f"PostgreSQL / SQLite serving throughput: {r:.2f}x (target >= 0.5x) {'PASS' if r >= 0.5 else 'FAIL'}")
print(f"PostgreSQL serving p99:                 {ms(p_p99):.1f} ms (target <= 20 ms) {'PASS' if ms(p_p99) <= 20 else 'FAIL'}")
ri = p_ing / s_ing
print(f"PostgreSQL / SQLite ingestion:          {ri:.2f}x (target >= 0.5x) {'PASS' if ri >= 0.5 else 'FAIL'}")
r2 = two / p_rps
print(f"two replicas / one replica:             {r2:.2f}x (target >= 1.0x) {'PASS' if r2 >= 1.0 else 'FAIL'}")
PY
echo "command: benches/store_load.sh $seconds  (10k items, rank 64, wrk -t2 -c64; ingestion -c16, 100 events a request)"

# Where PostgreSQL-backed serving's tail comes from: both stores under the
# same load at fewer connections, and who used the two cores during it (CPU
# seconds of the server, of every PostgreSQL process, and of wrk, from /proc).
cpu_of() { # pid... -> utime+stime seconds summed
  local ticks=0 pid
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  python3 -c "print($ticks / $(getconf CLK_TCK))"
}
pg_pids() { pgrep -u postgres -d' ' postgres || true; }
echo
echo "Serving by connections (wrk -t2, ${seconds}s each; CPU seconds of $((2 * seconds)) available):"
echo "store       connections  req/s     p50     p99 | hush server  PostgreSQL  wrk"
for target in "SQLite 18301 ${pids[0]} $key_sqlite" "PostgreSQL 18302 ${pids[1]} $key_pg"; do
  read -r name port server_pid key <<<"$target"
  for c in 8 16 32 64; do
    before_hush=$(cpu_of "$server_pid"); before_pg=$(cpu_of $(pg_pids))
    out=$( { /usr/bin/time -f "wrk_cpu %U %S" wrk -t2 -c"$c" -d"${seconds}s" --latency \
          -H "Authorization: Bearer $key" "http://127.0.0.1:$port$recs"; } 2>&1 )
    after_hush=$(cpu_of "$server_pid"); after_pg=$(cpu_of $(pg_pids))
    printf '%-11s %11d %6.0f %7s %7s | %11.1f %11.1f %4.1f\n' "$name" "$c" "$(rps <<<"$out")" \
      "$(grep -E '^ +50%' <<<"$out" | awk '{print $2}')" "$(p99 <<<"$out")" \
      "$(python3 -c "print($after_hush - $before_hush)")" "$(python3 -c "print($after_pg - $before_pg)")" \
      "$(awk '/^wrk_cpu/{print $2 + $3}' <<<"$out")"
  done
done

# The same two loads with PostgreSQL on a core of its own, as it would be on
# a machine of its own: the server and wrk on CPU 0, every PostgreSQL
# process on CPU 1 (taskset; new backends inherit the postmaster's
# affinity). SQLite gets the same one core for the server and wrk.
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  for pid in $(pg_pids); do taskset -p -c 1 "$pid" >/dev/null; done
  for pid in "${pids[@]}"; do taskset -a -p -c 0 "$pid" >/dev/null; done
  echo
  echo "With PostgreSQL on CPU 1 and the server and wrk on CPU 0 (wrk -t2 -c64, ${seconds}s):"
  for target in "SQLite 18301 $key_sqlite" "PostgreSQL 18302 $key_pg"; do
    read -r name port key <<<"$target"
    out=$(taskset -c 0 wrk -t2 -c64 -d"${seconds}s" --latency -H "Authorization: Bearer $key" "http://127.0.0.1:$port$recs")
    printf '%-11s %6.0f req/s  p50 %7s  p99 %7s\n' "$name" "$(rps <<<"$out")" \
      "$(grep -E '^ +50%' <<<"$out" | awk '{print $2}')" "$(p99 <<<"$out")"
  done
fi
