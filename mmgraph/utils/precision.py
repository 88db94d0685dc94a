"""Mixed precision helpers: what must stay float32 under ``torch.autocast(dtype=torch.bfloat16)``.

Autocast runs dense matrix products (``linear``, ``mm``, ``matmul``…) in bf16 and leaves the
rest to the input dtypes. Sparse products (``torch.sparse.mm`` on CSR, PyG's ``spmm``, the
edge-list scatters) have no bf16 kernel on CPU and would accumulate long neighbour sums in
8-bit mantissas, so every propagation layer casts its dense inputs back with
:func:`dense_fp32`, and hand-written autograd functions run inside :func:`fp32_region`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

_LOW = (torch.bfloat16, torch.float16)


def dense_fp32(x: Any) -> Any:
    """``x`` (a tensor, or a tuple/list of tensors and ``None``) with bf16/fp16 tensors cast to float32.

    Sparse tensors and float32/float64 tensors are returned unchanged (no copy).
    """
    if isinstance(x, (tuple, list)):
        return type(x)(dense_fp32(t) for t in x)
    if isinstance(x, Tensor) and x.dtype in _LOW and x.layout == torch.strided:
        return x.float()
    return x


@contextmanager
def fp32_region(device_type: str):
    """Autocast switched off (e.g. the body of a custom ``autograd.Function``): everything in fp32."""
    with torch.autocast(device_type=device_type, enabled=False):
        yield


def fp32_spmm(adj_t: Tensor, x: Tensor, reduce: str = "sum") -> Tensor:
    """PyG's ``spmm(adj_t, x, reduce)`` in float32, also inside a bf16 autocast region (autocast
    would otherwise send the sparse ``addmm`` to bf16, which has no CPU kernel)."""
    from torch_geometric.utils import spmm

    with fp32_region(x.device.type):
        return spmm(adj_t, dense_fp32(x), reduce=reduce)


__all__ = ["dense_fp32", "fp32_region", "fp32_spmm"]
