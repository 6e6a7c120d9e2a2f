"""The app for benchmarks/serving.py's comparison with uvicorn's own supervisor (`uvicorn --workers N
--factory uvicorn_app:app`): the model named by $MNISTLAB_CHECKPOINT, loaded in each worker."""

import os

from mnistlab.serve.server import _load, create_app


def app():
    return create_app(_load(os.environ["MNISTLAB_CHECKPOINT"]), threads=1)
