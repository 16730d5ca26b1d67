"""clothseg: self-hosted clothing and portrait segmentation service."""

__version__ = "0.1.0"
