"""An Amazon 2014 category (McAuley et al.'s public dump) → MMRec's folder layout.

    python experiments/prepare_amazon.py --raw raw/ --category Baby --out data/            # files already in raw/
    python experiments/prepare_amazon.py --raw raw/ --category Baby --out data/ --download # fetch them first

Reads ``reviews_<Category>_5.json.gz``, ``meta_<Category>.json.gz`` and ``image_features_<Category>.b``
as the dump ships them and writes ``<out>/<name>/`` (``baby``, ``sports``, ``clothing``, ``elec`` for MMRec's
four categories, else the category in lower case; ``--name`` to choose): ``<name>.inter`` (every 5-core review
an implicit positive; MMRec's per-user random split), ``u_id_mapping.csv`` / ``i_id_mapping.csv``,
``image_feat.npy`` (4,096-d, mean-filled; ``image_mask.npy``) and ``text_feat.npy`` (384-d MiniLM of
title, brand, categories, description; needs the ``features`` extra). Category names as in the dump:
``Baby``, ``Sports_and_Outdoors``, ``Clothing_Shoes_and_Jewelry``, ``Electronics``.
``conf/dataset/{baby,sports,clothing,elec}.yaml`` read the result (``data_root=<out>``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mmgraph.data.amazon import dump_files, prepare_amazon
from mmgraph.data.download import download
from mmgraph.data.mmrec import DatasetError

#: Where the dump is published (override with --url-base for a mirror).
URL_BASE = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", type=Path, required=True, help="folder with (or for) the three dump files")
    ap.add_argument("--category", required=True, help="e.g. Baby, Sports_and_Outdoors")
    ap.add_argument("--out", type=Path, required=True, help="data root; the dataset goes to OUT/<category lower>")
    ap.add_argument("--name", default=None, help="dataset folder name (default: MMRec's, e.g. sports)")
    ap.add_argument("--download", action="store_true", help="fetch missing dump files (resumable, size-checked)")
    ap.add_argument("--url-base", default=URL_BASE)
    ap.add_argument("--seed", type=int, default=123, help="split seed")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--text-model", default=None, help="sentence-transformers model (default: the offline MiniLM)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.download:
            for path in dump_files(args.raw, args.category).values():
                download(f"{args.url_base.rstrip('/')}/{path.name}", path, progress=not args.no_progress)
        folder = prepare_amazon(args.raw, args.category, args.out, name=args.name, seed=args.seed, overwrite=args.overwrite,
                                text_model=args.text_model, progress=not args.no_progress)
    except DatasetError as e:  # bad or missing dump files, download failures, feature errors
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
