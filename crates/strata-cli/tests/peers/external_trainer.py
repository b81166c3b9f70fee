"""An external trainer, as an ML engineer would write one for the hub's
training jobs: reads the training set the hub exported
($STRATA_TRAIN_CSV: ts_ns,device,<features...>,target), fits a
scikit-learn GradientBoostingRegressor, and writes model.onnx (skl2onnx)
and metrics.json into $STRATA_OUTPUT_DIR.

  external_trainer.py [--sleep S]   waits S seconds first (to be caught
                                    running by a crash test)
"""
import json
import os
import sys
import time

import numpy as np
from sklearn.ensemble import GradientBoostingRegressor
from skl2onnx import to_onnx

if "--sleep" in sys.argv:
    seconds = float(sys.argv[sys.argv.index("--sleep") + 1])
    print(f"waiting {seconds} s before training", flush=True)
    time.sleep(seconds)

data = np.genfromtxt(os.environ["STRATA_TRAIN_CSV"], delimiter=",", skip_header=1, dtype=np.float64)
features = os.environ["STRATA_FEATURES"].split(",")
x = data[:, 2:2 + len(features)].astype(np.float32)
y = data[:, -1]
print(f"training on {len(y)} rows x {len(features)} features", flush=True)
model = GradientBoostingRegressor(n_estimators=60, max_depth=3, random_state=0).fit(x, y)
train_mae = float(np.mean(np.abs(model.predict(x) - y)))
out = os.environ["STRATA_OUTPUT_DIR"]
onx = to_onnx(model, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})
with open(os.path.join(out, "model.onnx"), "wb") as f:
    f.write(onx.SerializeToString())
with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump({"train_mae": train_mae}, f)
print(f"done: train MAE {train_mae:.3f}", flush=True)
