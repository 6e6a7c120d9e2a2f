import json

import numpy as np
import pytest
from PIL import Image

from fakes import run_cli
from mnistlab import MnistlabError, load_split
from mnistlab.prediction import Predictor


@pytest.fixture(scope="module")
def digit_files(data_dir, tmp_path_factory):
    """Ten test digits as a person might send them: big, dark ink on white, various formats."""
    x, y = load_split("mnist", train=False, data_dir=data_dir, download=False)
    folder = tmp_path_factory.mktemp("digits")
    for i in range(10):
        img = Image.fromarray(255 - x[i].numpy()).resize((168, 168), Image.Resampling.BICUBIC)
        img.save(folder / f"{i}_label{int(y[i])}.{['png', 'jpg', 'bmp', 'webp', 'gif'][i % 5]}")
    return folder


def test_predictor_returns_the_whole_distribution(trained_cnn, digit_files):
    predictor = Predictor.from_checkpoint(trained_cnn)
    right = 0
    for f in sorted(digit_files.iterdir()):
        pred = predictor.predict(f)
        assert pred.probabilities.shape == (10,) and abs(pred.probabilities.sum() - 1) < 1e-5
        assert pred.top(3)[0] == (pred.label, pred.confidence)
        assert pred.preprocessed.shape == (28, 28)
        right += pred.label == f.stem.split("label")[1]
    assert right >= 9


def test_predict_pixels_checks_its_input(trained_cnn):
    predictor = Predictor.from_checkpoint(trained_cnn)
    with pytest.raises(MnistlabError, match="28x28"):
        predictor.predict_pixels(np.zeros((27, 28)))
    with pytest.raises(MnistlabError, match="between 0 and 255"):
        predictor.predict_pixels(np.full((28, 28), 300.0))


def test_predict_cli_folder_json_and_saved_inputs(trained_cnn, digit_files, tmp_path):
    proc = run_cli("predict", trained_cnn, digit_files, "--json", "--save-preprocessed", tmp_path / "seen")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 10 and all(len(r["probabilities"]) == 10 for r in rows)
    saved = sorted((tmp_path / "seen").iterdir())
    assert len(saved) == 10 and Image.open(saved[0]).size == (28, 28)


def test_predict_cli_errors_per_image(trained_cnn, digit_files, tmp_path):
    (tmp_path / "blank.png").write_bytes(b"")
    Image.new("L", (50, 50), 255).save(tmp_path / "white.png")
    one = next(digit_files.glob("*.png"))
    proc = run_cli("predict", trained_cnn, one, tmp_path / "blank.png", tmp_path / "white.png", tmp_path / "gone.png")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "blank.png: the file is empty" in proc.stderr
    assert "white.png: no digit found" in proc.stderr
    assert "gone.png: no such file" in proc.stderr
    assert proc.stdout.count("top:") == 1  # the good image still got its answer
