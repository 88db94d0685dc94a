"""The strict MMRec loader: happy path, every malformed input, cold users/items, modalities."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from mmgraph.data import DatasetError, load_feature, load_mmrec, read_inter
from mmgraph.typing import ITEM, IU, UI, USER


def pairs(e: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, e.t().tolist()))


def rows_of(rows, label):
    return {(u, i) for u, i, lab in rows if lab == label}


# --------------------------------------------------------------------------- happy path


def test_happy_path_counts_features_and_edges(small_dataset, mmfx):
    root, name, feats = small_dataset
    data, split = load_mmrec(root, name)

    assert data[USER].num_nodes == 4
    assert data[ITEM].num_nodes == 6
    assert split.num_users == 4 and split.num_items == 6
    assert data.modalities == ["image", "text"]  # discovered, sorted
    for m in ("image", "text"):
        x = data[ITEM][f"x_{m}"]
        assert x.dtype == torch.float32
        assert tuple(x.shape) == feats[m].shape
        np.testing.assert_array_equal(x.numpy(), feats[m].astype(np.float32))

    train = rows_of(mmfx.SMALL_ROWS, 0)
    assert data[UI].edge_index.shape == (2, len(train))
    assert pairs(data[UI].edge_index) == train
    assert pairs(data[IU].edge_index.flip(0)) == train
    assert data[UI].edge_index.dtype == torch.long
    assert data.edge_types == [UI, IU]  # nothing else: valid/test never in data


def test_valid_and_test_never_in_data(small_dataset, mmfx):
    root, name, _ = small_dataset
    data, split = load_mmrec(root, name, filter_cold_users=False)
    held = rows_of(mmfx.SMALL_ROWS, 1) | rows_of(mmfx.SMALL_ROWS, 2)
    for et in data.edge_types:
        e = data[et].edge_index
        as_ui = pairs(e) if et[0] == USER else pairs(e.flip(0))
        assert not (as_ui & held)


def test_recsplit_contents(small_dataset, mmfx):
    root, name, _ = small_dataset
    _, split = load_mmrec(root, name)  # filter_cold_users=True drops user 3's rows
    assert pairs(split.train) == rows_of(mmfx.SMALL_ROWS, 0)
    assert pairs(split.valid) == rows_of(mmfx.SMALL_ROWS, 1) - {(3, 0)}
    assert pairs(split.test) == rows_of(mmfx.SMALL_ROWS, 2) - {(3, 1)}
    s = split.summary
    assert s["rows"] == {"train": 9, "valid": 3, "test": 3}  # after dropping cold users
    assert s["num_users"] == 4 and s["num_items"] == 6
    assert s["modalities"] == {"image": 4, "text": 3}
    assert s["users_without_train"] == 1 and s["items_without_train"] == 1


def test_folder_and_inter_file_arguments(tmp_path, mmfx):
    mmfx.write_dataset(tmp_path, "elsewhere", features=mmfx.default_features())
    (tmp_path / "elsewhere" / "elsewhere.inter").rename(tmp_path / "elsewhere" / "custom.inter")
    data, split = load_mmrec(tmp_path, "toy", folder="elsewhere", inter_file="custom.inter")
    assert data.dataset_name == "toy"
    assert split.train.size(1) == 9


def test_crlf_and_trailing_blank_lines_are_accepted(tmp_path, mmfx):
    text = mmfx.inter_text(mmfx.SMALL_ROWS).replace("\n", "\r\n") + "\r\n\n"
    mmfx.write_dataset(tmp_path, text=text, features=mmfx.default_features())
    _, split = load_mmrec(tmp_path, "toy")
    assert pairs(split.train) == rows_of(mmfx.SMALL_ROWS, 0)


def test_extra_columns_are_ignored_and_column_order_is_free(tmp_path, mmfx):
    header = "timestamp\tx_label\titemID\trating\tuserID"
    body = "\n".join(f"99\t{lab}\t{i}\tfoo\t{u}" for u, i, lab in mmfx.SMALL_ROWS)
    mmfx.write_dataset(tmp_path, text=header + "\n" + body + "\n", features=mmfx.default_features())
    _, split = load_mmrec(tmp_path, "toy")
    assert pairs(split.train) == rows_of(mmfx.SMALL_ROWS, 0)


def test_read_inter_direct(tmp_path, mmfx):
    folder = mmfx.write_dataset(tmp_path)
    inter = read_inter(folder / "toy.inter")
    assert inter.users.tolist() == [u for u, _, _ in mmfx.SMALL_ROWS]
    assert inter.items.tolist() == [i for _, i, _ in mmfx.SMALL_ROWS]
    assert inter.label.tolist() == [lab for _, _, lab in mmfx.SMALL_ROWS]
    assert inter.users.dtype == np.int64
    assert inter.line_of(0) == 2 and inter.line_of(5) == 7


def test_read_inter_without_label(tmp_path, mmfx):
    folder = mmfx.write_dataset(tmp_path, label=False)
    with pytest.raises(DatasetError, match="missing column 'x_label'"):
        read_inter(folder / "toy.inter")
    inter = read_inter(folder / "toy.inter", require_label=False)
    assert inter.label is None
    assert len(inter.users) == len(mmfx.SMALL_ROWS)


def test_load_feature_casts_float16_and_float64(tmp_path):
    for dt in (np.float16, np.float64):
        p = tmp_path / f"f_{np.dtype(dt).name}.npy"
        arr = np.arange(12, dtype=dt).reshape(4, 3) / 7
        np.save(p, arr)
        out = load_feature(p, 4)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, arr.astype(np.float32))


# --------------------------------------------------------------------------- malformed input

H = "userID\titemID\trating\tx_label"
GOOD = ["0\t0\t1\t0", "0\t1\t1\t1", "0\t2\t1\t2", "1\t0\t1\t0", "1\t1\t1\t1", "1\t2\t1\t2"]


def with_line(lineno: int, line: str, base=GOOD) -> str:
    """The GOOD file with its data line ``lineno`` (file line numbers, header = 1) replaced."""
    rows = list(base)
    rows[lineno - 2] = line
    return H + "\n" + "\n".join(rows) + "\n"


MALFORMED = {
    # id: (file text, regex the message must match after the file path)
    "non_integer_user": (with_line(4, "x1\t2\t1\t0"), r":4: column 'userID' must be a non-negative integer, found 'x1'"),
    "non_integer_item": (with_line(6, "1\t1.5\t1\t1"), r":6: column 'itemID' .*'1\.5'"),
    "empty_field": (with_line(3, "0\t\t1\t1"), r":3: column 'itemID' .*''"),
    "negative_user": (with_line(5, "-1\t0\t1\t0"), r":5: column 'userID' must be a non-negative integer id, found -1"),
    "negative_item": (with_line(7, "1\t-3\t1\t2"), r":7: column 'itemID' .*found -3"),
    "label_3": (with_line(3, "0\t1\t1\t3"), r":3: x_label must be 0 \(train\), 1 \(valid\) or 2 \(test\), found 3"),
    "label_negative": (with_line(7, "1\t2\t1\t-1"), r":7: x_label .*found -1"),
    "label_text": (with_line(2, "0\t0\t1\ttrain"), r":2: column 'x_label' .*'train'"),
    "duplicate_pair": (with_line(6, "0\t1\t1\t0"), r":6: duplicate interaction \(user 0, item 1\), first seen on line 3"),
    "too_few_fields": (with_line(5, "1\t0\t1"), r":5: expected 4 tab-separated fields .*found 3"),
    "too_many_fields": (with_line(4, "0\t2\t1\t2\t7"), r":4: expected 4 tab-separated fields .*found 5"),
    "space_separated": (with_line(3, "0 1 1 1"), r":3: expected 4 tab-separated fields .*found 1"),
    "blank_line": (H + "\n" + "\n".join(GOOD[:3] + [""] + GOOD[3:]) + "\n", r":5: blank line inside the file"),
    "whitespace_line": (H + "\n" + "\n".join(GOOD[:2] + ["  \t "] + GOOD[2:]) + "\n", r":4: blank line"),
    "comment_line": (with_line(4, "#0\t2\t1\t2"), r":4: column 'userID' .*'#0'"),
    "underscore_id": (with_line(6, "1\t1_0\t1\t1"), r":6: column 'itemID' .*'1_0'"),
    "int64_overflow": (with_line(3, "0\t99999999999999999999\t1\t1"), r":3: column 'itemID' .*99999999999999999999"),
    "missing_item_column": ("userID\titem\trating\tx_label\n" + "\n".join(GOOD) + "\n", r":1: missing column 'itemID' in the header"),
    "missing_label_column": ("userID\titemID\trating\n0\t0\t1\n", r":1: missing column 'x_label'"),
    "comma_separated_header": ("userID,itemID,rating,x_label\n0,0,1,0\n", r":1: missing column 'userID'"),
    "empty_file": ("", r": file is empty"),
    "header_only": (H + "\n\n", r": no interactions after the header line"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_inter_raises_with_file_and_line(tmp_path, case):
    text, pattern = MALFORMED[case]
    path = tmp_path / "bad.inter"
    path.write_text(text)
    with pytest.raises(DatasetError) as ei:
        read_inter(path)
    msg = str(ei.value)
    assert msg.startswith(str(path)), msg
    assert re.search(re.escape(str(path)) + pattern, msg), msg


@pytest.mark.parametrize("case", ["non_integer_user", "duplicate_pair", "too_many_fields", "blank_line"])
def test_malformed_inter_through_load_mmrec(tmp_path, case):
    text, pattern = MALFORMED[case]
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "toy.inter").write_text(text)
    with pytest.raises(DatasetError, match=re.escape(str(folder / "toy.inter")) + pattern):
        load_mmrec(tmp_path, "toy", modalities=[])


def test_line_numbers_are_exact_deep_in_a_large_file(tmp_path):
    rows = [f"{u}\t{i}\t1\t{(u + i) % 3}" for u in range(50) for i in range(20)]
    rows[736] = "36\tseventeen\t1\t0"  # file line 738
    path = tmp_path / "big.inter"
    path.write_text(H + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=r":738: column 'itemID'.*'seventeen'"):
        read_inter(path)
    rows[736] = "36\t17\t1\t0"
    rows[900] = rows[3]  # duplicate of line 5 on line 902
    path.write_text(H + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=r":902: duplicate .*first seen on line 5"):
        read_inter(path)


def test_missing_folder_lists_expected_files(tmp_path):
    with pytest.raises(DatasetError) as ei:
        load_mmrec(tmp_path, "nothere", modalities=["image", "text"])
    msg = str(ei.value)
    assert str(tmp_path / "nothere") in msg
    assert "nothere/nothere.inter" in msg.replace("\\", "/")
    assert "image_feat.npy" in msg and "text_feat.npy" in msg
    assert "MMGRAPH_DATA" in msg


def test_missing_folder_of_a_known_dataset_names_its_source(tmp_path):
    with pytest.raises(DatasetError, match="giuspillo/extending_sota_data_mm_feat"):
        load_mmrec(tmp_path, "lfm2k")
    with pytest.raises(DatasetError, match=r"<modality>_feat\.npy"):
        load_mmrec(tmp_path, "unknown")


def test_missing_inter_file(tmp_path):
    (tmp_path / "toy").mkdir()
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "toy" / "toy.inter")) + ": interaction file not found"):
        load_mmrec(tmp_path, "toy")


def test_missing_feature_file(tmp_path, mmfx):
    mmfx.write_dataset(tmp_path, features=mmfx.default_features())
    path = tmp_path / "toy" / "audio_feat.npy"
    with pytest.raises(DatasetError, match=re.escape(str(path)) + ": feature file not found"):
        load_mmrec(tmp_path, "toy", modalities=["image", "audio"])


def bad_feature_cases():
    n = 6
    rng = np.random.default_rng(0)
    good = rng.standard_normal((n, 4)).astype(np.float32)
    nan = good.copy()
    nan[2, 1] = np.nan
    inf = good.copy()
    inf[4, 0] = -np.inf
    both = good.copy()
    both[3, 3] = np.inf
    both[5, 0] = np.nan
    obj = np.empty(n, dtype=object)
    obj[:] = [list(range(4))] * n
    return {
        "wrong_rows": (good[:5], r"has 5 rows but the interaction file has 6 items"),
        "too_many_rows": (np.vstack([good, good[:1]]), r"has 7 rows .* 6 items"),
        "nan": (nan, r"row 2 \(item 2\) contains NaN or Inf \(1 bad rows"),
        "inf": (inf, r"row 4 \(item 4\) contains NaN or Inf"),
        "nan_and_inf": (both, r"row 3 \(item 3\) .*\(2 bad rows"),
        "object": (obj, r"not a plain numeric \.npy array .*pickle"),
        "one_d": (good[:, 0], r"expected a 2-D float array .*\(6,\)"),
        "three_d": (good.reshape(n, 2, 2), r"expected a 2-D float array .*\(6, 2, 2\)"),
        "int": (np.arange(n * 4, dtype=np.int64).reshape(n, 4), r"expected a float array, found dtype int64"),
        "bool": (good > 0, r"expected a float array, found dtype bool"),
        "complex": (good.astype(np.complex64), r"expected a float array, found dtype complex64"),
    }


@pytest.mark.parametrize("case", sorted(bad_feature_cases()))
def test_malformed_feature_raises(tmp_path, mmfx, case):
    arr, pattern = bad_feature_cases()[case]
    feats = mmfx.default_features()
    feats["image"] = arr
    mmfx.write_dataset(tmp_path, features=feats)
    path = tmp_path / "toy" / "image_feat.npy"
    with pytest.raises(DatasetError, match=re.escape(str(path)) + ": " + pattern):
        load_mmrec(tmp_path, "toy")
    with pytest.raises(DatasetError, match=re.escape(str(path))):
        load_feature(path, 6)


def test_truncated_npy_raises(tmp_path):
    path = tmp_path / "image_feat.npy"
    np.save(path, np.ones((6, 4), dtype=np.float32))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DatasetError, match=re.escape(str(path))):
        load_feature(path, 6)


def test_not_an_npy_file_raises(tmp_path):
    path = tmp_path / "image_feat.npy"
    path.write_text("hello")
    with pytest.raises(DatasetError, match=re.escape(str(path))):
        load_feature(path, 6)


@pytest.mark.parametrize(
    "drop,stage",
    [(2, "test"), (1, "valid"), (0, "train")],
)
def test_empty_split_raises(tmp_path, mmfx, drop, stage):
    rows = [r for r in mmfx.SMALL_ROWS if r[2] != drop]
    mmfx.write_dataset(tmp_path, rows=rows, features={})
    path = tmp_path / "toy" / "toy.inter"
    with pytest.raises(DatasetError, match=re.escape(str(path)) + f": the {stage} split is empty"):
        load_mmrec(tmp_path, "toy", modalities=[])


def test_split_empty_after_dropping_cold_users(tmp_path, mmfx):
    # the only validation row belongs to a user with no train row
    rows = [(0, 0, 0), (0, 1, 0), (0, 2, 2), (1, 0, 1), (1, 3, 2)]
    mmfx.write_dataset(tmp_path, rows=rows)
    with pytest.raises(DatasetError, match="the valid split is empty .*after dropping users with no train"):
        load_mmrec(tmp_path, "toy", modalities=[])
    _, split = load_mmrec(tmp_path, "toy", modalities=[], filter_cold_users=False)
    assert pairs(split.valid) == {(1, 0)}


def test_unknown_split_and_duplicate_modalities(small_dataset):
    root, name, _ = small_dataset
    with pytest.raises(DatasetError, match="unknown split 'temporal'"):
        load_mmrec(root, name, split="temporal")
    with pytest.raises(DatasetError, match="duplicates"):
        load_mmrec(root, name, modalities=["image", "image"])


# --------------------------------------------------------------------------- cold users / items


def test_cold_users_dropped_when_filtering(small_dataset):
    root, name, _ = small_dataset
    _, split = load_mmrec(root, name, filter_cold_users=True)
    s = split.summary
    assert s["cold_users_valid"] == 1 and s["cold_users_test"] == 1
    assert s["dropped_rows_valid"] == 1 and s["dropped_rows_test"] == 1
    assert 3 not in split.valid[0].tolist() and 3 not in split.test[0].tolist()
    assert split.valid.size(1) == 3 and split.test.size(1) == 3
    # item 5 occurs only in test (user 1, who has train rows): a cold item, kept
    assert s["cold_items_valid"] == 0 and s["cold_items_test"] == 1
    assert (1, 5) in pairs(split.test)
    assert split.num_users == 4  # ids are not renumbered


def test_cold_users_kept_without_filtering(small_dataset, mmfx):
    root, name, _ = small_dataset
    _, split = load_mmrec(root, name, filter_cold_users=False)
    s = split.summary
    assert s["cold_users_valid"] == 1 and s["cold_users_test"] == 1
    assert "dropped_rows_valid" not in s and "dropped_rows_test" not in s
    assert pairs(split.valid) == rows_of(mmfx.SMALL_ROWS, 1)
    assert pairs(split.test) == rows_of(mmfx.SMALL_ROWS, 2)


def test_cold_counts_are_unique_users_and_items(tmp_path):
    # user 5 has 3 valid rows (1 cold user, 3 dropped rows); items 7 and 8 are cold in test
    rows = [(u, u, 0) for u in range(5)] + [(u, (u + 1) % 5, 1) for u in range(5)]
    rows += [(5, 0, 1), (5, 1, 1), (5, 2, 1), (0, 7, 2), (1, 7, 2), (2, 8, 2)]
    text = "userID\titemID\trating\tx_label\n" + "\n".join(f"{u}\t{i}\t1\t{lab}" for u, i, lab in rows) + "\n"
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy.inter").write_text(text)
    _, split = load_mmrec(tmp_path, "toy", modalities=[])
    s = split.summary
    assert s["cold_users_valid"] == 1 and s["dropped_rows_valid"] == 3
    assert s["cold_users_test"] == 0 and "dropped_rows_test" not in s
    assert s["cold_items_valid"] == 0 and s["cold_items_test"] == 2
    assert s["items_without_train"] == 4  # items 5, 6 (never seen), 7, 8
    assert split.num_items == 9


# --------------------------------------------------------------------------- modalities


def test_modalities_none_discovers_all(tmp_path, mmfx):
    n = mmfx.num_items_of(mmfx.SMALL_ROWS)
    names = ["img-clip", "audio_whisper", "t"]
    feats = {m: np.full((n, d), d, dtype=np.float32) for m, d in zip(names, (5, 2, 7))}
    mmfx.write_dataset(tmp_path, features=feats)
    (tmp_path / "toy" / "notes.npy").write_bytes(b"ignored: not *_feat.npy")
    data, split = load_mmrec(tmp_path, "toy")
    assert data.modalities == sorted(names)
    for m, d in zip(names, (5, 2, 7)):
        assert tuple(data[ITEM][f"x_{m}"].shape) == (n, d)
        assert float(data[ITEM][f"x_{m}"][0, 0]) == d
    assert split.summary["modalities"] == {"audio_whisper": 2, "img-clip": 5, "t": 7}


def test_modalities_empty_loads_none(small_dataset):
    root, name, _ = small_dataset
    data, split = load_mmrec(root, name, modalities=[])
    assert data.modalities == []
    assert not [k for k in data[ITEM].keys() if k.startswith("x_")]
    assert split.summary["modalities"] == {}


def test_named_modalities_keep_order_and_skip_others(tmp_path, mmfx):
    feats = mmfx.default_features()
    feats["broken"] = np.full((2, 2), np.nan)  # never read: not requested
    mmfx.write_dataset(tmp_path, features=feats)
    data, _ = load_mmrec(tmp_path, "toy", modalities=["text", "image"])
    assert data.modalities == ["text", "image"]
    assert "x_broken" not in data[ITEM]
    data, _ = load_mmrec(tmp_path, "toy", modalities=["text"])
    assert data.modalities == ["text"] and "x_image" not in data[ITEM]
    with pytest.raises(DatasetError, match="broken_feat.npy"):
        load_mmrec(tmp_path, "toy")  # discovery reads it, and it is invalid


def test_synthetic_features(small_dataset):
    root, name, feats = small_dataset
    data, split = load_mmrec(root, name, modalities=[], synthetic_features={"image": 7, "audio": 5})
    assert data.modalities == ["image", "audio"]
    assert tuple(data[ITEM].x_image.shape) == (6, 7)
    assert tuple(data[ITEM].x_audio.shape) == (6, 5)
    assert data[ITEM].x_image.dtype == torch.float32
    assert split.summary["modalities"] == {"image": 7, "audio": 5}
    again, _ = load_mmrec(root, name, modalities=[], synthetic_features={"image": 7, "audio": 5})
    assert torch.equal(again[ITEM].x_image, data[ITEM].x_image)
    other, _ = load_mmrec(root, name, modalities=[], synthetic_features={"image": 7}, synthetic_seed=1)
    assert not torch.equal(other[ITEM].x_image, data[ITEM].x_image)
    # roughly standard normal, not the file's features
    big, _ = load_mmrec(root, name, modalities=[], synthetic_features={"image": 4000})
    x = big[ITEM].x_image
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05


def test_synthetic_features_differ_between_modalities_of_equal_name_length(small_dataset):
    root, name, _ = small_dataset
    data, _ = load_mmrec(root, name, modalities=[], synthetic_features={"image": 8, "audio": 8})
    assert not torch.equal(data[ITEM].x_image, data[ITEM].x_audio)


def test_synthetic_features_replace_a_file_modality(small_dataset):
    root, name, feats = small_dataset
    data, _ = load_mmrec(root, name, synthetic_features={"image": 9})
    assert data.modalities == ["image", "text"]
    assert data[ITEM].x_image.shape[1] == 9  # synthetic, not the 4-d file
    np.testing.assert_array_equal(data[ITEM].x_text.numpy(), feats["text"].astype(np.float32))


# --------------------------------------------------------------------------- real data


def test_real_lfm2k(mmfx):
    folder = mmfx.real_folder("lfm2k")
    data, split = load_mmrec(folder.parent, "lfm2k", folder=folder.name)
    assert split.num_users == 1858 and split.num_items == 1425
    assert data[USER].num_nodes == 1858 and data[ITEM].num_nodes == 1425
    assert split.summary["rows"] == {"train": 44327, "valid": 4799, "test": 7219}
    assert (split.train.size(1), split.valid.size(1), split.test.size(1)) == (44327, 4799, 7219)
    assert data[UI].edge_index.size(1) == 44327
    assert {"text", "audio"} <= set(data.modalities)
    assert tuple(data[ITEM].x_text.shape) == (1425, 384)
    assert tuple(data[ITEM].x_audio.shape) == (1425, 128)
    for m in data.modalities:
        x = data[ITEM][f"x_{m}"]
        assert x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    assert not (pairs(split.train) & pairs(split.test))


def test_real_tiktok_reports_cold_items_and_users(mmfx):
    folder = mmfx.real_folder("tiktok")
    data, split = load_mmrec(folder.parent, "tiktok", folder=folder.name)
    s = split.summary
    assert s["num_users"] == 9308 and s["num_items"] == 6710
    assert s["rows"] == {"train": 59541, "valid": 3051 - s["dropped_rows_valid"], "test": 6130 - s["dropped_rows_test"]}
    assert s["items_without_train"] == 465
    assert s["cold_items_valid"] > 0 and s["cold_items_test"] > 0
    assert s["cold_items_valid"] + s["cold_items_test"] >= 465
    assert s["users_without_train"] == 10
    assert s["cold_users_valid"] + s["cold_users_test"] >= 10
    # dropped, so every evaluated user has a train row
    train_users = set(split.train[0].tolist())
    assert set(split.valid[0].tolist()) <= train_users and set(split.test[0].tolist()) <= train_users
    assert split.valid.size(1) == 3051 - s["dropped_rows_valid"]
    # cold items are kept; the summary counts them over the file (before dropping cold users)
    train_items = set(split.train[1].tolist())
    assert 0 < len(set(split.test[1].tolist()) - train_items) <= s["cold_items_test"]
    _, unfiltered = load_mmrec(folder.parent, "tiktok", folder=folder.name, modalities=[], filter_cold_users=False)
    for stage in ("valid", "test"):
        e = unfiltered.edge_label_index(stage)
        assert len(set(e[1].tolist()) - train_items) == s[f"cold_items_{stage}"]
        assert len(set(e[0].tolist()) - train_users) == s[f"cold_users_{stage}"]
    assert unfiltered.valid.size(1) == 3051 and unfiltered.test.size(1) == 6130
    assert data[ITEM].x_image.dtype == torch.float32  # float16 on disk
