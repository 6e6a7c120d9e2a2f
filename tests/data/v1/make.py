# Made with mnistlab at commit 40b1175 (checkpoint format 1, model name "fast")
import json, sys
import numpy as np
from mnistlab import RunConfig, train, load_split
from mnistlab.export import export
from mnistlab.prediction import Predictor
out = sys.argv[1]
cfg = RunConfig(model="fast", model_config={"channels": [4, 8], "hidden": 16}, epochs=1, train_limit=2000,
                optimizer="adam", lr=0.01, batch_size=100, val_size=500, checkpoint_every=1)
r = train(cfg, out=out + "/run", data_dir="../shared/data", progress=False)
export(r.model_path, "onnx", out + "/model.onnx")
x, y = load_split("mnist", train=False, data_dir="../shared/data")
p = Predictor.from_checkpoint(r.model_path).backend(x[:20].numpy())
json.dump({"probabilities": p.tolist(), "test_correct": r.test_correct}, open(out + "/expected.json", "w"))
