"""emca-vis: interpretability and robustness toolkit for EMCA and channel-attention ResNets."""

__version__ = "0.1.0"
