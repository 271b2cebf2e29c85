"""Inference runtimes the worker can load a model into (ONNX Runtime, TFLite)."""
