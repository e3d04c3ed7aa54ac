#!/usr/bin/env python3
"""Hostile-client probes of `hush serve` (issue 14), standard library only.

Builds the quickstart store in a fresh directory with the given binary,
creates API keys, serves on 127.0.0.1 and runs six probe families:

  1 consent-clock   backdated / future-dated / skewed-clock consent decisions
  2 post-ack-load   recommendations hammered while withdrawals and erasures
                    are acknowledged: a 200 that STARTED after the ack is a failure
  3 connections     slowloris, silent sockets, idle keep-alive, slow body,
                    slow reader, connection cap (seconds until closed)
  4 hostile-input   oracle, forged source, Sec-GPC, auth scheme case, bad
                    paths/ids/queries/bodies/timestamps, JSON errors, no-store
  5 erasure-residue raw ids / pseudonyms / row keys left in db, -wal, -shm; file modes
  6 logs            raw subject ids and full pseudonyms in the server log

Prints a table (probes, passed, requests, 5xx per family) and every probe
whose observation differed from the expectation, and writes all probes to
<workdir>/probes.json.

    python3 benches/hostile_probes.py --hush /work/target-release/release/hush

Exit status 0 when every probe passed, 1 otherwise.
"""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone

HOST = "127.0.0.1"
PORT = 0
HUSH = ""
REPO = ""
WORK = ""
DB = ""
KEYS = {}
RUN = "%06x" % random.randrange(1 << 24)  # unique suffix for subject ids of this run

LOCK = threading.Lock()
FAMILY = ["setup"]
STATS = {}  # family -> {"requests": n, "5xx": n}
PROBES = []  # dicts: family, name, expected, observed, ok
USED_IDS = set()  # every raw subject id sent to the server (for the log scan)


# --------------------------------------------------------------------------- helpers


def now_utc():
    return datetime.now(timezone.utc)


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sid(tag, i=0):
    s = "probe-%s-%s-%04d" % (tag, RUN, i)
    USED_IDS.add(s)
    return s


def count(status, family=None):
    fam = family or FAMILY[0]
    with LOCK:
        st = STATS.setdefault(fam, {"requests": 0, "5xx": 0})
        st["requests"] += 1
        if status is not None and status >= 500:
            st["5xx"] += 1


def probe(name, expected, observed, ok, family=None):
    fam = family or FAMILY[0]
    PROBES.append({"family": fam, "name": name, "expected": expected, "observed": observed, "ok": bool(ok)})
    mark = "ok  " if ok else "FAIL"
    print("  [%s] %-58s expected %-28s observed %s" % (mark, name[:58], str(expected)[:28], str(observed)[:160]),
          flush=True)


def call(method, path, key=None, body=None, headers=None, timeout=30, raw_body=None):
    """One request on a fresh connection. Returns (status, headers(lowercase dict), body bytes)."""
    conn = http.client.HTTPConnection(HOST, PORT, timeout=timeout)
    h = dict(headers or {})
    if key:
        h.setdefault("Authorization", "Bearer " + key)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    if raw_body is not None:
        data = raw_body
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        b = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        count(r.status)
        return r.status, hdrs, b
    finally:
        conn.close()


def jbody(b):
    try:
        return json.loads(b)
    except Exception:
        return None


def raw_request(data, timeout=10.0):
    """Sends raw bytes on a fresh socket; returns (status, headers, body) of the first response (or None)."""
    s = socket.create_connection((HOST, PORT), timeout=timeout)
    try:
        s.sendall(data)
        buf = b""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
            if b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if m and len(rest) >= int(m.group(1)):
                    break
                if not m and not re.search(rb"(?im)^transfer-encoding", head):
                    break
        if not buf.startswith(b"HTTP/"):
            count(None)
            return None, {}, buf
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        count(status)
        return status, hdrs, rest
    finally:
        s.close()


def hush(*args, env_extra=None, check=True, timeout=900):
    env = dict(os.environ)
    env.pop("HUSH_PSEUDONYM_KEY", None)
    if env_extra:
        env.update(env_extra)
    p = subprocess.run([HUSH, *args], cwd=WORK, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("hush %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr[-2000:]))
    return p


def grant(subject, purpose="personalization", key=None, effective_at=None, granted=True):
    body = {"purpose": purpose, "granted": granted, "notice_version": "probe-1"}
    if effective_at is not None:
        body["effective_at"] = effective_at
    return call("PUT", "/v1/subjects/%s/consent" % subject, key or KEYS["admin"], body)


def recs(subject, key=None, headers=None):
    return call("GET", "/v1/subjects/%s/recommendations?k=5" % subject, key or KEYS["admin"], headers=headers)


def ingest(events, key=None):
    return call("POST", "/v1/events", key or KEYS["admin"], {"events": events})


ITEMS = []


def seed_subject(subject, purposes=("personalization", "training"), n_events=5):
    for p in purposes:
        st, _, b = grant(subject, p)
        assert st == 200, (st, b)
    evs = [{"subject_id": subject, "item_id": ITEMS[(hash(subject) + 7 * j) % len(ITEMS)], "kind": "purchase"}
           for j in range(n_events)]
    st, _, b = ingest(evs)
    assert st == 200, (st, b)


# --------------------------------------------------------------------------- server


class Server:
    def __init__(self, port, log_path, env_extra=None):
        self.port = port
        self.log_path = log_path
        env = dict(os.environ)
        env.pop("HUSH_PSEUDONYM_KEY", None)
        env.pop("RUST_LOG", None)
        if env_extra:
            env.update(env_extra)
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [HUSH, "-v", "--db", DB, "serve", "--model", os.path.join(WORK, "qs", "model.hmdl"),
             "--bind", "%s:%d" % (HOST, port)],
            cwd=WORK, env=env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: see %s" % log_path)
            try:
                c = http.client.HTTPConnection(HOST, port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    c.close()
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not come up")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def metric(name):
    st, _, b = call("GET", "/metrics")
    total = 0.0
    found = False
    for line in b.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


# --------------------------------------------------------------------------- clock shim

SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
static int (*real_cg)(clockid_t, struct timespec *);
int clock_gettime(clockid_t c, struct timespec *ts) {
    if (!real_cg) real_cg = dlsym(RTLD_NEXT, "clock_gettime");
    int r = real_cg(c, ts);
    if (r == 0 && (c == CLOCK_REALTIME || c == CLOCK_REALTIME_COARSE)) {
        const char *s = getenv("PROBE_SKEW_MS");
        long long ms = s ? atoll(s) : 0;
        long long ns = (long long)ts->tv_nsec + (ms % 1000) * 1000000LL;
        ts->tv_sec += ms / 1000 + ns / 1000000000LL;
        ns %= 1000000000LL;
        if (ns < 0) { ns += 1000000000LL; ts->tv_sec -= 1; }
        ts->tv_nsec = ns;
    }
    return r;
}
"""


def build_shim():
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    src = os.path.join(WORK, "skew.c")
    lib = os.path.join(WORK, "skew.so")
    with open(src, "w") as f:
        f.write(SHIM_C)
    p = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", lib, src, "-ldl"], capture_output=True, text=True)
    if p.returncode != 0:
        return None
    return lib


# --------------------------------------------------------------------------- family 1


def family_clock(shim):
    FAMILY[0] = "1 consent-clock"
    print("\n== 1 consent clock", flush=True)
    now = now_utc()
    yesterday = rfc3339(now - timedelta(days=1))

    # grant then backdated withdrawal
    s = sid("clock", 1)
    seed_subject(s)
    st, _, _ = recs(s)
    probe("granted subject is scored", 200, st, st == 200)
    st, _, b = grant(s, effective_at=yesterday, granted=False)
    probe("withdrawal dated yesterday is recorded", 200, st, st == 200)
    st, _, b = recs(s)
    probe("recommendations after backdated withdrawal", 403, "%s %s" % (st, b[:80]), st == 403)
    st, _, b = call("GET", "/v1/subjects/%s/consent" % s, KEYS["admin"])
    state = [x.get("state") for x in (jbody(b) or {}).get("status", []) if x.get("purpose") == "personalization"]
    probe("status after backdated withdrawal", "withdrawn", state, state and str(state[0]).lower() == "withdrawn")

    # future-dated grants
    s = sid("clock", 2)
    for label, delta, exp in [("now+6min (beyond 5 min skew)", timedelta(minutes=6), 400),
                              ("now+1 day", timedelta(days=1), 400),
                              ("year 9999", None, 400),
                              ("now+4min (within skew)", timedelta(minutes=4), 200)]:
        eff = rfc3339(now_utc() + delta) if delta else "9999-12-31T23:59:59Z"
        st, _, b = grant(s, effective_at=eff)
        err = (jbody(b) or {}).get("error")
        probe("grant effective %s" % label, exp, "%s %s" % (st, err), st == exp)
    st, _, b = recs(s)
    probe("grant effective in 4 min is not yet in force", 403, st, st == 403)

    # grant now, grant now+3s, withdraw now -> 403, still 403 after 4 s
    s = sid("clock", 3)
    seed_subject(s)
    st1, _, _ = grant(s, effective_at=rfc3339(now_utc() + timedelta(seconds=3)))
    st2, _, _ = grant(s, granted=False)
    st, _, _ = recs(s)
    probe("grant now, grant now+3s, withdraw now: at once", 403, (st1, st2, st), st == 403)
    time.sleep(4.2)
    st, _, _ = recs(s)
    probe("... and 4.2 s later", 403, st, st == 403)

    # grants backdated to year 1, i64::MIN, before 1970
    s = sid("clock", 4)
    for label, eff, exp in [("year 1", "0001-01-01T00:00:00Z", 400),
                            ("i64::MIN seconds", str(-(2 ** 63)), 400),
                            ("i64::MIN+1 seconds", str(-(2 ** 63) + 1), 400),
                            ("i64::MAX seconds", str(2 ** 63 - 1), 400),
                            ("1969-12-31T23:59:59Z", "1969-12-31T23:59:59Z", 400),
                            ("-1 (unix seconds)", "-1", 400),
                            ("2^70 (overflow)", str(2 ** 70), 400),
                            ("garbage", "yesterday", 400)]:
        st, _, b = grant(s, effective_at=eff)
        probe("grant effective %s" % label, exp, "%s %s" % (st, (jbody(b) or {}).get("error")), st == exp)
    # a grant backdated to 1970 after a withdrawal: a new decision; it must not reopen the past
    s = sid("clock", 5)
    seed_subject(s)
    grant(s, granted=False)
    st, _, b = grant(s, effective_at="1970-01-01T00:00:00Z")
    probe("grant backdated to 1970 after withdrawal: recorded", 200, st, st == 200)
    st, _, b = call("GET", "/v1/subjects/%s/consent" % s, KEYS["admin"])
    hist = (jbody(b) or {}).get("history", [])
    probe("history lists decisions in recording order", "grant,grant,withdraw,grant (personalization/training)",
          [(h.get("purpose")[:1], h.get("granted")) for h in hist],
          [h.get("granted") for h in hist if h.get("purpose") == "personalization"] == [True, False, True])

    # CLI: grant, withdraw --effective-at <past>, extract drops the subject
    cli_subject = pick_store_subject()
    if cli_subject is None:
        probe("CLI subject with training consent and events found", True, False, False)
    else:
        rep_a = extract_report("a")
        p = hush("--db", DB, "consent", "withdraw", "--subject", cli_subject, "--purpose", "training",
                 "--effective-at", "2024-06-01T00:00:00Z", check=False)
        probe("CLI withdraw --effective-at 2024-06-01 (training)", "exit 0", "exit %d %s" % (
            p.returncode, (p.stdout + p.stderr).strip()[:80]), p.returncode == 0)
        rep_b = extract_report("b")
        da = rep_a["dropped"].get("withdrawn", 0)
        db_ = rep_b["dropped"].get("withdrawn", 0)
        moved = rep_a["kept"] - rep_b["kept"]
        sa = rep_a["dropped_subjects"].get("withdrawn", 0)
        sb = rep_b["dropped_subjects"].get("withdrawn", 0)
        probe("hush extract drops the withdrawn subject", "1 more subject withdrawn, its events dropped",
              "subjects %d->%d, withdrawn subjects %d->%d, kept %d->%d, withdrawn events %d->%d" % (
                  rep_a["subjects"], rep_b["subjects"], sa, sb, rep_a["kept"], rep_b["kept"], da, db_),
              moved > 0 and db_ > da and sb == sa + 1 and rep_b["subjects"] == rep_a["subjects"] - 1)
        p = hush("--db", DB, "--json", "consent", "status", "--subject", cli_subject, "--purpose", "training",
                 "--as-of", "2024-07-01T00:00:00Z", check=False)
        st = jbody(p.stdout.encode())
        state = st[0].get("state") if isinstance(st, list) and st else p.stdout.strip()[:60]
        probe("CLI status as of 2024-07-01 after backdated withdrawal", "withdrawn", state,
              str(state).lower() == "withdrawn")
        p = hush("--db", DB, "consent", "grant", "--subject", cli_subject, "--purpose", "training",
                 "--effective-at", rfc3339(now_utc() + timedelta(minutes=10)), check=False)
        probe("CLI grant effective now+10min refused", "exit !=0", "exit %d" % p.returncode, p.returncode != 0)
        p = hush("--db", DB, "consent", "grant", "--subject", cli_subject, "--purpose", "training",
                 "--effective-at", "0001-01-01T00:00:00Z", check=False)
        probe("CLI grant effective year 1 refused", "exit !=0", "exit %d" % p.returncode, p.returncode != 0)

    # Re-import of the consent platform's history after an API withdrawal.
    s = sample_personalization_subject()
    st0, _, _ = recs(s)
    st, _, _ = grant(s, granted=False)
    st1, _, _ = recs(s)
    p = hush("--db", DB, "-q", "consent", "import", os.path.join(REPO, "data", "sample", "consent.csv"), check=False)
    st2, _, b = recs(s)
    probe("re-import of consent.csv after API withdrawal", 403,
          "before %s, withdrawn %s, after re-import %s (import exit %d)" % (st0, st1, st2, p.returncode),
          st2 == 403)

    # Clock skew between the process that records a withdrawal and the one that checks it.
    if shim is None:
        probe("clock-skew shim built (cc)", True, False, False)
        return
    p = subprocess.run(["date", "+%s"], env=dict(os.environ, LD_PRELOAD=shim, PROBE_SKEW_MS="3600000"),
                       capture_output=True, text=True)
    shift = int(p.stdout.strip()) - int(time.time())
    if abs(shift - 3600) > 5:
        probe("clock-skew shim works", "+3600 s", shift, False)
        return
    for skew_s in (2, 120):
        s = sid("skew", skew_s)
        seed_subject(s)
        st0, _, _ = recs(s)
        p = hush("--db", DB, "--json", "consent", "withdraw", "--subject", s, "--purpose", "personalization",
                 env_extra={"LD_PRELOAD": shim, "PROBE_SKEW_MS": str(skew_s * 1000)}, check=False)
        t_ack = time.time()
        st1, _, b1 = recs(s)
        still = []
        while time.time() - t_ack < min(skew_s + 2, 6):
            stx, _, _ = recs(s)
            still.append(stx)
            time.sleep(0.25)
        probe("CLI withdrawal recorded by a clock %+ds ahead, checked at once" % skew_s, 403,
              "before %s, CLI exit %d, after ack %s, next %.0fs: %d x 200" % (
                  st0, p.returncode, st1, min(skew_s + 2, 6), still.count(200)),
              st1 == 403 and 200 not in still)
    # A second server on the same store whose clock runs 60 s ahead (a replica).
    port2 = free_port()
    replica = Server(port2, os.path.join(WORK, "replica.log"),
                     env_extra={"LD_PRELOAD": shim, "PROBE_SKEW_MS": "60000"})
    try:
        s = sid("skew", 60)
        seed_subject(s)
        st0, _, _ = recs(s)
        conn = http.client.HTTPConnection(HOST, port2, timeout=30)
        conn.request("PUT", "/v1/subjects/%s/consent" % s,
                     body=json.dumps({"purpose": "personalization", "granted": False, "notice_version": "p"}),
                     headers={"Authorization": "Bearer " + KEYS["admin"], "Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        count(r.status)
        conn.close()
        st1, _, _ = recs(s)
        probe("withdrawal acked by a replica whose clock is +60 s, then asked here", 403,
              "before %s, replica ack %s, here %s" % (st0, r.status, st1), r.status == 200 and st1 == 403)
    finally:
        replica.stop()


def pick_store_subject():
    """A sample subject with training consent, events in the store, not erased."""
    erased = set(l.split(",")[0] for l in open(os.path.join(REPO, "data", "sample", "erasure_requests.csv")))
    by_subject = {}
    for line in open(os.path.join(REPO, "data", "sample", "consent.csv")).read().splitlines()[1:]:
        f = line.split(",")
        if f[1] == "training":
            by_subject.setdefault(f[0], []).append(f[2])
    for s, decisions in sorted(by_subject.items()):
        if s in erased or decisions[-1] != "true" or "false" in decisions:
            continue
        p = hush("--db", DB, "--json", "export", "--subject", s, check=False)
        e = jbody(p.stdout.encode()) or {}
        if len(e.get("events", [])) >= 3:
            USED_IDS.add(s)
            return s
    return None


def sample_personalization_subject():
    erased = set(l.split(",")[0] for l in open(os.path.join(REPO, "data", "sample", "erasure_requests.csv")))
    by_subject = {}
    for line in open(os.path.join(REPO, "data", "sample", "consent.csv")).read().splitlines()[1:]:
        f = line.split(",")
        if f[1] == "personalization":
            by_subject.setdefault(f[0], []).append(f[2])
    for s, decisions in sorted(by_subject.items(), reverse=True):
        if s in erased or decisions != ["true"]:
            continue
        st, _, _ = recs(s)
        if st == 200:
            USED_IDS.add(s)
            return s
    raise RuntimeError("no sample subject with personalization consent")


def extract_report(tag):
    out = os.path.join(WORK, "extract-%s.hfs" % tag)
    rep = os.path.join(WORK, "extract-%s.json" % tag)
    hush("--db", DB, "-q", "extract", "--config", os.path.join(REPO, "models", "sample.toml"),
         "--catalogue", os.path.join(REPO, "data", "sample", "items.csv"), "--out", out, "--report", rep)
    r = json.load(open(rep))
    return {"kept": r.get("events_kept", 0), "dropped": r.get("dropped_events", {}),
            "subjects": r.get("subjects", 0), "dropped_subjects": r.get("dropped_subjects", {})}


# --------------------------------------------------------------------------- family 2


def family_load(target, workers, n_subjects, key):
    FAMILY[0] = "2 post-ack-load"
    print("\n== 2 post-acknowledgement scores under load (target %d requests)" % target, flush=True)
    subjects = [sid("load", i) for i in range(n_subjects)]
    for s in subjects:
        for p in ("personalization", "training"):
            st, _, b = grant(s, p)
            assert st == 200, b
    evs = [{"subject_id": s, "item_id": ITEMS[(i * 13 + j * 7) % len(ITEMS)], "kind": "purchase"}
           for i, s in enumerate(subjects) for j in range(5)]
    for k in range(0, len(evs), 500):
        st, _, b = ingest(evs[k:k + 500])
        assert st == 200, b
    ack = [None] * n_subjects  # monotonic time the acknowledgement was fully received
    action = [None] * n_subjects
    receipts_not_truncated = [0]
    ctl_failures = []
    ctl_latency = []
    current = [0]
    done = [False]
    results = []  # (subject index, t_start, t_end, status, personalized)
    total = [0]
    t0 = time.monotonic()

    def worker(seed):
        rnd = random.Random(seed)
        conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
        local = []
        while True:
            with LOCK:
                if total[0] >= target and done[0]:
                    break
                total[0] += 1
            c = current[0]
            if done[0]:
                i = rnd.randrange(n_subjects)
            else:
                i = max(0, min(n_subjects - 1, c + rnd.choice((-1, 0, 0, 0, 1))))
            path = "/v1/subjects/%s/recommendations?k=5" % subjects[i]
            t_start = time.monotonic()
            try:
                conn.request("GET", path, headers={"Authorization": "Bearer " + KEYS["recommend"]})
                r = conn.getresponse()
                b = r.read()
                status = r.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
                status, b = None, b""
            t_end = time.monotonic()
            personalized = status == 200 and b'"personalized":true' in b
            local.append((i, t_start, t_end, status, personalized))
            count(status)
        conn.close()
        with LOCK:
            results.extend(local)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    # pace: each subject is hammered before and after its withdrawal/erasure
    est_rate = 1500.0
    dwell = max(0.02, min(0.5, target / est_rate / n_subjects / 2))
    ctl = http.client.HTTPConnection(HOST, PORT, timeout=60)
    for i, s in enumerate(subjects):
        current[0] = i
        time.sleep(dwell)
        t_act = time.monotonic()
        kind = ["api-withdraw", "api-withdraw-backdated", "api-erase", "api-withdraw-future-eff",
                "api-erase", "api-withdraw", "api-erase", "cli-withdraw"][i % 8]
        if kind == "cli-withdraw":
            p = hush("--db", DB, "consent", "withdraw", "--subject", s, "--purpose", "personalization", check=False)
            assert p.returncode == 0, p.stderr
        else:
            if kind == "api-erase":
                ctl.request("DELETE", "/v1/subjects/%s" % s, headers={"Authorization": "Bearer " + KEYS["privacy"]})
            else:
                body = {"purpose": "personalization", "granted": False, "notice_version": "probe"}
                if kind == "api-withdraw-backdated":
                    body["effective_at"] = rfc3339(now_utc() - timedelta(hours=1))
                if kind == "api-withdraw-future-eff":
                    body["effective_at"] = rfc3339(now_utc() + timedelta(minutes=4))
                ctl.request("PUT", "/v1/subjects/%s/consent" % s, body=json.dumps(body),
                            headers={"Authorization": "Bearer " + KEYS["privacy"],
                                     "Content-Type": "application/json"})
            r = ctl.getresponse()
            b = r.read()
            count(r.status)
            if r.status != 200:
                ctl_failures.append("%s %s %s" % (kind, r.status, b[:80]))
                action[i] = kind
                time.sleep(dwell)
                continue
            if kind == "api-erase" and not (jbody(b) or {}).get("receipt", {}).get("wal_truncated", True):
                receipts_not_truncated[0] += 1
        ack[i] = time.monotonic()
        action[i] = kind
        ctl_latency.append(ack[i] - t_act)
        time.sleep(dwell)
    done[0] = True
    for t in threads:
        t.join()
    ctl.close()
    elapsed = time.monotonic() - t0
    scored_after = [r for r in results if r[3] == 200 and ack[r[0]] is not None and r[1] > ack[r[0]]]
    in_flight = [r for r in results if r[3] == 200 and ack[r[0]] is not None and r[1] <= ack[r[0]] < r[2]]
    statuses = {}
    for r in results:
        statuses[r[3]] = statuses.get(r[3], 0) + 1
    after = sum(1 for r in results if ack[r[0]] is not None and r[1] > ack[r[0]])
    print("  %d requests in %.1f s (%.0f/s), statuses %s; %d started after their subject's ack; "
          "%d scored 200 overlapping the ack (started before it)" % (
              len(results), elapsed, len(results) / elapsed, statuses, after, len(in_flight)), flush=True)
    by_kind = {}
    for r in scored_after:
        by_kind[action[r[0]]] = by_kind.get(action[r[0]], 0) + 1
    probe("200 scored responses that started after the ack", 0,
          "%d of %d post-ack requests (%d total) %s" % (len(scored_after), after, len(results), by_kind),
          len(scored_after) == 0)
    probe("load: no 5xx / transport errors", 0, "%d 5xx, %d errors" % (
        sum(v for k, v in statuses.items() if k and k >= 500), statuses.get(None, 0)),
        not any(k is None or k >= 500 for k in statuses))
    probe("erasures under load: receipts with wal_truncated=false", "(info)", receipts_not_truncated[0], True)
    probe("withdrawals/erasures under load answered 200", "all", "%d failed %s" % (len(ctl_failures),
          ctl_failures[:3]), not ctl_failures)
    if ctl_latency:
        probe("withdrawal/erasure ack latency under load (info)", "(info)", "median %.0f ms, max %.0f ms" % (
            statistics.median(ctl_latency) * 1000, max(ctl_latency) * 1000), True)
    erased = [subjects[i] for i in range(n_subjects) if action[i] == "api-erase"]
    res = scan(erased, key)
    probe("right after the load: raw/pseudonym/hex of %d subjects erased under load" % len(erased), "0/0/0",
          "%d/%d/%d (row keys of %d subjects; files %s)" % (res["raw"], res["pseudonym"], res["pseudonym_hex"],
                                                             res["row_key_subjects"], res["bytes"]),
          res["raw"] == 0 and res["pseudonym"] == 0 and res["pseudonym_hex"] == 0)
    return {"requests": len(results), "post_ack_requests": after, "post_ack_scored": len(scored_after),
            "seconds": elapsed, "erased_under_load": erased}


# --------------------------------------------------------------------------- family 3


def wait_closed(socks, limit, trickle=None, interval=1.0):
    """Waits until each socket is closed by the peer; returns {index: seconds} (None if still open)."""
    start = time.monotonic()
    closed = {}
    last_trickle = start
    pos = {i: 0 for i in range(len(socks))}
    by_fd = {s.fileno(): i for i, s in enumerate(socks)}
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
    while time.monotonic() - start < limit and len(closed) < len(socks):
        for fd, _ in poller.poll(200):
            i = by_fd[fd]
            s = socks[i]
            if i in closed:
                continue
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                closed[i] = time.monotonic() - start
                poller.unregister(s)
        if trickle is not None and time.monotonic() - last_trickle >= interval:
            last_trickle = time.monotonic()
            for i, s in enumerate(socks):
                if i in closed:
                    continue
                try:
                    s.send(trickle[pos[i] % len(trickle):pos[i] % len(trickle) + 1])
                    pos[i] += 1
                except OSError:
                    closed[i] = time.monotonic() - start
    return [closed.get(i) for i in range(len(socks))]


def summary_secs(times):
    got = [t for t in times if t is not None]
    return "%d/%d closed, min %.1f s, max %.1f s" % (len(got), len(times), min(got) if got else -1,
                                                      max(got) if got else -1)


def family_connections():
    FAMILY[0] = "3 connections"
    print("\n== 3 slowloris, silent sockets, idle keep-alive, connection cap", flush=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))

    def connect(n):
        out = []
        for _ in range(n):
            s = socket.create_connection((HOST, PORT), timeout=5)
            s.setblocking(False)
            out.append(s)
        return out

    # 150 slow headers + 50 silent sockets + 1 idle keep-alive, all at once
    slow = connect(150)
    silent = connect(50)
    ka = socket.create_connection((HOST, PORT), timeout=5)
    ka.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = ka.recv(4096)
    count(int(resp.split()[1]) if resp.startswith(b"HTTP/") else None)
    ka.setblocking(False)
    trickle = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 4000
    results = {}

    def run(name, socks, tr):
        results[name] = wait_closed(socks, 45, trickle=tr, interval=1.0)

    th = [threading.Thread(target=run, args=("slow", slow, trickle)),
          threading.Thread(target=run, args=("silent", silent, None)),
          threading.Thread(target=run, args=("keepalive", [ka], None))]
    for t in th:
        t.start()
    for t in th:
        t.join()
    for name, label in [("slow", "150 slowloris (1 header byte/s)"), ("silent", "50 silent sockets"),
                        ("keepalive", "idle keep-alive after a response")]:
        t = results[name]
        ok = all(x is not None and x <= 12.5 for x in t)
        probe("%s closed within 12.5 s" % label, "<=12.5 s (10 s timeout)", summary_secs(t), ok)
    for s in slow + silent + [ka]:
        s.close()

    # slow body: complete head with Content-Length, body trickled
    cases = [("POST /v1/events (ingest key), body 1 B/s", "POST", "/v1/events", KEYS["ingest"]),
             ("GET /healthz with a trickled body", "GET", "/healthz", None),
             ("POST /v1/events without key, body 1 B/s", "POST", "/v1/events", None)]
    socks, names = [], []
    for label, m, path, key in cases:
        s = socket.create_connection((HOST, PORT), timeout=5)
        head = "%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n" % (m, path)
        if key:
            head += "Authorization: Bearer %s\r\n" % key
        s.sendall((head + "\r\n").encode())
        s.setblocking(False)
        socks.append(s)
        names.append(label)
    t = wait_closed(socks, 40, trickle=b'{"events":[' + b" " * 100000, interval=1.0)
    for label, x in zip(names, t):
        probe("slow body: %s" % label, "closed <=12.5 s", "closed after %s s" % (
            "%.1f" % x if x is not None else ">40"), x is not None and x <= 12.5)
    for s in socks:
        s.close()

    # slow reader: many pipelined requests, responses never read
    base = metric("hush_open_connections")  # counts the scrape's own connection
    s = socket.create_connection((HOST, PORT), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    req = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
    s.setblocking(False)
    sent = 0
    t_start = time.monotonic()
    while time.monotonic() - t_start < 5:
        try:
            sent += s.send(req * 64)
        except BlockingIOError:
            time.sleep(0.05)
        except OSError:
            break
    held = None
    for k in range(40):
        time.sleep(1)
        n = metric("hush_open_connections")
        if n is not None and base is not None and n <= base:
            held = k + 1
            break
    probe("slow reader (pipelined /openapi.json, never read) closed", "closed <=30 s",
          "sent %d B; %s" % (sent, "closed after ~%d s" % held if held else "still open after 40 s"),
          held is not None and held <= 30)
    s.close()
    time.sleep(1)

    # connection cap: 1100 sockets at once (max_connections 1024)
    many = []
    for _ in range(1100):
        try:
            c = socket.create_connection((HOST, PORT), timeout=5)
            c.setblocking(False)
            many.append(c)
        except OSError:
            break
    time.sleep(1.0)
    closed_now = 0
    for c in many:
        try:
            d = c.recv(1)
            if d == b"":
                closed_now += 1
        except BlockingIOError:
            pass
        except OSError:
            closed_now += 1
    try:
        st, _, _ = call("GET", "/healthz", timeout=3)
        legit = st
    except OSError as e:
        legit = type(e).__name__
    probe("connection cap: of 1100 sockets, closed on accept", ">= 76", "%d closed at once" % closed_now,
          closed_now >= 1100 - 1024)
    probe("legit request while the cap is held (info)", "(info: refused)", legit, True)
    t = wait_closed(many, 20)
    probe("held sockets released by the header timeout", "all <=12.5 s", summary_secs(t),
          all(x is not None and x <= 12.5 for x in t))
    for c in many:
        c.close()
    time.sleep(0.5)
    st, _, _ = call("GET", "/healthz")
    probe("server answers after the connection probes", 200, st, st == 200)
    refused = metric("hush_connections_refused_total")
    probe("hush_connections_refused_total counted", ">= 76", refused, refused is not None and refused >= 76)


# --------------------------------------------------------------------------- family 4


def family_input():
    FAMILY[0] = "4 hostile-input"
    print("\n== 4 hostile input", flush=True)
    A, ING, REC, PRIV = KEYS["admin"], KEYS["ingest"], KEYS["recommend"], KEYS["privacy"]

    # ingest-only key oracle: consented, withdrawn, never seen, erased
    consented, withdrawn, erased = sid("oracle", 1), sid("oracle", 2), sid("oracle", 3)
    never = sid("oracle", 4)
    for s in (consented, withdrawn, erased):
        seed_subject(s)
    for p in ("personalization", "training"):
        grant(withdrawn, p, granted=False)
    call("DELETE", "/v1/subjects/%s" % erased, A)
    answers = {}
    classes = [("consented", consented), ("withdrawn", withdrawn), ("never-seen", never), ("erased", erased)]
    samples = {label: [] for label, _ in classes}
    for label, s in classes:
        st, h, b = ingest([{"subject_id": s, "item_id": ITEMS[0], "kind": "view"}], ING)
        answers[label] = (st, b, h.get("content-length"))
    for _ in range(40):  # interleaved, so drift hits every class alike
        for label, s in classes:
            ev = {"subject_id": s, "item_id": ITEMS[0], "kind": "view"}
            t = time.perf_counter()
            ingest([ev], ING)
            samples[label].append((time.perf_counter() - t) * 1000)
    timings = {k: statistics.median(v) for k, v in samples.items()}
    same = len(set((a[0], a[1]) for a in answers.values())) == 1
    probe("POST /v1/events answer is identical for consented/withdrawn/never/erased", "identical",
          {k: "%s %s" % (v[0], v[1].decode()[:40]) for k, v in answers.items()}, same)
    # one-shot guess: "consented" when a single request is slower than the midpoint of the medians
    others = [x for k, v in samples.items() if k != "consented" for x in v]
    cut = (timings["consented"] + statistics.median(others)) / 2
    right = sum(x > cut for x in samples["consented"]) + sum(x <= cut for x in others)
    accuracy = right / (len(samples["consented"]) + len(others))
    ratio = timings["consented"] / max(1e-9, statistics.median(others))
    probe("POST /v1/events latency by subject state (median ms, 40 each, interleaved)",
          "no state-dependent gap (<1.3x)",
          "%s; one-request guess of 'consented' right %.0f%%" % (
              {k: round(v, 2) for k, v in timings.items()}, 100 * accuracy), ratio < 1.3)

    # the per-outcome counters of POST /v1/events are on /metrics, which needs no key
    def outcomes():
        st, _, b = call("GET", "/metrics")
        out = {}
        for line in b.decode().splitlines():
            m = re.match(r'hush_events_total\{outcome="(\w+)"\} (\S+)', line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out
    seen = {}
    for label, s in [("consented", consented), ("withdrawn", withdrawn), ("erased", erased)]:
        before = outcomes()
        ingest([{"subject_id": s, "item_id": ITEMS[3], "kind": "view"}] * 50, ING)
        after = outcomes()
        moved = sorted(k for k in after if after[k] - before.get(k, 0) >= 50)
        seen[label] = moved
    distinct = len(set(tuple(v) for v in seen.values()))
    probe("ingest key + keyless /metrics: outcome counter that moves per subject", "not subject-dependent",
          seen, distinct == 1)

    # client-chosen HTTP methods become /metrics label values (no key needed)
    st, _, b = call("GET", "/metrics")
    size0 = len(b)
    for k in range(300):
        raw_request(("PROBE%s%04d /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (RUN, k)).encode(),
                    timeout=5)
    st, _, b = call("GET", "/metrics")
    series = b.decode().count('method="PROBE%s' % RUN)
    probe("300 made-up methods: new /metrics series (label cardinality)", "bounded (0)",
          "%d series mention them; /metrics %d -> %d bytes" % (series, size0, len(b)), series == 0)

    # forged consent source
    s = sid("source", 1)
    for src, exp in [("cli", 400), ("import", 400), ("CLI", 400), ("api", 200), (None, 200)]:
        body = {"purpose": "personalization", "granted": True, "notice_version": "n"}
        if src is not None:
            body["source"] = src
        st, _, b = call("PUT", "/v1/subjects/%s/consent" % s, A, body)
        probe("consent source %r" % src, exp, "%s %s" % (st, (jbody(b) or {}).get("error")), st == exp)
    st, _, b = call("GET", "/v1/subjects/%s/consent" % s, A)
    sources = sorted(set(h.get("source") for h in (jbody(b) or {}).get("history", [])))
    probe("ledger sources for API records", ["api"], sources, sources == ["api"])

    # Sec-GPC
    s = sid("gpc", 1)
    seed_subject(s)
    path = "/v1/subjects/%s/recommendations" % s
    for label, lines, exp in [("none", [], 200), ("Sec-GPC: 1", ["1"], 403), ("Sec-GPC: 0", ["0"], 200),
                              ("Sec-GPC: 0 then Sec-GPC: 1", ["0", "1"], 403),
                              ("Sec-GPC: 1 then Sec-GPC: 0", ["1", "0"], 403),
                              ("Sec-GPC: '0, 1' (one line, comma-joined)", ["0, 1"], 403),
                              ("Sec-GPC: '1, 1' (two 1s merged by a proxy)", ["1, 1"], 403),
                              ("Sec-GPC: ' 1 ' (spaces)", [" 1 "], 403)]:
        req = "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n" % (path, A)
        req += "".join("Sec-GPC: %s\r\n" % v for v in lines) + "Connection: close\r\n\r\n"
        st, _, b = raw_request(req.encode())
        probe("GPC %s" % label, exp, "%s %s" % (st, (jbody(b) or {}).get("reason")), st == exp)

    # auth scheme case
    for label, hv, exp in [("lower-case bearer", "bearer " + REC, 200), ("upper-case BEARER", "BEARER " + REC, 200),
                           ("Basic scheme", "Basic " + REC, 401), ("no scheme", REC, 401),
                           ("bearer with empty token", "bearer ", 401)]:
        st, _, b = call("GET", "/v1/recommendations/popular", headers={"Authorization": hv})
        probe("Authorization: %s" % label, exp, st, st == exp)
    st, _, _ = call("GET", "/v1/recommendations/popular", headers={"X-API-Key": REC})
    probe("X-API-Key header", 200, st, st == 200)
    st, _, b = call("GET", "/v1/subjects/%s/export" % s, ING)
    probe("ingest key on export", 403, "%s %s" % (st, (jbody(b) or {}).get("error")), st == 403)
    st, _, b = call("DELETE", "/v1/subjects/%s" % s, REC)
    probe("recommend key on erase", 403, st, st == 403)

    # paths, queries, error bodies
    def jerr(label, st, b, exp, code=None):
        j = jbody(b)
        ok = st == exp and isinstance(j, dict) and "error" in j and (code is None or j.get("error") == code)
        probe(label, "%s JSON%s" % (exp, " " + code if code else ""), "%s %s" % (st, b[:70]), ok)

    st, _, b = call("GET", "/v1/subjects/%FF%FE/recommendations", A)
    jerr("percent-encoded invalid UTF-8 in path", st, b, 400)
    st, _, b = raw_request(b"GET /v1/subjects/\xff\xfe/recommendations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                           + A.encode() + b"\r\nConnection: close\r\n\r\n")
    probe("raw invalid UTF-8 bytes in the request line", "400 JSON", "%s %r" % (st, b[:60]),
          st == 400 and jbody(b) is not None)
    st, _, b = call("GET", "/v1/recommendations/popular?k=1&k=2", A)
    jerr("duplicated query key k", st, b, 400, "invalid_query")
    st, _, b = call("GET", "/v1/recommendations/popular?k=0", A)
    jerr("k=0", st, b, 400)
    st, _, b = call("GET", "/v1/recommendations/popular?k=100000", A)
    jerr("k=100000", st, b, 400)
    st, _, b = call("GET", "/v1/recommendations/popular?k=%FF", A)
    jerr("k=%FF (invalid UTF-8 in query)", st, b, 400)
    st, _, b = call("GET", "/no/such/route")
    jerr("404 body", st, b, 404, "no_route")
    st, _, b = call("GET", "/v1/no/such", A)
    jerr("404 body under /v1", st, b, 404, "no_route")
    st, _, b = call("DELETE", "/healthz")
    jerr("405 body", st, b, 405, "method_not_allowed")
    st, _, b = call("PATCH", "/v1/subjects/x/consent", A)
    jerr("405 body on a subject route", st, b, 405, "method_not_allowed")

    # bodies
    chunked = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + A.encode() +
               b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               b"zz\r\n{}\r\n0\r\n\r\n")
    st, _, b = raw_request(chunked)
    jerr("malformed chunked body (bad size)", st, b, 400, "unreadable_body")
    chunked2 = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + A.encode() +
                b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                b"5\r\n{\"eveXXXXXXX\r\n0\r\n\r\n")
    st, _, b = raw_request(chunked2)
    jerr("malformed chunked body (chunk longer than size)", st, b, 400)
    big = b'{"events":[' + b",".join([b'{"subject_id":"a","item_id":"b","kind":"view"}'] * 30000) + b"]}"
    st, _, b = call("POST", "/v1/events", A, raw_body=big, headers={"Content-Type": "application/json"})
    jerr("body over 1 MiB", st, b, 413)
    deep = b'{"events":' + b"[" * 5000 + b"]" * 5000 + b"}"
    st, _, b = call("POST", "/v1/events", A, raw_body=deep, headers={"Content-Type": "application/json"})
    jerr("5000-deep JSON nesting", st, b, 400)
    st, _, b = raw_request(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked"
                           b"\r\nAuthorization: Bearer " + A.encode() + b"\r\nConnection: close\r\n\r\n0\r\n\r\n")
    probe("Content-Length + Transfer-Encoding (smuggling)", "400 or handled, no 5xx", st, st is None or st < 500)

    # timestamps
    ts_subject = sid("ts", 1)
    seed_subject(ts_subject, n_events=1)
    for label, tsv, exp in [("integer unix seconds", 1741508399, 200), ("string unix seconds", "1741508399", 200),
                            ("RFC 3339 with offset", "2025-03-09T10:00:00+02:00", 200),
                            ("i64::MAX", 2 ** 63 - 1, 400), ("i64::MIN", -(2 ** 63), 400),
                            ("-1", -1, 400), ("year 10000 (253402300800)", 253402300800, 400),
                            ("year 0 RFC 3339", "0000-01-01T00:00:00Z", 400), ("2^64", 2 ** 64, 400),
                            ("float 1.5", 1.5, 400), ("null", None, 200), ("1e30", 1e30, 400),
                            ("true", True, 400)]:
        ev = {"subject_id": ts_subject, "item_id": ITEMS[1], "kind": "view", "timestamp": tsv}
        st, _, b = ingest([ev])
        probe("event timestamp %s" % label, exp, "%s %s" % (st, (jbody(b) or {}).get("error")), st == exp)
    st, _, b = call("GET", "/v1/subjects/%s/export" % ts_subject, A)
    ats = [e.get("at") for e in (jbody(b) or {}).get("events", [])]
    probe("exported event times are RFC 3339", "all strings", ats[:4],
          ats and all(isinstance(a, str) and "T" in a for a in ats))

    # subject ids
    for label, raw, exp in [("a%00b", "a%00b", 400), ("newline", "a%0Ab", 400), ("tab", "a%09b", 400),
                            ("DEL", "a%7Fb", 400), ("C1 U+0085", "a%C2%85b", 400),
                            ("257 bytes", "x" * 257, 400), ("10 KB", "y" * 10240, 400),
                            ("256 bytes", "z" * 256, 403), ("slash a%2Fb", "a%2Fb", 403)]:
        st, h, b = call("GET", "/v1/subjects/%s/recommendations" % raw, A)
        probe("path id %s on recommendations" % label, exp, "%s %s" % (st, (jbody(b) or {}).get("error")),
              st == exp and jbody(b) is not None)
    for label, raw in [("a%00b", "a%00b"), ("newline", "a%0Ab"), ("10 KB", "y" * 10240)]:
        st, _, b = call("PUT", "/v1/subjects/%s/consent" % raw, A,
                        {"purpose": "personalization", "granted": True, "notice_version": "n"})
        probe("path id %s on PUT consent" % label, 400, st, st == 400)
    for label, raw in [("NUL", "a\u0000b"), ("newline", "a\nb"), ("10 KB", "q" * 10240), ("empty", "")]:
        st, _, b = ingest([{"subject_id": raw, "item_id": ITEMS[0], "kind": "view"}])
        probe("event subject_id %s" % label, 400, st, st == 400)
    st, _, b = ingest([{"subject_id": sid("ok", 1), "item_id": "i\u0000x", "kind": "view"}])
    probe("event item_id with NUL", 400, st, st == 400)
    st, _, b = ingest([{"subject_id": sid("ok", 1), "item_id": "i" * 10240, "kind": "view"}])
    probe("event item_id of 10 KB", 400, st, st == 400)
    st, _, b = ingest([{"subject_id": sid("ok", 1), "item_id": ITEMS[0], "kind": "k\nx"}])
    probe("event kind with newline", 400, st, st == 400)

    # Cache-Control: no-store on personal data
    s = sid("cache", 1)
    seed_subject(s)
    for label, m, path, body in [("GET recommendations 200", "GET", "/v1/subjects/%s/recommendations" % s, None),
                                 ("GET export", "GET", "/v1/subjects/%s/export" % s, None),
                                 ("GET consent", "GET", "/v1/subjects/%s/consent" % s, None),
                                 ("PUT consent", "PUT", "/v1/subjects/%s/consent" % s,
                                  {"purpose": "training", "granted": True, "notice_version": "n"}),
                                 ("POST events", "POST", "/v1/events", {"events": []})]:
        st, h, b = call(m, path, A, body)
        probe("Cache-Control on %s" % label, "no-store", "%s %s" % (st, h.get("cache-control")),
              "no-store" in (h.get("cache-control") or ""))
    st, h, b = recs(s, headers={"Sec-GPC": "1"})
    probe("Cache-Control on refused recommendations (403)", "no-store", "%s %s" % (st, h.get("cache-control")),
          "no-store" in (h.get("cache-control") or ""))
    st, h, b = call("DELETE", "/v1/subjects/%s" % s, A)
    probe("Cache-Control on erasure receipt", "no-store", "%s %s" % (st, h.get("cache-control")),
          "no-store" in (h.get("cache-control") or ""))

    # never-seen ids
    ghost = sid("ghost", 1)
    st, _, b = call("DELETE", "/v1/subjects/%s" % ghost, A)
    jerr("erasure of a never-seen id", st, b, 404, "unknown_subject")
    ghost2 = sid("ghost", 2)
    st, _, b = grant(ghost2, granted=False)
    j = jbody(b) or {}
    probe("withdrawal of a never-seen id says so", "200 subject_was_known=false + warning",
          "%s known=%s warning=%s" % (st, j.get("subject_was_known"), bool(j.get("warning"))),
          st == 200 and j.get("subject_was_known") is False and j.get("warning"))
    st, _, b = grant(ghost)
    probe("opt-in after erasure of a never-seen id", 200, "%s %s" % (st, (jbody(b) or {}).get("error")), st == 200)
    st, _, b = ingest([{"subject_id": ghost, "item_id": ITEMS[2], "kind": "view"}])
    st2, _, b2 = call("GET", "/v1/subjects/%s/export" % ghost, A)
    n = len((jbody(b2) or {}).get("events", []))
    probe("events of that id after its opt-in are stored", ">=1 event", "%s, export %s, %d events" % (st, st2, n),
          n >= 1)
    # erased known subject: repeated erase, and opt-in through the API without re-admission
    k = sid("erased", 1)
    seed_subject(k)
    st1, _, _ = call("DELETE", "/v1/subjects/%s" % k, A)
    st2, _, b2 = call("DELETE", "/v1/subjects/%s" % k, A)
    probe("second erasure of a known subject", "200 (already erased)", "%s then %s" % (st1, st2), st2 in (200, 404))
    st, _, b = grant(k)
    probe("API grant for an erased known subject", "409/403 (needs explicit re-admission)",
          "%s %s" % (st, (jbody(b) or {}).get("error")), st in (403, 409, 400))
    st, _, b = recs(k)
    probe("recommendations for an erased subject", 403, st, st == 403)


# --------------------------------------------------------------------------- family 5


def load_key():
    for name in ("hush.key",):
        p = os.path.join(os.path.dirname(DB), name)
        if os.path.exists(p):
            return bytes.fromhex(open(p).read().strip())
    raise RuntimeError("no hush.key beside the store")


def pseudonym(key, s):
    return hmac.new(key, s.encode(), hashlib.sha256).digest()


def row_key(p):
    d = hashlib.sha256(b"hush/row-key/v1\0" + p).digest()[:8]
    v = int.from_bytes(d, "little", signed=True)
    return v.to_bytes(8, "big", signed=True)


def suppression_tag(p):
    return hashlib.sha256(b"hush/suppression/v1\0" + p).digest()


def store_files():
    return [DB + sfx for sfx in ("", "-wal", "-shm") if os.path.exists(DB + sfx)]


def scan(subjects, key):
    blobs = {f: open(f, "rb").read() for f in store_files()}
    res = {"raw": 0, "pseudonym": 0, "pseudonym_hex": 0, "row_key": 0, "row_key_subjects": 0,
           "suppression_tag": 0, "bytes": {os.path.basename(f): len(b) for f, b in blobs.items()}}
    for s in subjects:
        p = pseudonym(key, s)
        hit_rk = 0
        for f, b in blobs.items():
            res["raw"] += b.count(s.encode())
            res["pseudonym"] += b.count(p)
            res["pseudonym_hex"] += b.count(p.hex().encode())
            hit_rk += b.count(row_key(p))
            res["suppression_tag"] += b.count(suppression_tag(p))
        res["row_key"] += hit_rk
        res["row_key_subjects"] += hit_rk > 0
    return res


def family_erasure(n, key, erased_under_load):
    FAMILY[0] = "5 erasure-residue"
    print("\n== 5 erasure residue (%d subjects)" % n, flush=True)
    subjects = [sid("erase", i) for i in range(n)]
    control = [sid("keep", i) for i in range(20)]
    for s in subjects + control:
        for p in ("personalization", "training"):
            st, _, b = grant(s, p)
            assert st == 200, b
    evs = [{"subject_id": s, "item_id": ITEMS[(i * 11 + j) % len(ITEMS)], "kind": "purchase"}
           for i, s in enumerate(subjects + control) for j in range(4)]
    for k in range(0, len(evs), 500):
        st, _, b = ingest(evs[k:k + 500])
        assert st == 200, b
    # some recommendation reads so the readers hold pages in flight
    for s in subjects[:20]:
        recs(s)
    before = scan(subjects, key)
    probe("scan finds live subjects before erasure (sanity)", "pseudonyms present",
          "%d pseudonym copies, %d row keys" % (before["pseudonym"], before["row_key"]), before["pseudonym"] > 0)
    n_cli = n // 4
    api_part, cli_part = subjects[:n - n_cli], subjects[n - n_cli:]
    not_truncated = 0
    bad = 0
    for s in api_part:
        st, _, b = call("DELETE", "/v1/subjects/%s" % s, KEYS["privacy"])
        bad += st != 200
        if not (jbody(b) or {}).get("receipt", {}).get("wal_truncated", False):
            not_truncated += 1
    req = os.path.join(WORK, "erase-requests.csv")
    with open(req, "w") as f:
        f.write("subject_id,requested_at\n")
        for s in cli_part:
            f.write("%s,%s\n" % (s, rfc3339(now_utc())))
    p = hush("--db", DB, "erase", "--requests", req, check=False)
    probe("API erasures answered 200", 0, "%d not 200" % bad, bad == 0)
    probe("CLI erase --requests", "exit 0", "exit %d" % p.returncode, p.returncode == 0)
    probe("API erasure receipts with wal_truncated=false (server idle)", 0, not_truncated, not_truncated == 0)
    after = scan(subjects, key)
    ctrl = scan(control, key)
    probe("raw ids left after %d erasures (db, -wal, -shm)" % n, 0, after["raw"], after["raw"] == 0)
    probe("pseudonyms (32 B) left after erasures", 0, after["pseudonym"], after["pseudonym"] == 0)
    probe("pseudonym hex left after erasures", 0, after["pseudonym_hex"], after["pseudonym_hex"] == 0)
    probe("64-bit row keys left (documented residue)", "(documented)",
          "%d copies for %d of %d subjects" % (after["row_key"], after["row_key_subjects"], n), True)
    probe("suppression tags present (documented)", n, after["suppression_tag"], after["suppression_tag"] >= n)
    probe("control subjects still present (scan sanity)", ">0", ctrl["pseudonym"], ctrl["pseudonym"] > 0)
    probe("store file sizes (info)", "(info)", after["bytes"], True)
    res = {"erased": n, "after": after}
    if erased_under_load:
        load = scan(erased_under_load, key)
        probe("subjects erased under load: raw/pseudonym/hex left", "0/0/0",
              "%d/%d/%d (row keys: %d subjects)" % (load["raw"], load["pseudonym"], load["pseudonym_hex"],
                                                     load["row_key_subjects"]),
              load["raw"] == 0 and load["pseudonym"] == 0 and load["pseudonym_hex"] == 0)
        res["under_load"] = load
    # file modes
    out = os.path.join(WORK, "export-%s.json" % control[0])
    hush("--db", DB, "export", "--subject", control[0], "--out", out, check=False)
    for f in store_files() + [out, os.path.join(os.path.dirname(DB), "hush.key")]:
        if not os.path.exists(f):
            probe("mode of %s" % os.path.basename(f), "0600", "missing", False)
            continue
        mode = stat.S_IMODE(os.stat(f).st_mode)
        probe("mode of %s" % os.path.basename(f), "0600", "%04o" % mode, mode & 0o077 == 0)
    others = []
    for f in sorted(os.listdir(os.path.dirname(DB))):
        path = os.path.join(os.path.dirname(DB), f)
        if os.path.isfile(path):
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o077:
                others.append("%s %04o" % (f, mode))
    private = [o for o in others if re.match(r"(features.*\.hfs|.*\.evaluation\.(md|json)|eval-nonprivate\.hmdl) ", o)]
    probe("private quickstart outputs (feature sets, private evaluations, non-private twin) owner-only", "none 0644",
          private, not private)
    probe("other quickstart files readable by others (info)", "(info)", [o for o in others if o not in private], True)
    return res


# --------------------------------------------------------------------------- family 6


def family_logs(log_paths, key):
    FAMILY[0] = "6 logs"
    print("\n== 6 logs", flush=True)
    text = b""
    for p in log_paths:
        if os.path.exists(p):
            text += open(p, "rb").read()
    lines = text.count(b"\n")
    raw_hits = sum(text.count(s.encode()) for s in USED_IDS if len(s) >= 8)
    pseud_hits = sum(text.count(pseudonym(key, s).hex().encode()) for s in USED_IDS)
    probe("server log lines scanned (info)", "(info)", lines, True)
    probe("raw subject ids in the server logs (%d ids)" % len(USED_IDS), 0, raw_hits, raw_hits == 0)
    probe("full 64-hex pseudonyms in the server logs", 0, pseud_hits, pseud_hits == 0)
    panics = text.count(b"panicked")
    probe("panics in the server logs", 0, panics, panics == 0)
    st, _, b = call("GET", "/metrics")
    mhits = sum(b.count(s.encode()) for s in USED_IDS)
    probe("raw subject ids in /metrics", 0, mhits, mhits == 0)
    return {"lines": lines, "raw": raw_hits, "pseudonyms": pseud_hits}


# --------------------------------------------------------------------------- main


def main():
    global HUSH, REPO, WORK, DB, PORT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hush", required=True, help="the hush binary (release)")
    ap.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    help="checkout with data/sample and models/ (default: this script's)")
    ap.add_argument("--workdir", help="fresh directory to work in (default: a new temporary one)")
    ap.add_argument("--requests", type=int, default=60000, help="recommendation requests under load")
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--load-subjects", type=int, default=240)
    ap.add_argument("--erase", type=int, default=400, help="subjects to erase for the residue scan")
    ap.add_argument("--skip", default="", help="comma list of families to skip (1-6)")
    args = ap.parse_args()
    HUSH = os.path.abspath(args.hush)
    REPO = os.path.abspath(args.repo)
    if args.workdir:
        if os.path.exists(args.workdir) and os.listdir(args.workdir):
            sys.exit("--workdir must be new or empty")
        os.makedirs(args.workdir, exist_ok=True)
        WORK = os.path.abspath(args.workdir)
    else:
        WORK = tempfile.mkdtemp(prefix="hush-probes-")
    skip = set(x.strip() for x in args.skip.split(",") if x.strip())
    print("work dir %s, binary %s" % (WORK, HUSH), flush=True)
    t = time.time()
    p = hush("quickstart", "--sample", os.path.join(REPO, "data", "sample"), "--config",
             os.path.join(REPO, "models", "sample.toml"), "--dir", os.path.join(WORK, "qs"), "--no-serve", "-q")
    print("quickstart: %.1f s" % (time.time() - t), flush=True)
    DB = os.path.join(WORK, "qs", "hush.db")
    for name, scopes in [("admin", "recommend,ingest,privacy,admin"), ("recommend", "recommend"),
                         ("ingest", "ingest"), ("privacy", "privacy")]:
        p = hush("--db", DB, "--json", "keys", "create", "--name", "probe-" + name, "--scopes", scopes)
        KEYS[name] = json.loads(p.stdout)["key"]
    ITEMS.extend(l.split(",")[0] for l in open(os.path.join(REPO, "data", "sample", "items.csv")).read()
                 .splitlines()[1:])
    PORT = free_port()
    log_path = os.path.join(WORK, "server.log")
    server = Server(PORT, log_path)
    shim = build_shim()
    key = load_key()
    results = {}
    try:
        if "1" not in skip:
            family_clock(shim)
        load = None
        if "2" not in skip:
            load = family_load(args.requests, args.workers, args.load_subjects, key)
            results["load"] = {k: v for k, v in load.items() if k != "erased_under_load"}
        if "3" not in skip:
            family_connections()
        if "4" not in skip:
            family_input()
        if "5" not in skip:
            results["erasure"] = family_erasure(args.erase, key, load["erased_under_load"] if load else [])
        if "6" not in skip:
            results["logs"] = family_logs([log_path, os.path.join(WORK, "replica.log")], key)
    finally:
        FAMILY[0] = "teardown"
        server.stop()
    # residue after a clean shutdown too
    if "5" not in skip:
        FAMILY[0] = "5 erasure-residue"
        subjects = [s for s in USED_IDS if "-erase-" in s]
        after = scan(subjects, key)
        probe("after shutdown: raw/pseudonym/hex left for erased subjects", "0/0/0",
              "%d/%d/%d, files %s" % (after["raw"], after["pseudonym"], after["pseudonym_hex"], after["bytes"]),
              after["raw"] == 0 and after["pseudonym"] == 0 and after["pseudonym_hex"] == 0)

    print("\n%-20s %7s %7s %9s %5s" % ("family", "probes", "passed", "requests", "5xx"))
    fams = sorted(set(p["family"] for p in PROBES) | set(STATS))
    tot = [0, 0, 0, 0]
    for fam in fams:
        ps = [p for p in PROBES if p["family"] == fam]
        st = STATS.get(fam, {"requests": 0, "5xx": 0})
        row = [len(ps), sum(p["ok"] for p in ps), st["requests"], st["5xx"]]
        tot = [a + b for a, b in zip(tot, row)]
        print("%-20s %7d %7d %9d %5d" % (fam, *row))
    print("%-20s %7d %7d %9d %5d" % ("total", *tot))
    if "load" in results:
        l = results["load"]
        print("\npost-ack scored: %d of %d post-ack requests (%d requests in all, %.0f s)" % (
            l["post_ack_scored"], l["post_ack_requests"], l["requests"], l["seconds"]))
    failed = [p for p in PROBES if not p["ok"]]
    print("\n%d deviations:" % len(failed))
    for p in failed:
        print("  [%s] %s\n      expected %s\n      observed %s" % (p["family"], p["name"], p["expected"],
                                                                  p["observed"]))
    with open(os.path.join(WORK, "probes.json"), "w") as f:
        json.dump({"probes": PROBES, "stats": STATS, "results": results}, f, indent=1, default=str)
    print("\nall probes: %s" % os.path.join(WORK, "probes.json"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
