"""Compression methods (quantization, pruning, Deep Compression, low rank, XNOR)."""

from .base import (
    CompressedModel,
    CompressionContext,
    Compressor,
    get_compressor,
    list_compressors,
    register_compressor,
)

__all__ = [
    "CompressedModel",
    "CompressionContext",
    "Compressor",
    "get_compressor",
    "list_compressors",
    "register_compressor",
]
