"""ONNX graph passes for compile: the checker, input dims fixed to the run's shapes, opset conversion, IR-3 inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from host.prepare.compile_options import CompileError, short_reason
from host.prepare.onnx_check import check_model


def check_onnx(src: Path, dst: Path) -> None:
    """onnx.checker, then shape inference written out, so later steps see typed intermediate values."""
    import onnx

    try:
        check_model(str(src))
        onnx.shape_inference.infer_shapes_path(str(src), str(dst))
    except Exception as err:  # ValidationError, InferenceError, protobuf decode errors
        raise CompileError(f"{src.name} fails the ONNX checks: {short_reason(err)}") from err


def _show_shapes(shapes: Mapping[str, Sequence[int]]) -> str:
    return ", ".join(f"{name}={'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())


def fix_dims(src: Path, dst: Path, shapes: Mapping[str, Sequence[int]], name: str) -> None:
    """Dynamic input dims fixed to the run's shapes, then checked and shape-inferred, so every intermediate
    value whose shape follows from the inputs becomes static as well (what TensorRT and NPU compilers want)."""
    import onnx

    model = onnx.load(str(src))
    for value in model.graph.input:
        if value.name in shapes:
            for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name], strict=True):
                dim.dim_value = size  # dim_value and dim_param are a oneof: this clears the symbol
    del model.graph.value_info[:]  # annotations written for symbolic dims; inference writes them again
    fixed = dst.with_name(dst.stem + "-inputs.onnx")
    onnx.save(model, str(fixed))
    try:
        check_model(str(fixed))
        # Strict: a shape the graph cannot take (e.g. a spatial size a Reshape or Gemm rejects) fails here,
        # in one line on the host, not on every board.
        onnx.shape_inference.infer_shapes_path(str(fixed), str(dst), strict_mode=True, data_prop=True)
    except Exception as err:
        raise CompileError(
            f"{name} with inputs fixed to {_show_shapes(shapes)} fails the ONNX checks: {short_reason(err)}"
        ) from err


def default_opset(model: Any) -> int:
    """The model's ai.onnx opset (0 when it imports none)."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Op versions that onnx's version converter declares compatible with the version before (CompatibleAdapter in
#: onnx/version_converter/convert.h, 13 -> 23): a node of that version that is also a valid node of the older
#: version means the same there. The converter has no downward adapters for most of them (Relu 14 -> 13 among
#: them), so it refuses almost every model exported at opset 14 or later; these nodes are carried across instead.
_COMPATIBLE_SINCE: dict[int, frozenset[str]] = {
    # BatchNormalization 14 added training_mode, default 0: an inference node is a valid opset-9 node.
    14: _names("Add BatchNormalization CumSum Div Identity Mul Relu Reshape Sub"),
    15: _names("BatchNormalization Pow Shape"),
    16: _names("GreaterOrEqual Identity If LeakyRelu LessOrEqual Loop PRelu Scan ScatterElements ScatterND Where"),
    18: _names("OptionalGetElement OptionalHasElement Pad Resize ScatterElements ScatterND"),
    19: _names(
        "AveragePool Cast CastLike Constant DequantizeLinear Equal Identity If Loop Pad QuantizeLinear Reshape "
        "Resize Scan Shape Size"
    ),
    20: _names("ConstantOfShape IsInf IsNaN ReduceMax ReduceMin"),
    21: _names(
        "Cast CastLike Constant ConstantOfShape DequantizeLinear Flatten Identity If Loop Pad QLinearMatMul "
        "QuantizeLinear Reshape Scan Shape Size Squeeze Transpose Unsqueeze"
    ),
    22: _names(
        "Acos Acosh Asin Asinh Atan Atanh AveragePool Bernoulli Conv ConvTranspose Cos Cosh DeformConv Det Dropout "
        "Elu EyeLike GRU GlobalAveragePool GlobalLpPool GlobalMaxPool GridSample HardSigmoid HardSwish "
        "InstanceNormalization LSTM LpNormalization LpPool MaxPool MaxRoiPool MaxUnpool Mish Multinomial "
        "NegativeLogLikelihoodLoss RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike RoiAlign Round "
        "Selu Sin Sinh Softplus Softsign Tan ThresholdedRelu"
    ),
    23: _names(
        "Cast CastLike Constant ConstantOfShape DequantizeLinear Flatten Identity If Loop Pad QuantizeLinear "
        "Reshape Scan Shape Size Squeeze Transpose Unsqueeze"
    ),
}
#: String attribute values those versions added; the older schema's form check cannot see them.
_NEWER_VALUES = {
    ("Pad", "mode"): {"wrap"},
    ("Resize", "coordinate_transformation_mode"): {"half_pixel_symmetric"},
    ("ScatterElements", "reduction"): {"max", "min"},
    ("ScatterND", "reduction"): {"max", "min"},
}
_CARRIED = "edgeprof.carried"  # a domain the converter passes by; carried nodes return to ai.onnx after it


def _carry_compatible_nodes(model: Any, current: int, target: int) -> None:
    """Move nodes whose changes since `target` are all compatible, and that are valid `target` nodes, out of the
    converter's way (it would stop at them for want of an adapter); the rest is left to the converter."""
    import onnx
    from onnx import defs

    context = onnx.checker.C.CheckerContext()
    context.ir_version = model.ir_version
    context.opset_imports = {"": target}
    changed_at: dict[str, set[int]] = {}
    for schema in defs.get_all_schemas_with_history():
        if schema.domain == "" and target < schema.since_version <= current:
            changed_at.setdefault(schema.name, set()).add(schema.since_version)
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or any(a.type in (5, 10) for a in node.attribute):  # GRAPH(S)
            continue  # control flow (If, Loop, Scan): carried, its bodies would escape conversion
        try:
            newer = defs.get_schema(node.op_type, current, "")
            older = defs.get_schema(node.op_type, target, "")
        except defs.SchemaError:
            continue  # no such op at the target opset: the converter says so
        changes = changed_at.get(node.op_type, set())
        if not changes or not all(node.op_type in _COMPATIBLE_SINCE.get(v, ()) for v in changes):
            continue  # unchanged since the target opset (nothing to do), or a change only the converter can adapt
        candidate = onnx.NodeProto()
        candidate.CopyFrom(node)
        del candidate.attribute[:]
        for attr in node.attribute:
            value = onnx.helper.get_attribute_value(attr)
            if isinstance(value, bytes) and value.decode(errors="replace") in _NEWER_VALUES.get(
                (node.op_type, attr.name), ()
            ):
                break
            if attr.name not in older.attributes and _is_default(newer, attr):
                continue  # an attribute added later, set to the default that reproduces the old behaviour
            candidate.attribute.append(attr)
        else:
            try:
                onnx.checker.check_node(candidate, context)
            except onnx.checker.ValidationError:
                continue
            candidate.domain = _CARRIED
            node.CopyFrom(candidate)
    model.opset_import.append(onnx.helper.make_opsetid(_CARRIED, 1))


def _is_default(schema: Any, attr: Any) -> bool:
    import onnx

    default = schema.attributes[attr.name].default_value if attr.name in schema.attributes else None
    if default is None or default.type == 0:  # no default: any value is a choice the old op cannot express
        return False
    return bool(onnx.helper.get_attribute_value(default) == onnx.helper.get_attribute_value(attr))


def convert_opset(src: Path, dst: Path, target: int, profile: str, name: str) -> None:
    """onnx.version_converter down to `target`, checked in full (types included) and loaded by ONNX Runtime."""
    import onnx
    import onnxruntime as ort
    from onnx import version_converter

    model = onnx.load(str(src))
    current = default_opset(model)
    _carry_compatible_nodes(model, current, target)
    try:
        converted = version_converter.convert_version(model, target)
    except Exception as err:  # RuntimeError from the converter's C++ asserts ("No Adapter From Version $16 for If")
        reason = short_reason(err).rsplit("failed: ", 1)[-1]  # past the C++ source location of the assert
        raise CompileError(
            f"{name} is at ONNX opset {current} and profile {profile} takes at most opset {target} (max_opset), "
            f"but onnx cannot convert it down ({reason}); export the model at opset {target} "
            f"or lower (e.g. torch.onnx.export(..., opset_version={target})), or raise max_opset in a user "
            "profile if the board's runtime takes it"
        ) from err
    for node in converted.graph.node:
        if node.domain == _CARRIED:
            node.domain = ""
    kept = [o for o in converted.opset_import if o.domain != _CARRIED]
    del converted.opset_import[:]
    converted.opset_import.extend(kept)
    onnx.save(converted, str(dst))
    try:
        check_model(str(dst), full_check=True)  # full: input types against the older schemas too
        from host.prepare.ort_session import quiet_session_options

        ort.InferenceSession(str(dst), quiet_session_options(), providers=["CPUExecutionProvider"])
    except Exception as err:
        raise CompileError(
            f"{name} converted from ONNX opset {current} to {target} for profile {profile} is not valid "
            f"({short_reason(err)}); export the model at opset {target} or lower"
        ) from err


def conform_ir3_inputs(path: Path) -> None:
    """Before IR version 4 every initializer must also be a graph input; ORT and the quantizer forget that.

    Their outputs for old models (e.g. squeezenet at IR 3) then fail onnx.checker. Listing the new
    initializers as inputs keeps the model's IR version and meaning (ORT does not ask for them at run time).
    """
    import onnx

    model = onnx.load(str(path))
    if model.ir_version >= 4:
        return
    # Constant folding also leaves the inputs of removed initializers (e.g. ConstantOfShape's shapes)
    # behind as required inputs without a value: drop inputs that nothing reads any more.
    used = {name for node in model.graph.node for name in node.input} | {v.name for v in model.graph.output}
    unused = [value for value in model.graph.input if value.name not in used]
    for value in unused:
        model.graph.input.remove(value)
    declared = {value.name for value in model.graph.input}
    missing = [init for init in model.graph.initializer if init.name not in declared]
    if not missing and not unused:
        return
    for init in missing:
        model.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    onnx.save(model, str(path))
