"""Top-K recommendations (and embeddings) from a trained run.

    python experiments/recommend.py outputs/crane-lfm2k/2026-12-07_12-00-00 --k 20 --out recs.csv
    python experiments/recommend.py RUN --exclude train --out test_ranking.csv     # the evaluator's ranking
    python experiments/recommend.py RUN --users users.txt --index mips --out recs.parquet
    python experiments/recommend.py RUN --export-embeddings emb/                  # user_emb.npy, item_emb.npy

``--exclude seen`` (default) never recommends an interaction of the dataset file; ``train`` masks the
training interactions only, exactly as the evaluator does at test time; ``none`` masks nothing.
``--users FILE``: one user id (the dataset's integer ``userID``) per line; default all users.
Output: ``user,rank,item,score`` (rank from 1), CSV, or Parquet when the name ends in ``.parquet``
(needs pandas + pyarrow). With ``u_id_mapping.csv`` / ``i_id_mapping.csv`` in the dataset folder,
``--raw-ids`` writes the original ids instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from mmgraph.data.mmrec import DatasetError
from mmgraph.inference import EXCLUDE, InferenceError, Recommender
from mmgraph.training.run import USER_ERRORS
from mmgraph.utils.io import atomic_save_npy


def read_users(path: Path) -> np.ndarray:
    """User ids from a file, one per line (blank lines and ``#`` comments ignored)."""
    if not path.is_file():
        raise InferenceError(f"--users {path}: no such file")
    ids = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if not line.lstrip("-").isdigit():
            raise InferenceError(f"{path}, line {n}: {line!r} is not an integer user id (one userID per line)")
        ids.append(int(line))
    if not ids:
        raise InferenceError(f"{path}: no user id in the file")
    return np.asarray(ids, dtype=np.int64)


def write_recommendations(rec: Recommender, users, k: int, exclude: str, index: str, out: Path,
                          raw_ids: bool = False, progress: bool = True) -> int:
    """Write ``user,rank,item,score`` rows; returns the number of rows."""
    from tqdm.auto import tqdm

    if raw_ids and (rec.user_ids is None or rec.item_ids is None):
        raise InferenceError("--raw-ids: the dataset folder has no u_id_mapping.csv / i_id_mapping.csv")
    parquet = out.suffix == ".parquet"
    if parquet:
        try:
            import pandas as pd  # noqa: F401
            import pyarrow  # noqa: F401
        except ImportError as e:
            raise InferenceError(f"{out}: Parquet output needs pandas and pyarrow (pip install pandas pyarrow); "
                                 "or write .csv") from e
    n_users = rec.num_users if users is None else len(users)
    frames, n_rows = [], 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    bar = tqdm(total=n_users, unit="user", desc="recommend", disable=not progress, file=sys.stderr)
    with tmp.open("w", encoding="utf-8") as f:
        if not parquet:
            f.write("user,rank,item,score\n")
        for block in rec.iter_recommend(users, k, exclude, index):
            items, scores = block.items.numpy(), block.scores.numpy()
            n, kk = items.shape
            u = np.repeat(block.users.numpy(), kk)
            rank = np.tile(np.arange(1, kk + 1), n)
            keep = items.reshape(-1) >= 0  # lists shorter than k are padded with -1
            u, rank, it, sc = u[keep], rank[keep], items.reshape(-1)[keep], scores.reshape(-1)[keep]
            if raw_ids:
                u, it = rec.user_ids[u], rec.item_ids[it]
            if parquet:
                frames.append((u, rank, it, sc))
            else:
                f.write("".join(f"{a},{b},{c},{d:.7g}\n" for a, b, c, d in zip(u.tolist(), rank.tolist(), it.tolist(),
                                                                              sc.tolist())))
            n_rows += int(keep.sum())
            bar.update(n)
    bar.close()
    if parquet:
        import pandas as pd

        cols = [np.concatenate([fr[j] for fr in frames]) if frames else np.array([]) for j in range(4)]
        pd.DataFrame({"user": cols[0], "rank": cols[1], "item": cols[2], "score": cols[3]}).to_parquet(tmp)
    tmp.replace(out)
    return n_rows


def export_embeddings(rec: Recommender, folder: Path) -> list[Path]:
    """``user_emb.npy``, ``item_emb.npy`` (float32) and, when known, the raw-id maps."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [atomic_save_npy(folder / "user_emb.npy", rec.user_embeddings().float().cpu().numpy()),
               atomic_save_npy(folder / "item_emb.npy", rec.item_embeddings().float().cpu().numpy())]
    for name, ids in (("user_ids.tsv", rec.user_ids), ("item_ids.tsv", rec.item_ids)):
        if ids is not None:
            path = folder / name
            path.write_text("id\traw_id\n" + "".join(f"{i}\t{r}\n" for i, r in enumerate(ids)), encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a run folder of experiments/train.py (holds best.pt)")
    ap.add_argument("--k", type=int, default=20, help="items per user (default 20)")
    ap.add_argument("--exclude", choices=EXCLUDE, default="seen", help="interactions never recommended")
    ap.add_argument("--users", default="all", help="FILE with one user id per line, or 'all' (default)")
    ap.add_argument("--out", type=Path, default=None, help="recs.csv or recs.parquet")
    ap.add_argument("--index", choices=("exact", "mips", "ivf", "approx"), default="exact",
                    help="exact (blocked matmul + top-k, any model); mips (faiss exact), ivf (faiss inverted file), "
                    "approx (faiss IVF-PQ): dot-product models, pip install faiss-cpu")
    ap.add_argument("--export-embeddings", type=Path, default=None, metavar="DIR")
    ap.add_argument("--raw-ids", action="store_true", help="write the dataset's raw ids (needs its id maps)")
    ap.add_argument("--data-root", default=None, help="where the datasets are, if not where the run read them")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--checkpoint", default="best.pt", help="best.pt (default, the tested state) or last.pt")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.out is None and args.export_embeddings is None:
            raise InferenceError("nothing to do: give --out recs.csv and/or --export-embeddings DIR")
        users = None if args.users == "all" else read_users(Path(args.users))
        t = time.perf_counter()
        rec = Recommender.from_run(args.run_dir, device=args.device, data_root=args.data_root,
                                   checkpoint=args.checkpoint)
        print(f"loaded {type(rec.model).__name__}: {rec.num_users:,} users x {rec.num_items:,} items "
              f"({time.perf_counter() - t:.1f} s)", file=sys.stderr)
        if args.export_embeddings is not None:
            for p in export_embeddings(rec, args.export_embeddings):
                print(f"wrote {p}", file=sys.stderr)
        if args.out is not None:
            t = time.perf_counter()
            n = write_recommendations(rec, users, args.k, args.exclude, args.index, args.out, args.raw_ids,
                                      progress=not args.no_progress)
            dt = time.perf_counter() - t
            n_users = rec.num_users if users is None else len(users)
            print(f"wrote {args.out}: {n:,} rows, {n_users / dt:,.0f} users/s", file=sys.stderr)
    except (InferenceError, DatasetError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
