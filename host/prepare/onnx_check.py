"""onnx.checker as edgeprof applies it: a graph output that declares no shape is accepted, as ONNX Runtime does.

The checker of onnx 1.x requires every graph output's tensor type to carry a shape field ("Field 'shape' of
'type' is required but missing"), while ONNX Runtime runs such a model and reports the shape it infers.
Such a model is checked as it is otherwise: on a copy whose shapeless outputs got their inferred shape (or,
where inference finds none, an empty one), the file itself untouched.
"""

from __future__ import annotations

import copy
from typing import Any

_SHAPELESS = "Field 'shape' of 'type' is required but missing"


def check_model(source: str | Any, full_check: bool = False) -> None:
    """onnx.checker.check_model on a path or ModelProto, shapeless graph outputs allowed; raises as it does."""
    import onnx

    try:
        onnx.checker.check_model(source, full_check=full_check)
        return
    except onnx.checker.ValidationError as err:
        if _SHAPELESS not in str(err):
            raise
        model = onnx.load(source, load_external_data=False) if isinstance(source, str) else copy.deepcopy(source)
        if not shapeless_outputs(model):
            raise
    inferred = onnx.shape_inference.infer_shapes(model)
    guessed = shapeless_outputs(inferred)
    for output in guessed:
        output.type.tensor_type.shape.SetInParent()  # inference found no shape: any will do for the checker
    # A full check compares declared with inferred shapes: only where none had to be made up.
    onnx.checker.check_model(inferred, full_check=full_check and not guessed)


def shapeless_outputs(model: Any) -> list[Any]:
    """The graph outputs whose tensor type declares no shape at all (unknown rank)."""
    return [
        o for o in model.graph.output if o.type.HasField("tensor_type") and not o.type.tensor_type.HasField("shape")
    ]
