"""mmgraph: a PyTorch Geometric model zoo for multimodal recommendation."""

import warnings

# torch.sparse CSR is our fast propagation path; its "beta" notice is noise for users.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")

__version__ = "0.1.0"
