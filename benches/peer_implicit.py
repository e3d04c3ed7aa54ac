#!/usr/bin/env python3
"""Train the `implicit` library's ALS on a split written by `hush evaluate --write-split DIR`
and score it with hush's ranking definitions, so the two are compared on the same data.

Usage: peer_implicit.py DIR [--factors 64] [--iterations 15] [--k 10] [--alpha 1.0] [--regularization 0.01]

Definitions (as in hush's eval module): binary relevance = every test item;
training items excluded; Recall@k = hits/|relevant|; NDCG@k with IDCG over
min(k, |relevant|). Prints one JSON object.
"""
import argparse
import csv
import json
import math
import os
import sys
import time

# Use both cores, and keep BLAS from oversubscribing them.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import scipy.sparse as sp
from implicit.als import AlternatingLeastSquares


def read(path, items):
    rows, cols, vals = [], [], []
    with open(path) as f:
        for r in csv.DictReader(f):
            rows.append(int(r["subject_index"]))
            cols.append(items.setdefault(r["item_id"], len(items)))
            vals.append(float(r["value"]))
    return rows, cols, vals


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--regularization", type=float, default=0.01)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--k", type=int, default=10)
    a = p.parse_args()
    items = {}
    tr = read(os.path.join(a.dir, "train.csv"), items)
    te = read(os.path.join(a.dir, "test.csv"), items)
    n_users = max(tr[0] + te[0]) + 1
    n_items = len(items)
    # Binary preferences: implicit 0.7 uses the matrix value as the confidence.
    train = sp.csr_matrix((np.ones(len(tr[0]), dtype=np.float32), (tr[0], tr[1])), shape=(n_users, n_items))
    model = AlternatingLeastSquares(factors=a.factors, regularization=a.regularization, alpha=a.alpha,
                                    iterations=a.iterations, random_state=42, num_threads=2)
    start = time.perf_counter()
    model.fit(train, show_progress=False)
    seconds = time.perf_counter() - start
    relevant = {}
    for u, i in zip(te[0], te[1]):
        relevant.setdefault(u, set()).add(i)
    users = np.array(sorted(relevant))
    ids, _ = model.recommend(users, train[users], N=a.k, filter_already_liked_items=True)
    recall = ndcg = 0.0
    for u, recs in zip(users, ids):
        rel = relevant[u]
        hits = [1.0 if i in rel else 0.0 for i in recs[: a.k]]
        recall += sum(hits) / len(rel)
        dcg = sum(h / math.log2(pos + 2) for pos, h in enumerate(hits))
        idcg = sum(1.0 / math.log2(pos + 2) for pos in range(min(a.k, len(rel))))
        ndcg += dcg / idcg
    n = len(users)
    print(json.dumps({"library": "implicit", "factors": a.factors, "iterations": a.iterations,
                      f"recall_at_{a.k}": recall / n, f"ndcg_at_{a.k}": ndcg / n, "subjects": n,
                      "train_seconds": seconds}))


if __name__ == "__main__":
    sys.exit(main())
