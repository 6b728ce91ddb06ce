"""Quantization-aware training with tensorflow-model-optimization."""
