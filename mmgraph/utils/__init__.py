"""Small utilities: seeding, atomic file writes, memory readings."""

from mmgraph.utils.io import atomic_save, atomic_write_json, atomic_write_text
from mmgraph.utils.memory import peak_rss_mb
from mmgraph.utils.seed import seed_everything

__all__ = ["atomic_save", "atomic_write_json", "atomic_write_text", "seed_everything", "peak_rss_mb"]
