"""Corruption robustness: ImageNet-C corruptions, -C datasets and CE / mCE."""
