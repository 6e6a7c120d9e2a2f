"""mnistlab: fast, honest MNIST-family classifiers.

    import mnistlab
    result = mnistlab.train(mnistlab.RunConfig(model="cnn"))
    model = mnistlab.load_model(result.model_path)
    print(model.evaluate().accuracy)
"""

from .config import PRESETS, RunConfig, from_preset
from .data import DATASETS, load_split, read_idx
from .errors import CheckpointError, DataError, MnistlabError
from .evaluation import Evaluation, format_accuracy
from .models import MODELS, build_model
from .prediction import Classifier, load_model
from .training import TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "DATASETS", "MODELS", "PRESETS", "CheckpointError", "Classifier", "DataError", "Evaluation",
    "MnistlabError", "RunConfig", "TrainResult", "build_model", "format_accuracy", "from_preset",
    "load_model", "load_split", "read_idx", "train",
]
