"""Inputs the loader used to accept silently or fail on with a raw error (each names the file and the fix)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mmgraph.data.mmrec import DatasetError, load_feature, load_mmrec, read_inter

HEADER = "userID\titemID\trating\tx_label"


def _inter(tmp_path, rows, header=HEADER, name="d"):
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.inter"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_zero_column_features_are_refused(tmp_path):
    np.save(tmp_path / "image_feat.npy", np.zeros((6, 0), np.float32))
    with pytest.raises(DatasetError, match="0 feature columns"):
        load_feature(tmp_path / "image_feat.npy", 6)


@pytest.mark.parametrize("column, value", [("userID", 10**13), ("itemID", 2**62)])
def test_huge_ids_are_refused_with_the_line(tmp_path, column, value):
    rows = ["0\t0\t1\t0", "0\t1\t1\t1", "1\t0\t1\t2"]
    u, i = (value, 1) if column == "userID" else (1, value)
    rows.append(f"{u}\t{i}\t1\t0")
    with pytest.raises(DatasetError, match=rf"d\.inter:5: column '{column}' holds id {value}.*re-map"):
        read_inter(_inter(tmp_path, rows))


def test_duplicate_header_column_is_refused(tmp_path):
    path = _inter(tmp_path, ["0\t0\t0\t0"], header="userID\titemID\titemID\tx_label")
    with pytest.raises(DatasetError, match=r"d\.inter:1: column 'itemID' appears 2 times"):
        read_inter(path)


def test_bom_before_the_header_is_explained(tmp_path):
    path = _inter(tmp_path, ["0\t0\t1\t0"])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    with pytest.raises(DatasetError, match="byte-order mark"):
        read_inter(path)


def test_folder_instead_of_a_file(tmp_path):
    (tmp_path / "image_feat.npy").mkdir()
    with pytest.raises(DatasetError, match="is a folder, expected a .npy feature file"):
        load_feature(tmp_path / "image_feat.npy", 6)
    (tmp_path / "x.inter").mkdir()
    with pytest.raises(DatasetError, match="is a folder"):
        read_inter(tmp_path / "x.inter")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_files_name_the_path(tmp_path):
    path = _inter(tmp_path, ["0\t0\t1\t0"])
    path.chmod(0)
    with pytest.raises(DatasetError, match=rf"{path}: permission denied"):
        read_inter(path)


def test_unreadable_files_name_the_path_even_as_root(tmp_path, monkeypatch):
    from pathlib import Path

    path = _inter(tmp_path, ["0\t0\t1\t0"])

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DatasetError, match=rf"{path}: permission denied"):
        read_inter(path)


def test_npy_header_larger_than_the_file_is_refused_before_allocation(tmp_path, monkeypatch):
    path = tmp_path / "image_feat.npy"
    np.save(path, np.zeros((4, 3), np.float32))
    raw = path.read_bytes()
    header_len = 10 + int.from_bytes(raw[8:10], "little")
    header = raw[:header_len].replace(b"(4, 3)", b"(1000000000, 3)")
    header = header[:header_len] if len(header) >= header_len else header
    # keep the header length field consistent: pad/trim the spaces before the final newline
    body = header[10:].rstrip(b"\n").rstrip(b" ")
    body = body + b" " * (header_len - 10 - len(body) - 1) + b"\n"
    path.write_bytes(raw[:10] + body + raw[header_len:])
    calls = []
    monkeypatch.setattr(np, "load", lambda *a, **k: calls.append(a))
    with pytest.raises(DatasetError, match=r"declares shape \(1000000000, 3\).*truncated"):
        load_feature(path, 4)
    assert not calls  # refused from the header and the file size, before np.load allocated anything


def test_missing_x_label_says_which_split_to_use(tmp_path):
    path = _inter(tmp_path, ["0\t0\t1", "0\t1\t1"], header="userID\titemID\trating")
    with pytest.raises(DatasetError, match="dataset.split=random"):
        load_mmrec(tmp_path, "d", modalities=[])
    assert path.is_file()
