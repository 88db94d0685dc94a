"""The HTTP service over a real localhost socket: the API's answers, 4xx on bad input, a short load test."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from mmgraph.inference import Recommender  # noqa: E402
from mmgraph.inference.service import create_app  # noqa: E402
from tests.inference.test_recommender import trained  # noqa: E402,F401  (module fixture)


@pytest.fixture(scope="module")
def server(trained):  # noqa: F811
    rec = Recommender.from_run(trained[0], device="cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(rec, exclude="seen"), host="127.0.0.1", port=port,
                                        log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started
    yield rec, f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_recommend_and_similar_return_the_api_answer(server):
    rec, base = server
    status, body = get(f"{base}/recommend?user=3&k=7")
    assert status == 200 and body["user"] == 3
    ref = rec.recommend([3], k=7, exclude="seen")
    assert [x["item"] for x in body["items"]] == ref.items[0].tolist()
    assert [x["score"] for x in body["items"]] == pytest.approx(ref.scores[0].tolist(), rel=1e-6)
    status, body = get(f"{base}/similar?item=2&k=4")
    assert status == 200 and [x["item"] for x in body["items"]] == rec.similar_items([2], k=4).items[0].tolist()
    status, body = get(f"{base}/health")
    assert status == 200 and body["status"] == "ok" and body["num_items"] == rec.num_items


@pytest.mark.parametrize("query, code", [
    ("/recommend?user=100000", 404), ("/recommend?user=-1", 404), ("/recommend?user=abc", 422),
    ("/recommend", 422), ("/recommend?user=1&k=0", 400), ("/recommend?user=1&k=100000", 400),
    ("/recommend?user=1&k=2.5", 422), ("/similar?item=99999", 404), ("/similar?item=1&k=-3", 400),
])
def test_bad_input_is_a_4xx_json_error(server, query, code):
    status, body = get(server[1] + query)
    assert status == code and isinstance(body.get("detail"), str) and body["detail"]


def test_short_load_test_has_no_errors(server):
    rec, base = server
    urls = [f"{base}/recommend?user={u % rec.num_users}&k=10" for u in range(300)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(get, urls))
    assert all(status == 200 and len(body["items"]) == 10 for status, body in results)
