"""Feature plumbing without the optional packages: tables, item maps, fill, saving, key alignment."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmgraph.data.mmrec import DatasetError, load_feature
from mmgraph.features import (
    FeatureError,
    fill_missing,
    item_keys_from_table,
    read_text_table,
    save_modality,
)
from mmgraph.features.extract import keys_from_ids
from mmgraph.features.image import find_images


def test_read_text_table_joins_columns_and_skips_blank(tmp_path):
    p = tmp_path / "items.csv"
    p.write_text('asin,title,brand,description\n'
                 'A1,Red shoe,Acme,"A shoe, red"\n'
                 'A2,,,\n'
                 'A3,Blue hat,, \n')
    texts = read_text_table(p, text_cols=["title", "brand", "description"])
    assert texts == {"A1": "Red shoe Acme A shoe, red", "A3": "Blue hat"}  # A2 has no text: missing
    assert read_text_table(p, text_cols=["title"]) == {"A1": "Red shoe", "A3": "Blue hat"}


@pytest.mark.parametrize("content, match", [
    ("id\ttext\n1\ta\n1\tb\n", r"items.tsv:3: item key '1' listed twice \(first on line 2\)"),
    ("id\ttext\n1\ta\textra\n", r"items.tsv:2: expected 2 fields"),
    ("", r"items.tsv:1: text table is empty"),
])
def test_text_table_errors_name_file_and_line(tmp_path, content, match):
    p = tmp_path / "items.tsv"
    p.write_text(content)
    with pytest.raises(FeatureError, match=match):
        read_text_table(p)


def test_missing_text_column_lists_found_columns(tmp_path):
    p = tmp_path / "items.tsv"
    p.write_text("id\ttext\n1\ta\n")
    with pytest.raises(FeatureError, match=r"items.tsv:1: missing text column 'title'; found columns \['id', 'text'\]"):
        read_text_table(p, text_cols=["title"])
    assert issubclass(FeatureError, DatasetError)


def test_item_map_orders_rows_by_id_and_checks_gaps(tmp_path):
    p = tmp_path / "i_id_mapping.csv"
    p.write_text("raw_id\titemID\nB\t1\nA\t0\nC\t2\n")
    assert item_keys_from_table(p) == ["A", "B", "C"]
    p.write_text("raw_id\titemID\nB\t1\nA\t3\n")
    with pytest.raises(FeatureError, match="ids must be 0..3 without gaps; id 0 is missing"):
        item_keys_from_table(p)
    p.write_text("raw_id\titemID\nB\t1\nA\tx\n")
    with pytest.raises(FeatureError, match=r"i_id_mapping.csv:3: item id column 'itemID' must be"):
        item_keys_from_table(p)


def test_fill_mean_and_zero():
    f = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 6.0]], dtype=np.float32)
    mask = np.array([True, False, True])
    out = fill_missing(f.copy(), mask, "mean")
    assert out.dtype == np.float32 and out[1].tolist() == [2.0, 4.0] and out[0].tolist() == [1.0, 2.0]
    assert fill_missing(f.copy(), mask, "zero")[1].tolist() == [0.0, 0.0]
    with pytest.raises(FeatureError, match="nothing to compute the mean fill from"):
        fill_missing(f.copy(), np.zeros(3, dtype=bool), "mean")


def test_save_modality_is_loadable_and_records_info(tmp_path):
    f = np.random.default_rng(0).random((4, 3))
    mask = np.array([True, True, False, True])
    paths = save_modality(tmp_path, "text", f, mask, info={"model": "m"})
    assert load_feature(paths["features"], 4).dtype == np.float32
    m = np.load(paths["mask"])
    assert m.dtype == np.bool_ and m.tolist() == mask.tolist()
    info = json.loads((tmp_path / "features.json").read_text())
    assert info["text"] == {"rows": 4, "dim": 3, "missing": 1, "model": "m"}


def test_keys_from_ids():
    assert keys_from_ids(["2", "0"], "t") == ["0", "1", "2"]
    assert keys_from_ids(["2"], "t", num_items=4) == ["0", "1", "2", "3"]
    with pytest.raises(FeatureError, match="not an item id"):
        keys_from_ids(["a"], "t")


def test_find_images_by_stem_and_list(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("A.png", "A.jpg", "B.JPEG", "C.txt", "Z.png"):
        (tmp_path / "img" / name).write_bytes(b"x")
    (tmp_path / "list.tsv").write_text("key\tpath\nC\timg/C.txt\nD\tmissing.png\n")
    found = find_images(["A", "B", "C", "D"], tmp_path / "img", tmp_path / "list.tsv")
    assert found == {"A": tmp_path / "img" / "A.jpg", "B": tmp_path / "img" / "B.JPEG",
                     "C": tmp_path / "img" / "C.txt"}
