"""What each board receives: model file checks, compile recipes, ONNX passes, ONNX Runtime steps,
ONNX->TFLite conversion, GenAI packing and the `example:` models.

Rule: prepare/ imports only store/ and fleet/ below it (never analysis/, report/, run/, dashboard/, cli/).
"""
