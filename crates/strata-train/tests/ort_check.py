"""Reference runs for strata-train's export tests (tests/onnx_export.rs).

Two commands, each reading a JSON file and printing JSON on stdout:

  ort_check.py run MODEL.onnx INPUTS.json
      INPUTS.json: {"n_features": k, "rows": [flat row-major floats]}
      Runs the model with onnxruntime (one thread, so trees are summed in
      order) and prints {"outputs": {name: [flat floats]}, "providers": [...]}.

  ort_check.py sklearn-iforest DATA.json
      DATA.json: {"n_features": k, "train": [...], "holdout": [...],
                  "labels": [0/1 per holdout row], "seed": s}
      Fits scikit-learn's IsolationForest (100 trees, 256 samples) on the
      training rows and prints {"scores": [...], "auc": a}, where scores are
      2^(-E[h]/c(n)) (sklearn's -score_samples) on the hold-out rows. The
      randomness differs from strata-train's, so only the quality of the two
      is comparable, not the scores themselves.
"""

import json
import sys

import numpy as np


def rows(doc, key):
    k = int(doc["n_features"])
    return np.asarray(doc[key], dtype=np.float32).reshape(-1, k)


def run(model_path, inputs_path):
    import onnxruntime as ort

    with open(inputs_path) as f:
        doc = json.load(f)
    x = rows(doc, "rows")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model_path, options, providers=["CPUExecutionProvider"]
    )
    (inp,) = session.get_inputs()
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {inp.name: x})
    out = {
        name: np.asarray(v, dtype=np.float64).ravel().tolist()
        for name, v in zip(names, values)
    }
    print(json.dumps({"outputs": out, "providers": session.get_providers(), "version": ort.__version__}))


def sklearn_iforest(data_path):
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score

    with open(data_path) as f:
        doc = json.load(f)
    train = rows(doc, "train")
    holdout = rows(doc, "holdout")
    labels = np.asarray(doc["labels"])
    forest = IsolationForest(
        n_estimators=100, max_samples=256, random_state=int(doc["seed"])
    ).fit(train)
    scores = -forest.score_samples(holdout)
    print(json.dumps({"scores": scores.tolist(), "auc": float(roc_auc_score(labels, scores))}))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "sklearn-iforest":
        sklearn_iforest(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
