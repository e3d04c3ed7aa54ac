#!/usr/bin/env python3
"""Run a command; print its wall time (s) and peak resident set size (bytes) as JSON.

Usage: peak_rss.py COMMAND [ARGS...]
"""
import json
import resource
import subprocess
import sys
import time

start = time.perf_counter()
completed = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.perf_counter() - start
if completed.returncode != 0:
    sys.exit(f"command failed with exit code {completed.returncode}: {' '.join(sys.argv[1:])}")
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(json.dumps({"seconds": round(wall, 3), "peak_rss_bytes": peak_kib * 1024}))
