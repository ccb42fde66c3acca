"""deeplab: DeepLabV3 / DeepLabV3+ semantic segmentation on PyTorch (arXiv:1706.05587, 1802.02611)."""

__version__ = "0.1.0"
