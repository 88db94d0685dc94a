"""Raw interactions (+ item text, + item images) -> an MMRec-format dataset folder.

Reads a CSV/TSV of interactions (user, item, optional rating and timestamp), keeps ratings >=
--min-rating if given, removes duplicate (user, item) rows, applies an iterative k-core filter,
maps ids to 0..n-1 (u_id_mapping.csv / i_id_mapping.csv), labels each interaction train/valid/test
(x_label 0/1/2: MMRec's per-user random 8:1:1 rule, or per-user chronological), writes
<out>/<name>/<name>.inter and, from an item text table and/or an image folder keyed by the raw
item id, text_feat.npy / image_feat.npy with their masks (experiments/extract_features.py's
extractors). The folder is read back with mmgraph's loader as a check; prepare.json records the
counts. Train on it with:
  python experiments/train.py dataset=mmrec dataset.name=<name> data_root=<out>

Examples:
  python experiments/prepare_dataset.py ratings.csv --out data --name mydata \\
      --user-col user_id --item-col item_id --rating-col rating --time-col timestamp \\
      --min-rating 4 --user-k 5 --item-k 5 --split time --text items.csv --text-cols title,description
  python experiments/prepare_dataset.py u.data --columns user,item,rating,timestamp --sep tab \\
      --out data --name ml100k --images posters/
Text and image features need the optional packages: pip install -e ".[features]".
See docs/data_preparation.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("interactions", help="raw interaction table (CSV/TSV with a header, or see --columns)")
    ap.add_argument("--out", required=True, help="data root: the dataset is written to <out>/<name>/")
    ap.add_argument("--name", required=True, help="dataset name (<name>.inter, dataset.name=<name>)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing <out>/<name>/<name>.inter")
    g = ap.add_argument_group("columns")
    g.add_argument("--user-col", default=None,
                   help="user column (default: the first of user, userID, user_id, userId, uid, reviewerID)")
    g.add_argument("--item-col", default=None,
                   help="item column (default: the first of item, itemID, item_id, itemId, iid, asin, movieId, "
                   "artistID)")
    g.add_argument("--rating-col", default=None, help="rating column (optional; kept in the .inter file)")
    g.add_argument("--time-col", default=None,
                   help="timestamp column, numeric (optional; needed by --split time)")
    g.add_argument("--columns", default=None,
                   help="comma-separated column names of a file WITHOUT a header line")
    g.add_argument("--sep", default=None, help="delimiter of the tables (default: tab for .tsv/.inter/.txt, "
                   "else sniffed from the header; 'tab' or ',')")
    g = ap.add_argument_group("filtering and split")
    g.add_argument("--min-rating", type=float, default=None, help="keep rows with rating >= this")
    g.add_argument("--duplicates", choices=("first", "last", "error"), default="first",
                   help="repeated (user, item): keep the earliest (default), the latest, or stop with an error")
    g.add_argument("--user-k", type=int, default=5, help="k-core: minimum interactions per user (default 5)")
    g.add_argument("--item-k", type=int, default=5, help="k-core: minimum interactions per item (default 5)")
    g.add_argument("--split", choices=("random", "time"), default="random",
                   help="x_label: per-user random 8:1:1 with MMRec's rule (default) or per-user chronological "
                   "(the latest interactions to test)")
    g.add_argument("--seed", type=int, default=123, help="seed of the random split (default 123)")
    g = ap.add_argument_group("features (keyed by the raw item id; see extract_features.py --help)")
    g.add_argument("--text", default=None, help="item text table")
    g.add_argument("--text-id-col", default=None, help="item id column of the text table (default: the first)")
    g.add_argument("--text-cols", default=None, help="comma-separated text columns (default: all others)")
    g.add_argument("--text-model", default="all-MiniLM-L6-v2")
    g.add_argument("--images", default=None, help="image folder: <raw item id>.<jpg|png|...>")
    g.add_argument("--image-list", default=None, help="table of (raw item id, image path)")
    g.add_argument("--image-model", default="efficientnet-lite0")
    g.add_argument("--image-weights", default=None)
    g.add_argument("--fill", choices=("mean", "zero"), default="mean")
    g.add_argument("--device", default="auto")
    g.add_argument("--workers", type=int, default=0)
    g.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from mmgraph.data.mmrec import DatasetError
    from mmgraph.data.prepare import prepare_dataset
    from mmgraph.features.common import MissingDependencyError

    options = {"text_id_col": args.text_id_col, "text_cols": args.text_cols.split(",") if args.text_cols else None,
               "text_sep": args.sep, "text_model": args.text_model, "image_model": args.image_model,
               "image_weights": args.image_weights, "fill": args.fill, "device": args.device,
               "workers": args.workers, "progress": not args.no_progress}
    try:
        res = prepare_dataset(
            args.interactions, args.out, args.name, user_col=args.user_col, item_col=args.item_col,
            rating_col=args.rating_col, time_col=args.time_col, sep=args.sep,
            columns=args.columns.split(",") if args.columns else None, min_rating=args.min_rating,
            duplicates=args.duplicates, user_k=args.user_k, item_k=args.item_k, split=args.split, seed=args.seed,
            text_table=args.text, images=args.images, image_list=args.image_list, feature_options=options,
            overwrite=args.overwrite)
    except (DatasetError, MissingDependencyError) as e:
        print(f"prepare_dataset: {e}", file=sys.stderr)
        return 1
    s = res.summary
    r = s["rows"]
    print(f"{res.folder}: {s['num_users']} users, {s['num_items']} items, {s['interactions']} interactions "
          f"(train {r['train']} / valid {r['valid']} / test {r['test']}); features: "
          + (", ".join(f"{m} {d['dim']}-d ({d['missing']} filled)" for m, d in s.get("features", {}).items())
             or "none"))
    print(f"train: python experiments/train.py dataset=mmrec dataset.name={res.name} data_root={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
