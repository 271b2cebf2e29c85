"""A model with known extra work: the candidate that `host ab` must catch (bench_ab.py, tests/test_ab_live.py).

`append_work` adds a chain of 3x3 Conv + Relu on the model's own input, sized so its multiply-accumulates
are a chosen fraction (default 15%) of the model's Conv/Gemm MACs, and folds it into the original output
as `out + 0 * mean(chain)`: the output's values and shape are unchanged, but ONNX Runtime must compute
the chain because the output depends on it (a branch to nowhere would be pruned).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

#: Channels of the appended 3x3 convolutions and the stride of the first: thin full-resolution convolutions
#: cost far more time per MAC than the model's own (memory-bound), so the chain works at 1/STRIDE resolution.
EXTRA_CHANNELS = 16
EXTRA_STRIDE = 4


def _shape(model: onnx.ModelProto, name: str) -> list[int]:
    for info in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if info.name == name:
            return [d.dim_value for d in info.type.tensor_type.shape.dim]
    raise ValueError(f"no inferred shape for '{name}'")


def model_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of the model's Conv and Gemm nodes (shape-inferred, batch as given)."""
    inferred = shape_inference.infer_shapes(model)
    weights = {t.name: list(t.dims) for t in inferred.graph.initializer}
    total = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            out = _shape(inferred, node.output[0])
            # [out_ch, in_ch/groups, kh, kw]; the onnx light models compute weights in the graph (ConstantOfShape)
            w = weights.get(node.input[1]) or _shape(inferred, node.input[1])
            total += math.prod(out) * math.prod(w[1:])
        elif node.op_type == "Gemm":  # [M, K] x [K, N]: M*N outputs, K MACs each (transA=0, as exported)
            total += math.prod(_shape(inferred, node.output[0])) * _shape(inferred, node.input[0])[-1]
    return total


def append_work(src: Path, dst: Path, fraction: float = 0.15) -> Path:
    """Write to ``dst`` the model at ``src`` with ~``fraction`` more Conv work; returns ``dst``."""
    model = onnx.load(str(src))
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    data = next(i for i in graph.input if i.name not in initializers)
    n, c, h, w = (d.dim_value for d in data.type.tensor_type.shape.dim)
    target_macs = fraction * model_macs(model)
    pixels = n * math.ceil(h / EXTRA_STRIDE) * math.ceil(w / EXTRA_STRIDE)
    first_macs = pixels * EXTRA_CHANNELS * c * 9
    later_macs = pixels * EXTRA_CHANNELS * EXTRA_CHANNELS * 9
    layers = 1 + max(0, round((target_macs - first_macs) / later_macs))
    rng = np.random.default_rng(0)
    nodes = []
    x, in_ch = data.name, c
    for i in range(layers):
        weight = rng.normal(0, 0.1, (EXTRA_CHANNELS, in_ch, 3, 3)).astype(np.float32)
        # Constant nodes, not initializers: IR < 4 models (the onnx light models) need initializers as inputs too.
        nodes.append(helper.make_node("Constant", [], [f"extra_w{i}"], value=numpy_helper.from_array(weight)))
        stride = EXTRA_STRIDE if i == 0 else 1
        nodes.append(
            helper.make_node(
                "Conv", [x, f"extra_w{i}"], [f"extra_conv{i}"], pads=[1, 1, 1, 1], strides=[stride, stride]
            )
        )
        nodes.append(helper.make_node("Relu", [f"extra_conv{i}"], [f"extra_relu{i}"]))
        x, in_ch = f"extra_relu{i}", EXTRA_CHANNELS
    out = graph.output[0].name
    for node in graph.node:  # the original output now comes out of the final Add
        node.output[:] = [f"{out}_orig" if o == out else o for o in node.output]
    nodes += [
        helper.make_node("Constant", [], ["extra_zero"], value=numpy_helper.from_array(np.zeros((), np.float32))),
        helper.make_node("ReduceMean", [x], ["extra_mean"], keepdims=0),
        helper.make_node("Mul", ["extra_mean", "extra_zero"], ["extra_nothing"]),
        helper.make_node("Add", [f"{out}_orig", "extra_nothing"], [out]),
    ]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst
