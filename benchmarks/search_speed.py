"""Search database speed at 10k-1M moments: storing, loading, exact top-k, and vector indexes.

Synthetic L2-normalised vectors (D = 768, the base LvT embedding) are written
through ``open_videoprism.search.Database`` in files of 100 moments (no
thumbnails), then for each size:

* store: moments/s written to SQLite (one transaction per file, as ``index`` does);
* load: seconds to read all embeddings back out of SQLite; cache_write / cached_load: writing the
  ``.npy`` cache beside the database, then opening it (memory-mapped; what ``search`` does);
* exact: numpy ``E @ q`` + argpartition, median ms per query (k = 10);
* faiss-flat / usearch-hnsw (if installed): build seconds, ms per query, and
  recall@10 against exact search.

    python benchmarks/search_speed.py --sizes 10000 100000 1000000

Run by hand; figures go to docs/benchmarks.md with the command and machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from open_videoprism.search.db import Database, Moment
from open_videoprism.search.query import top_k


def _vectors(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _median_ms(fn, queries: np.ndarray) -> float:
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def bench(n: int, d: int, folder: Path, queries: np.ndarray, per_file: int = 100, hnsw_max: int = 10_000) -> dict[str, float]:
    emb = _vectors(n, d, seed=n)
    db = Database(folder / f"bench_{n}.db", create=True)
    db.set_meta({"checkpoint": "synthetic", "dim": str(d)})
    t = time.perf_counter()
    for f in range(0, n, per_file):
        db.put_file(f"/videos/{f // per_file:07d}.mp4", 1, 1, 60.0,
                    [Moment(i * 4.0, i * 4.0 + 4, False, emb[f + i], None) for i in range(min(per_file, n - f))])
    row = {"n": n, "store_per_s": n / (time.perf_counter() - t),
           "db_mb": os.path.getsize(db.path) / 2**20}
    t = time.perf_counter()
    _, loaded = db.embeddings()
    row["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    db.cached_embeddings()  # writes the .npy cache
    row["cache_write_s"] = time.perf_counter() - t
    t = time.perf_counter()
    _, mapped = db.cached_embeddings()  # what search/serve do once the cache exists
    row["cached_load_s"] = time.perf_counter() - t
    db.close()
    row["exact_mmap_ms"] = _median_ms(lambda q: top_k(mapped, q, 10), queries)
    del mapped
    assert loaded.shape == (n, d)
    row["exact_ms"] = _median_ms(lambda q: top_k(loaded, q, 10), queries)
    exact = [set(top_k(loaded, q, 10)[0]) for q in queries]
    try:
        import faiss

        t = time.perf_counter()
        flat = faiss.IndexFlatIP(d)
        flat.add(loaded)
        row["faiss_build_s"] = time.perf_counter() - t
        row["faiss_ms"] = _median_ms(lambda q: flat.search(q[None], 10), queries)
    except ImportError:
        pass
    try:
        if n > hnsw_max:  # HNSW construction is ~2.5 ms per vector on 2 cores: minutes at 100k
            raise ImportError
        from usearch.index import Index

        t = time.perf_counter()
        hnsw = Index(ndim=d, metric="ip", dtype="f32")
        hnsw.add(np.arange(n), loaded, threads=os.cpu_count() or 1)
        row["usearch_build_s"] = time.perf_counter() - t
        row["usearch_ms"] = _median_ms(lambda q: hnsw.search(q, 10), queries)
        found = [set(hnsw.search(q, 10).keys.tolist()) for q in queries]
        row["usearch_recall"] = float(np.mean([len(a & b) / 10 for a, b in zip(exact, found)]))
    except ImportError:
        pass
    del loaded, emb
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--hnsw-max", type=int, default=10_000, help="build the usearch HNSW index up to this size")
    p.add_argument("--dir", help="where to write the databases (default: a temporary folder, removed)")
    args = p.parse_args()
    queries = _vectors(args.queries, args.dim, seed=12345)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in args.sizes:
            row = bench(n, args.dim, Path(tmp), queries, hnsw_max=args.hnsw_max)
            print(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
            for f in Path(tmp).glob(f"bench_{n}.db*"):
                f.unlink()


if __name__ == "__main__":
    main()
