import json

import pytest

from mnistlab import MnistlabError, RunConfig, from_preset
from mnistlab.training.config import DATASET_PRESETS, PRESETS
from mnistlab.training.tomlconfig import config_toml, read_config
from mnistlab_testkit.fakes import run_cli


def _write(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _from_file(path) -> RunConfig:
    settings = read_config(path)
    return from_preset(settings.pop("preset", None), **settings)


@pytest.mark.parametrize("dataset", ["mnist", *DATASET_PRESETS])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_printed_config_reads_back_to_the_same_run_config(tmp_path, preset, dataset):
    if PRESETS[preset].get("outlier_exposure") and dataset != "mnist":  # refused: its outliers are letters, clothes
        return
    cfg = from_preset(preset, dataset=dataset, device='cuda:0 "quoted" \\ back', epochs=0.5,
                      model_config={"channels": [8, 16], "odd key": 1.5}, lr=1e-05)
    assert _from_file(_write(tmp_path, config_toml(cfg, comment="a\ncomment"))) == cfg


def test_cli_print_config_round_trips_and_flags_override_the_file(tmp_path):
    printed = run_cli("train", "--preset", "fast", "--lr", "0.02", "--augment", '{"degrees": 7}', "--print-config")
    assert printed.returncode == 0, printed.stderr
    path = _write(tmp_path, printed.stdout)
    assert _from_file(path) == from_preset("fast", lr=0.02, augment={"degrees": 7})
    again = run_cli("train", "--config", path, "--print-config")
    assert _from_file(_write(tmp_path, again.stdout, "again.toml")) == _from_file(path)
    # a flag given beats the file; the file beats the preset; the file's preset works like --preset
    file = _write(tmp_path, 'preset = "fast"\nepochs = 3\nbatch-size = 32\n', "partial.toml")
    mixed = run_cli("train", "--config", file, "--epochs", "4", "--print-config")
    cfg = _from_file(_write(tmp_path, mixed.stdout, "mixed.toml"))
    assert cfg == from_preset("fast", epochs=4, batch_size=32)
    assert cfg.model == "bn-cnn"
    flag_preset = run_cli("train", "--config", file, "--preset", "accurate", "--print-config")
    assert _from_file(_write(tmp_path, flag_preset.stdout, "fp.toml")) == from_preset("accurate", epochs=3,
                                                                                       batch_size=32)


@pytest.mark.parametrize("text, message", [
    ("batch_sise = 64\n", "run.toml: unknown key 'batch_sise'"),
    ("[train]\nlr = 0.1\n", "run.toml: unknown key 'train'"),
    ('batch_size = "64"\n', "run.toml: 'batch_size' must be a whole number, not \"64\"."),
    ("batch_size = 6.5\n", "run.toml: 'batch_size' must be a whole number, not 6.5."),
    ("lr = true\n", "run.toml: 'lr' must be a number, not true."),
    ("augment = 10\n", "run.toml: 'augment' must be a table, not 10."),
    ("cuda_graph = 1\n", "run.toml: 'cuda_graph' must be true or false, not 1."),
    ('tensorboard = 3\n', "run.toml: 'tensorboard' must be true or false or a string, not 3."),
    ("lr = -1\n", "run.toml: --lr must be a positive finite number, not -1."),
    ('model = "resnet"\n', "run.toml: model 'resnet' is not one of:"),
    ('preset = "quick"\n', "run.toml: preset 'quick' is not one of: classic"),
    ("lr = \n", "run.toml: not valid TOML"),
])
def test_bad_config_files_get_one_sentence_naming_key_and_file(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(MnistlabError) as err:
        read_config(path)
    assert str(err.value).startswith(str(tmp_path / message.split(":")[0])) and message.split(": ", 1)[1] in str(
        err.value)
    proc = run_cli("train", "--config", path, "--print-config")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and str(path) in proc.stderr


def test_missing_config_file(tmp_path):
    with pytest.raises(MnistlabError, match="no such config file"):
        read_config(tmp_path / "nope.toml")


def test_training_from_a_config_file(fake_data, tmp_path):
    path = _write(tmp_path, f'model = "mlp"\nepochs = 1\nbatch_size = 20\nlr = 0.05\ndata_dir = "{fake_data}"\n'
                            f'out = "{tmp_path / "run"}"\n')
    proc = run_cli("train", "--config", path, "--seed", "3", "--no-report")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert RunConfig.from_dict(saved) == from_preset("classic", model="mlp", epochs=1, batch_size=20, lr=0.05, seed=3)


def test_print_config_is_refused_with_resume(tmp_path):
    proc = run_cli("train", "--resume", tmp_path, "--print-config")
    assert proc.returncode == 1 and "--print-config shows a new run's settings" in proc.stderr


def test_a_file_naming_outlier_families_may_take_their_weight_from_its_preset(tmp_path):
    file = _write(tmp_path, 'preset = "robust-real"\noutlier_families = "characters,scribbles,noise,lettering"\n')
    cfg = _from_file(file)
    assert cfg.outlier_exposure == PRESETS["robust-real"]["outlier_exposure"]
    assert cfg.outlier_family_names[-1] == "lettering"
    with pytest.raises(MnistlabError, match="give a weight above 0 too"):  # a preset without exposure gives none
        read_config(_write(tmp_path, 'preset = "fast"\noutlier_families = "lettering"\n', "fast.toml"))


def test_turning_off_a_presets_outlier_exposure_turns_off_its_families_too():
    cfg = from_preset("robust-real", outlier_exposure=0.0)  # its families were the preset's, not the user's
    assert cfg.outlier_exposure == 0 and cfg.outlier_families == RunConfig().outlier_families
    with pytest.raises(MnistlabError, match="give a weight above 0 too"):  # families the user names still need one
        from_preset("robust-real", outlier_exposure=0.0, outlier_families="lettering")
