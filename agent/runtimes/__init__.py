"""Inference runtimes the worker can load a model into (ONNX Runtime, TFLite, ONNX Runtime GenAI, TensorRT,
llama.cpp)."""

from __future__ import annotations

from agent.errors import InvalidModel
from agent.runtimes.base import RuntimeBackend

#: Model formats each runtime takes, in the order they are tried.
RUNTIMES = ("onnxruntime", "tflite", "onnxruntime-genai", "tensorrt", "llamacpp")
#: Formats measured by generations (prompt in, tokens out) instead of inferences (agent/generation.py).
GENERATIVE_FORMATS = ("genai", "gguf")


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
    if name == "tensorrt":
        from agent.runtimes.tensorrt import TensorRTBackend

        return TensorRTBackend()
    if name == "llamacpp":
        from agent.runtimes.llamacpp import LlamaCppBackend

        return LlamaCppBackend()
    raise InvalidModel(f"unknown runtime '{name}' (known: {', '.join(RUNTIMES)})")


def backend_for_format(model_format: str, runtime: str = "") -> RuntimeBackend:
    """The runtime that loads a model format ("onnx", "ort", "tflite", "genai", "gguf"); `runtime` (the job's
    option) picks another runtime for the format where one is asked for: "tensorrt" builds an engine from an
    ONNX model."""
    if runtime == "tensorrt":
        if model_format != "onnx":
            raise InvalidModel(f"TensorRT builds engines from ONNX models; this job's model is {model_format}")
        return backend("tensorrt")
    if model_format in ("onnx", "ort"):
        return backend("onnxruntime")
    if model_format == "tflite":
        return backend("tflite")
    if model_format == "genai":
        return backend("onnxruntime-genai")
    if model_format == "gguf":
        return backend("llamacpp")
    raise InvalidModel(f"unknown model format '{model_format}' (known: onnx, ort, tflite, genai, gguf)")
