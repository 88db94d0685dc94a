"""mmgraph: a PyTorch Geometric model zoo for multimodal recommendation."""

__version__ = "0.1.0"
