"""Inference runtimes the worker can load a model into (ONNX Runtime, TFLite, ONNX Runtime GenAI)."""

from __future__ import annotations

from agent.errors import InvalidModel
from agent.runtimes.base import RuntimeBackend

#: Model formats each runtime takes, in the order they are tried.
RUNTIMES = ("onnxruntime", "tflite", "onnxruntime-genai")


def backend(name: str) -> RuntimeBackend:
    """The backend object for a runtime name (imports nothing heavy until used)."""
    if name == "onnxruntime":
        from agent.runtimes.onnx import OnnxRuntimeBackend

        return OnnxRuntimeBackend()
    if name == "tflite":
        from agent.runtimes.tflite import TFLiteBackend

        return TFLiteBackend()
    if name == "onnxruntime-genai":
        from agent.runtimes.genai import GenAIBackend

        return GenAIBackend()
    raise InvalidModel(f"unknown runtime '{name}' (known: {', '.join(RUNTIMES)})")


def backend_for_format(model_format: str) -> RuntimeBackend:
    """The runtime that loads a model format ("onnx", "ort", "tflite", "genai")."""
    if model_format in ("onnx", "ort"):
        return backend("onnxruntime")
    if model_format == "tflite":
        return backend("tflite")
    if model_format == "genai":
        return backend("onnxruntime-genai")
    raise InvalidModel(f"unknown model format '{model_format}' (known: onnx, ort, tflite, genai)")
