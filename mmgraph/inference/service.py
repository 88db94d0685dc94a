"""An HTTP service over a :class:`~mmgraph.inference.Recommender` (FastAPI; the ``serve`` extra).

Endpoints (JSON):

* ``GET /recommend?user=U&k=K`` → ``{"user": U, "items": [{"item": i, "score": s}, ...]}`` in rank order;
* ``GET /similar?item=I&k=K`` → ``{"item": I, "items": [{"item": j, "score": cosine}, ...]}``;
* ``GET /health`` → ``{"status": "ok", "model": ..., "num_users": ..., "num_items": ...}``.

Embeddings are computed once, when the service starts; a request is one row of the score matrix.
A bad request (unknown user or item, a non-integer, ``k`` not in ``1..max_k``) gets a 4xx JSON error
``{"detail": "..."}``; nothing a client sends produces a 500.
"""

from __future__ import annotations

import threading

from mmgraph.inference.recommender import InferenceError, Recommender


def create_app(rec: Recommender, exclude: str = "seen", max_k: int = 1000):
    """The FastAPI application serving ``rec`` (``exclude``: what ``/recommend`` never returns)."""
    try:
        from fastapi import FastAPI, HTTPException, Query
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
    except ImportError as e:
        raise InferenceError("the HTTP service needs FastAPI and uvicorn: pip install fastapi uvicorn "
                             "(or pip install -e '.[serve]')") from e
    rec.exclusion(exclude)  # validates and builds the mask once
    max_k = min(max_k, rec.num_items)
    lock = threading.Lock()  # torch ops are thread-safe, but one request at a time keeps latency flat
    app = FastAPI(title="mmgraph recommender", description=f"{type(rec.model).__name__}, exclude={exclude}")

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request, exc):  # a non-integer or missing parameter: 422 with a plain message
        errors = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse(status_code=422, content={"detail": errors or "invalid request"})

    def _k(k: int) -> int:
        if not 1 <= k <= max_k:
            raise HTTPException(status_code=400, detail=f"k must be between 1 and {max_k}, got {k}")
        return k

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": type(rec.model).__name__, "num_users": rec.num_users,
                "num_items": rec.num_items, "exclude": exclude}

    @app.get("/recommend")
    def recommend(user: int = Query(..., description="userID"), k: int = Query(20)) -> dict:
        if not 0 <= user < rec.num_users:
            raise HTTPException(status_code=404, detail=f"unknown user {user}: ids run from 0 to {rec.num_users - 1}")
        with lock:
            out = rec.recommend([user], k=_k(k), exclude=exclude)
        return {"user": user, "items": [{"item": int(i), "score": float(s)}
                                        for i, s in zip(out.items[0].tolist(), out.scores[0].tolist()) if i >= 0]}

    @app.get("/similar")
    def similar(item: int = Query(..., description="itemID"), k: int = Query(10)) -> dict:
        if not 0 <= item < rec.num_items:
            raise HTTPException(status_code=404, detail=f"unknown item {item}: ids run from 0 to {rec.num_items - 1}")
        if k > rec.num_items - 1:
            raise HTTPException(status_code=400, detail=f"k must be between 1 and {rec.num_items - 1}, got {k}")
        with lock:
            out = rec.similar_items([item], k=_k(k))
        return {"item": item, "items": [{"item": int(i), "score": float(s)}
                                        for i, s in zip(out.items[0].tolist(), out.scores[0].tolist())]}

    return app
