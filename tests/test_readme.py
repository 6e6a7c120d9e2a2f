"""The README's commands, as written (issue 20: `export fast --format web site/` failed on its first
screen). Every `mnistlab` command in its code blocks must parse, whatever the order of its options
and paths; a listed subset is run, in a folder that holds the files the README names."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from mnistlab import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[list[str]]:
    """Each `mnistlab ...` command in the README's code blocks, as argv after `mnistlab`."""
    blocks = re.findall(r"```(?:bash|text|sh|console)\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    lines = (line for block in blocks for line in block.replace("\\\n", " ").splitlines())
    for line in (line.strip().removeprefix("$ ") for line in lines):
        if not re.match(r"(\S+=\S+ |scripts/setup\.sh.*&& )*(\.venv/bin/)?mnistlab ", line):
            continue  # output shown in a text block, or another tool's command
        for part in re.split(r"\s*(?:&&|;|\|)\s*", line):
            words = shlex.split(part, comments=True)
            while words and ("=" in words[0] or words[0].endswith("setup.sh")):  # VAR=value, the set-up script
                words = words[1:] if "=" in words[0] else []
            if words and words[0] in ("mnistlab", ".venv/bin/mnistlab"):
                commands.append(words[1:])
    return commands


def test_the_readme_shows_the_commands_it_promises():
    shown = {" ".join(c) for c in readme_commands()}
    assert len(shown) >= 15
    for expected in RUN:
        assert expected in shown, f"the README no longer shows `mnistlab {expected}`: update RUN"


@pytest.mark.parametrize("argv", readme_commands(), ids=lambda argv: " ".join(argv)[:60])
def test_every_readme_command_parses(argv):
    """Parsing alone: the flags exist, take the values shown, and come in an order argparse accepts."""
    try:
        cli.build_parser(argv[0]).parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"`mnistlab {' '.join(argv)}` does not parse (exit {e.code})")


# Run as written, each in a fresh folder holding model.pt, my_digit.png/.jpg and photos/.
RUN = [
    "export fast --format web site/",
    "predict my_digit.png",
    "predict my_digit.jpg",
    "predict model.pt my_digit.jpg photos/",
    "export model.pt --format onnx",
    "export model.pt site/ --format web",
    "models",
    "datasets",
    "lesson",
]


@pytest.fixture(scope="module")
def readme_files(tmp_path_factory, trained_cnn):
    folder = tmp_path_factory.mktemp("readme-files")
    seven = Image.new("L", (200, 260), 255)
    ImageDraw.Draw(seven).line([(50, 50), (150, 50), (80, 220)], fill=0, width=18)
    seven.save(folder / "my_digit.png")
    seven.convert("RGB").save(folder / "my_digit.jpg")
    (folder / "photos").mkdir()
    seven.save(folder / "photos" / "seven.webp")
    shutil.copy(trained_cnn, folder / "model.pt")
    return folder


@pytest.mark.parametrize("command", RUN)
def test_readme_commands_run_as_written(command, readme_files, tmp_path):
    cwd = tmp_path / "here"
    shutil.copytree(readme_files, cwd)
    result = subprocess.run([sys.executable, "-m", "mnistlab", *shlex.split(command)], cwd=cwd, text=True,
                            capture_output=True, timeout=600)
    assert result.returncode == 0, f"`mnistlab {command}`: {result.stderr}"
    assert "Traceback" not in result.stderr
    if command.startswith("predict"):
        assert ": 7 (" in result.stdout, result.stdout
    if command.startswith("export"):
        written = re.search(r"wrote (\S+?)/? \(", result.stdout).group(1)
        assert (cwd / written).exists(), result.stdout
