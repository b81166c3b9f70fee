"""Golden models for strata-infer, with onnxruntime as the reference.

Usage: make_golden.py OUTDIR

Trains small scikit-learn models on deterministic synthetic data (fixed
seeds), exports each with skl2onnx, runs onnxruntime on a few hundred input
rows (random rows plus edge cases: values exactly at the split thresholds of
the exported trees, very large and negative values) and writes, per model:

  OUTDIR/<name>.onnx   the model as exported
  OUTDIR/manifest.json the list of models with, for each, its input rows and
                       onnxruntime's outputs, flattened row by row

Every number in the manifest is a float32 written as a JSON number (exact
when read back as f64 then narrowed to f32); integer outputs (labels) are
written as numbers too. NaN is written as null.

Needs numpy, scikit-learn, skl2onnx, onnx and onnxruntime: the test peers
virtualenv (scripts/test.sh) has them.
"""

import json
import math
import os
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from skl2onnx import to_onnx
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
)
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
RANDOM_ROWS = 300


def synthetic(seed, n_rows, n_features):
    """Sensor-like features: a few informative columns plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, size=(n_rows, n_features)).astype(np.float32)
    x[:, 0] *= 10.0
    x[:, 1] = np.abs(x[:, 1]) * 3.0
    y = (
        0.3 * x[:, 0]
        + np.sin(x[:, 1])
        + np.where(x[:, 2] > 0.2, 2.0, -1.0)
        + 0.5 * x[:, 3] * x[:, min(4, n_features - 1)]
        + rng.normal(0.0, 0.1, size=n_rows)
    )
    return x, y


def tree_thresholds(model_proto):
    """(feature id, threshold) pairs of every split in the exported trees."""
    pairs = []
    for node in model_proto.graph.node:
        if not node.op_type.startswith("TreeEnsemble"):
            continue
        attrs = {a.name: a for a in node.attribute}
        ids = list(attrs["nodes_featureids"].ints)
        if "nodes_values" in attrs:
            values = list(attrs["nodes_values"].floats)
        else:
            values = list(numpy_helper.to_array(attrs["nodes_values_as_tensor"].t))
        modes = list(attrs["nodes_modes"].strings)
        for f, v, m in zip(ids, values, modes):
            if m != b"LEAF":
                pairs.append((f, np.float32(v)))
    return pairs


def input_rows(seed, x_train, model_proto):
    """Random rows from the training distribution, then edge cases."""
    rng = np.random.default_rng(seed + 1000)
    n_features = x_train.shape[1]
    rows = [x_train[rng.integers(0, len(x_train))] + rng.normal(0, 0.3, n_features)
            for _ in range(RANDOM_ROWS)]
    rows = [r.astype(np.float32) for r in rows]
    # Exactly at split thresholds: the comparison operator (<= vs <) decides.
    pairs = tree_thresholds(model_proto)
    if pairs:
        for i in range(60):
            row = x_train[rng.integers(0, len(x_train))].copy()
            for _ in range(3):
                f, v = pairs[rng.integers(0, len(pairs))]
                row[f] = v
            rows.append(row.astype(np.float32))
    # Large, negative and zero values.
    for value in (0.0, -0.0, 1e6, -1e6, 3.0e30, -3.0e30, -1.0, 1.0):
        rows.append(np.full(n_features, value, dtype=np.float32))
    for j in range(n_features):
        row = np.zeros(n_features, dtype=np.float32)
        row[j] = -1e4 if j % 2 else 1e4
        rows.append(row)
    return np.stack(rows).astype(np.float32)


def number(v):
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def export(outdir, name, estimator, x_train, seed, options=None, comment=""):
    onx = to_onnx(
        estimator,
        x_train[:1].astype(np.float32),
        target_opset=TARGET_OPSET,
        options=options,
    )
    return reference(outdir, name, onx, input_rows(seed, x_train, onx), comment)


def reference(outdir, name, onx, rows, comment):
    """Saves the model and runs onnxruntime on every row."""
    path = os.path.join(outdir, name + ".onnx")
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]
    # One row at a time, as the edge runs models; also proves batch-of-one.
    per_output = {n: [] for n in output_names}
    for row in rows:
        results = session.run(None, {input_name: row.reshape(1, -1)})
        for n, r in zip(output_names, results):
            if isinstance(r, list):  # ZipMap: a list of {class: probability}
                r = np.array([[m[k] for k in sorted(m)] for m in r], dtype=np.float32)
            per_output[n].append(np.asarray(r).reshape(-1))
    outputs = []
    for n in output_names:
        values = np.stack(per_output[n])
        outputs.append({
            "name": n,
            "dtype": str(values.dtype),
            "len": int(values.shape[1]),
            "values": [number(v) for v in values.reshape(-1)],
        })
    ops = sorted({(node.domain or "ai.onnx", node.op_type) for node in onx.graph.node})
    return {
        "name": name,
        "file": name + ".onnx",
        "comment": comment,
        "ops": [f"{d}:{o}" for d, o in ops],
        "input_len": int(rows.shape[1]),
        "rows": int(len(rows)),
        "inputs": [number(v) for v in rows.reshape(-1)],
        "outputs": outputs,
    }


def tiny_ensemble(op, mode="BRANCH_LEQ", n_outputs=1, aggregate=None, post="NONE",
                  base_values=None, missing=False, as_tensor=False, class_ids=None,
                  weights=None, labels=None):
    """Three small trees over 3 features: a split chain, a stump, a lone leaf."""
    from onnx import TensorProto, helper
    # (tree, node, feature, mode, value, true, false)
    nodes = [
        (0, 0, 0, mode, 0.5, 1, 2),
        (0, 1, 0, "LEAF", 0.0, 0, 0),
        (0, 2, 1, mode, -1.0, 3, 4),
        (0, 3, 0, "LEAF", 0.0, 0, 0),
        (0, 4, 0, "LEAF", 0.0, 0, 0),
        (1, 0, 2, mode, 0.1, 1, 2),
        (1, 1, 0, "LEAF", 0.0, 0, 0),
        (1, 2, 0, "LEAF", 0.0, 0, 0),
        (2, 0, 0, "LEAF", 0.0, 0, 0),
    ]
    leaves = [(0, 1), (0, 3), (0, 4), (1, 1), (1, 2), (2, 0)]
    prefix = "class" if op == "TreeEnsembleClassifier" else "target"
    w_trees, w_nodes, w_ids, w_values = [], [], [], []
    rng = np.random.default_rng(len(leaves) * 7 + n_outputs)
    for k, (t, n) in enumerate(leaves):
        outs = class_ids if class_ids is not None else range(n_outputs)
        for o in outs:
            w_trees.append(t)
            w_nodes.append(n)
            w_ids.append(o)
            if weights is not None:
                w_values.append(weights[(k + o) % len(weights)])
            else:
                w_values.append(float(np.float32(rng.uniform(0.05, 0.6))))
    attrs = dict(
        nodes_treeids=[n[0] for n in nodes],
        nodes_nodeids=[n[1] for n in nodes],
        nodes_featureids=[n[2] for n in nodes],
        nodes_modes=[n[3] for n in nodes],
        nodes_truenodeids=[n[5] for n in nodes],
        nodes_falsenodeids=[n[6] for n in nodes],
        post_transform=post,
    )
    values = [n[4] for n in nodes]
    if as_tensor:
        attrs["nodes_values_as_tensor"] = helper.make_tensor("v", TensorProto.FLOAT, [len(values)], values)
    else:
        attrs["nodes_values"] = values
    if missing:
        attrs["nodes_missing_value_tracks_true"] = [1 if n[1] == 0 else 0 for n in nodes]
    attrs[prefix + "_treeids"] = w_trees
    attrs[prefix + "_nodeids"] = w_nodes
    attrs[prefix + "_ids"] = w_ids
    attrs[prefix + "_weights"] = w_values
    if base_values is not None:
        attrs["base_values"] = base_values
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])
    if op == "TreeEnsembleRegressor":
        attrs["n_targets"] = n_outputs
        if aggregate:
            attrs["aggregate_function"] = aggregate
        outs = ["Y"]
        out_info = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n_outputs])]
    else:
        attrs["classlabels_int64s"] = labels if labels is not None else list(range(n_outputs))
        outs = ["label", "probabilities"]
        out_info = [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                    helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, n_outputs])]
    node = helper.make_node(op, ["X"], outs, domain="ai.onnx.ml", **attrs)
    graph = helper.make_graph([node], "tiny", [x], out_info)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    return model


def tiny_rows():
    """Rows over the split values, exactly at them, and NaN / infinities."""
    rng = np.random.default_rng(99)
    pool = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, np.float32(0.1), 0.3, 1.0, 2.0, np.nan, np.inf, -np.inf],
                    dtype=np.float32)
    rows = rng.choice(pool, size=(240, 3)).astype(np.float32)
    return rows


def handmade(outdir):
    models = []
    rows = tiny_rows()
    def add(name, **kw):
        op = kw.pop("op", "TreeEnsembleRegressor")
        onx = tiny_ensemble(op, **kw)
        models.append(reference(outdir, name, onx, rows, f"hand-built {op} {kw}"))
    for mode in ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]:
        add(f"tiny_mode_{mode.lower()}", mode=mode)
        add(f"tiny_mode_{mode.lower()}_missing", mode=mode, missing=True)
    add("tiny_as_tensor_leq", as_tensor=True)
    add("tiny_as_tensor_lt", as_tensor=True, mode="BRANCH_LT")
    add("tiny_as_tensor_eq", as_tensor=True, mode="BRANCH_EQ")
    for agg in ["SUM", "AVERAGE", "MIN", "MAX"]:
        add(f"tiny_agg_{agg.lower()}", aggregate=agg, base_values=[0.25])
        add(f"tiny_agg_{agg.lower()}_2targets", aggregate=agg, n_outputs=2, base_values=[0.25, -0.5])
    for post in ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"]:
        add(f"tiny_post_{post.lower()}_1target", post=post, weights=[0.1, 0.2, 0.05, 0.15, 0.1, 0.2])
        add(f"tiny_post_{post.lower()}_2targets", post=post, n_outputs=2, weights=[0.1, 0.2, 0.05, 0.15, 0.0, 0.2])
        add(f"tiny_class3_{post.lower()}", op="TreeEnsembleClassifier", post=post, n_outputs=3,
            weights=[0.1, 0.2, 0.05, 0.15, 0.0, 0.2, 0.3], labels=[4, 5, 6])
        add(f"tiny_class3_{post.lower()}_base", op="TreeEnsembleClassifier", post=post, n_outputs=3,
            base_values=[0.1, -0.2, 0.3], labels=[4, 5, 6])
        add(f"tiny_binary_both_{post.lower()}", op="TreeEnsembleClassifier", post=post, n_outputs=2,
            weights=[0.1, 0.2, 0.05, 0.15, 0.3], labels=[0, 1])
        if post == "PROBIT":
            # With one class id and PROBIT, onnxruntime writes one score and
            # leaves the second probability unset: nothing to compare.
            continue
        # The binary encodings skl2onnx and others use.
        add(f"tiny_binary_positive_{post.lower()}", op="TreeEnsembleClassifier", post=post, n_outputs=2,
            class_ids=[0], weights=[0.1, 0.2, 0.05, 0.15, 0.3], labels=[0, 1])
        add(f"tiny_binary_mixed_{post.lower()}", op="TreeEnsembleClassifier", post=post, n_outputs=2,
            class_ids=[0], weights=[0.4, -0.7, 0.05, -0.15, 0.3], base_values=[0.1], labels=[0, 1])
        add(f"tiny_binary_mixed_nobase_{post.lower()}", op="TreeEnsembleClassifier", post=post, n_outputs=2,
            class_ids=[0], weights=[0.4, -0.7, 0.05, -0.15, 0.3], labels=[3, 9])
    return models


def main():
    warnings.filterwarnings("ignore")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    models = []
    no_zipmap = {"zipmap": False}

    x, y = synthetic(1, 600, 5)
    m = GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=1).fit(x, y)
    models.append(export(outdir, "gbr_small", m, x, 1, comment="GradientBoostingRegressor 20 trees depth 3"))

    x, y = synthetic(2, 4000, 8)
    m = GradientBoostingRegressor(n_estimators=100, max_depth=6, random_state=2).fit(x, y)
    models.append(export(outdir, "gbr_100x6", m, x, 2, comment="GradientBoostingRegressor 100 trees depth 6 (benchmark model)"))

    x, y = synthetic(3, 800, 6)
    yc = (y > np.median(y)).astype(np.int64)
    m = RandomForestClassifier(n_estimators=15, max_depth=6, random_state=3).fit(x, yc)
    models.append(export(outdir, "rf_binary", m, x, 3, options={id(m): no_zipmap}, comment="RandomForestClassifier, 2 classes"))

    x, y = synthetic(4, 900, 6)
    yc = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3])).astype(np.int64) * 5 + 2  # classes 2, 7, 12
    m = RandomForestClassifier(n_estimators=25, max_depth=None, min_samples_leaf=2, random_state=4).fit(x, yc)
    models.append(export(outdir, "rf_3class", m, x, 4, options={id(m): no_zipmap}, comment="RandomForestClassifier, 3 classes labelled 2, 7, 12"))
    models.append(export(outdir, "rf_3class_zipmap", m, x, 4, comment="the same forest exported with its default ZipMap output"))

    x, _ = synthetic(5, 700, 4)
    m = IsolationForest(n_estimators=50, max_samples=128, random_state=5).fit(x)
    models.append(export(outdir, "iforest", m, x, 5, comment="IsolationForest, 50 trees"))

    x, y = synthetic(6, 600, 5)
    m = make_pipeline(StandardScaler(), GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=6))
    m.fit(x, (y > 0.5).astype(np.int64))
    models.append(export(outdir, "scaled_gbc_binary", m, x, 6, options={id(m.steps[-1][1]): no_zipmap}, comment="StandardScaler + GradientBoostingClassifier, 2 classes"))

    x, y = synthetic(7, 600, 5)
    yc = np.digitize(y, np.quantile(y, [0.25, 0.5, 0.75])).astype(np.int64)
    m = GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=7).fit(x, yc)
    models.append(export(outdir, "gbc_4class", m, x, 7, options={id(m): no_zipmap}, comment="GradientBoostingClassifier, 4 classes"))

    x, y = synthetic(8, 600, 5)
    m = MLPRegressor(hidden_layer_sizes=(16, 8), max_iter=400, random_state=8).fit(x, y)
    models.append(export(outdir, "mlp_regressor", m, x, 8, comment="MLPRegressor (16, 8): standard ops only"))
    m = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(16, 8), max_iter=400, random_state=8)).fit(x, y)
    models.append(export(outdir, "scaled_mlp_regressor", m, x, 8, comment="StandardScaler + MLPRegressor (16, 8)"))

    x, y = synthetic(9, 600, 5)
    m = MLPClassifier(hidden_layer_sizes=(12,), max_iter=400, random_state=9).fit(x, (y > 0.5).astype(np.int64))
    models.append(export(outdir, "mlp_classifier", m, x, 9, options={id(m): no_zipmap}, comment="MLPClassifier (12,), 2 classes"))

    models.extend(handmade(outdir))

    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump({"onnxruntime": ort.__version__, "models": models}, f)
    for model in models:
        if not model["name"].startswith("tiny_"):
            print(model["name"], " ".join(model["ops"]), [(o["name"], o["dtype"], o["len"]) for o in model["outputs"]])
    print(len(models), "models written to", outdir)


if __name__ == "__main__":
    main()
