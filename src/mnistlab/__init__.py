"""mnistlab: fast, honest MNIST-family classifiers.

    import mnistlab
    result = mnistlab.train(mnistlab.RunConfig(model="cnn"))
    model = mnistlab.load_model(result.model_path)     # or an .onnx file from mnistlab export
    print(mnistlab.evaluate(model).accuracy)
    print(model.predict("digit.png").label)

Names are imported on first use, so `mnistlab.data.preprocess` and the ONNX Runtime path
work without torch installed.
"""

from importlib import import_module

from .errors import CheckpointError, DataError, MnistlabError

__version__ = "0.1.0"

_LAZY = {
    "PRESETS": "training.config", "RunConfig": "training.config", "from_preset": "training.config",
    "ModelCard": "card",
    "DATASETS": "data.mnist", "load_split": "data.own", "read_idx": "data.mnist",
    "Evaluation": "evaluation", "evaluate": "evaluation", "format_accuracy": "evaluation",
    "MODELS": "models", "build_model": "models",
    "Classifier": "inference", "load_model": "inference", "Prediction": "inference",
    "TrainResult": "training.loop", "train": "training.loop",
}

__all__ = ["CheckpointError", "DataError", "MnistlabError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'mnistlab' has no attribute {name!r}")
