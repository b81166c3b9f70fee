"""Trains two small scikit-learn models and exports them with skl2onnx, or
runs onnxruntime on given rows: the reference for the edge inference test.

  models.py train OUTDIR    writes rul.onnx (GradientBoostingRegressor) and
                            anomaly.onnx (IsolationForest), 4 inputs each
  models.py run MODEL ROWS  prints onnxruntime's outputs for each row of
                            the JSON file ROWS, as JSON
  models.py unsupported OUT writes a valid ONNX model whose graph uses an op
                            Strata's runtime does not run (ai.onnx.ml Imputer)
"""
import json
import sys

import numpy as np


def train(outdir: str) -> None:
    from sklearn.ensemble import GradientBoostingRegressor, IsolationForest
    from skl2onnx import to_onnx

    rng = np.random.default_rng(7)
    # Features as the edge computes them: temperature mean/max, current
    # mean/max over one-second windows of the simulated machine.
    x = np.column_stack([
        rng.uniform(40, 80, 2000),
        rng.uniform(40, 85, 2000),
        rng.uniform(8, 17, 2000),
        rng.uniform(8, 18, 2000),
    ]).astype(np.float32)
    y = 200 - 2.0 * x[:, 0] - 5.0 * x[:, 2] + rng.normal(0, 1, 2000)
    gbr = GradientBoostingRegressor(n_estimators=50, max_depth=4, random_state=0).fit(x, y)
    iso = IsolationForest(n_estimators=30, random_state=0).fit(x)
    for name, model in [("rul", gbr), ("anomaly", iso)]:
        onx = to_onnx(model, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})
        with open(f"{outdir}/{name}.onnx", "wb") as f:
            f.write(onx.SerializeToString())


def run(model: str, rows: str) -> None:
    import onnxruntime as ort

    x = np.array(json.load(open(rows)), dtype=np.float32)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: x})
    print(json.dumps([np.asarray(o).reshape(len(x), -1).astype(float).tolist() for o in outputs]))


def unsupported(out: str) -> None:
    from onnx import TensorProto, helper

    node = helper.make_node(
        "Imputer", ["x"], ["y"], domain="ai.onnx.ml",
        imputed_value_floats=[0.0] * 4, replaced_value_float=float("nan"),
    )
    graph = helper.make_graph(
        [node], "imputer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
    )
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    with open(out, "wb") as f:
        f.write(model.SerializeToString())


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train(sys.argv[2])
    elif sys.argv[1] == "unsupported":
        unsupported(sys.argv[2])
    else:
        run(sys.argv[2], sys.argv[3])
