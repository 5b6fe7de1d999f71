"""Shipping a trained model: ONNX (fp32, int8) and TorchScript files that carry their own metadata,
checked against the source model, and an ONNX inference path that needs no PyTorch.

Submodules import their heavy dependencies themselves; this package imports nothing.
"""
