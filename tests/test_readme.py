"""The commands of the README and of the docs pages (docs/*.md), as written (`export ... --format
web site/` once failed on the README's first screen). Every `mnistlab` command in their code blocks
and tables must parse, whatever the order of its options and paths; a listed subset is run, in a
folder that holds the files the pages name. A page's set-up line installs what its block uses, and
a page that writes plain `mnistlab` says to activate the virtual environment first."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from mnistlab import cli

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
CODE_BLOCK = r"```(?:bash|text|sh|console)\n(.*?)```"
COMMAND = r"(\S+=\S+ |scripts/setup\.sh.*&& )*(\.venv/bin/)?mnistlab "


def block_lines(page: Path) -> list[list[str]]:
    """The lines of each shell code block of a page, continuations joined, prompts dropped."""
    blocks = re.findall(CODE_BLOCK, page.read_text(), flags=re.S)
    return [[line.strip().removeprefix("$ ") for line in block.replace("\\\n", " ").splitlines()]
            for block in blocks]


def table_commands(page: Path) -> list[str]:
    """`mnistlab ...` written in a table's cells: the README's one line for each thing you can do."""
    rows = (line for line in page.read_text().splitlines() if line.startswith("|"))
    return [m for row in rows for m in re.findall(r"`((?:\.venv/bin/)?mnistlab [^`]+)`", row)]


def commands(line: str) -> list[list[str]]:
    """The `mnistlab` commands in one shell line, each as argv after `mnistlab`."""
    if not re.match(COMMAND, line):
        return []  # output shown in a text block, or another tool's command
    found = []
    for part in re.split(r"\s*(?:&&|;|\|)\s*", line):
        words = shlex.split(part, comments=True)
        while words and ("=" in words[0] or words[0].endswith("setup.sh")):  # VAR=value, the set-up script
            words = words[1:] if "=" in words[0] else []
        if words and words[0] in ("mnistlab", ".venv/bin/mnistlab"):
            found.append(words[1:])
    return found


def page_commands(page: Path) -> list[list[str]]:
    lines = [line for block in block_lines(page) for line in block] + table_commands(page)
    return [argv for line in lines for argv in commands(line)]


def documented_commands() -> list[tuple[str, list[str]]]:
    """Each `mnistlab ...` command of the README and the docs pages: (page, argv after `mnistlab`)."""
    return [(page.name, argv) for page in PAGES for argv in page_commands(page)]


def test_the_pages_show_the_commands_they_promise():
    readme = {" ".join(argv) for argv in page_commands(README)}
    shown = {" ".join(argv) for _, argv in documented_commands()}
    assert len(readme) >= 15 and len(shown) > len(readme)
    for expected in RUN:
        assert expected in shown, f"no page shows `mnistlab {expected}` any more: update RUN"


@pytest.mark.parametrize("page, argv", documented_commands(), ids=lambda x: x if isinstance(x, str) else
                         " ".join(x)[:60])
def test_every_documented_command_parses(page, argv):
    """Parsing alone: the flags exist, take the values shown, and come in an order argparse accepts."""
    try:
        cli.build_parser(argv[0]).parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{page}: `mnistlab {' '.join(argv)}` does not parse (exit {e.code})")


# What each command needs beyond the always-installed report extra (scripts/setup.sh).
NEEDS = {"serve": "serve", "--format onnx": "onnx", "--format web": "onnx", ".onnx": "onnx",
         "--tensorboard": "tensorboard", ".csv": "data"}


def test_a_set_up_line_installs_what_its_block_uses():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    checked = 0
    for page in PAGES:
        for block in block_lines(page):
            setup = next((re.search(r"scripts/setup\.sh(?: ([a-z,]+)\b)?", line) for line in block
                          if "scripts/setup.sh" in line), None)
            if setup is None:
                continue
            named = set(filter(None, (setup.group(1) or "").split(",")))
            assert named <= extras, f"{page.name}: scripts/setup.sh names unknown extras {named - extras}"
            for argv in (argv for line in block for argv in commands(line)):
                text = " ".join(argv)
                missing = {extra for needle, extra in NEEDS.items() if needle in text} - named - {"report"}
                assert not missing, f"{page.name}: `mnistlab {text}` needs {missing}, which its set-up line lacks"
                checked += 1
    assert checked >= 3


def test_pages_with_plain_mnistlab_say_to_activate_the_environment():
    for page in PAGES:
        lines = [line for block in block_lines(page) for line in block] + table_commands(page)
        plain = [line for line in lines if re.match(r"(\S+=\S+ )*(mnistlab|python|torchrun) ", line)]
        if plain:
            assert "source .venv/bin/activate" in page.read_text(), (
                f"{page.name} writes `{plain[0]}` without saying to `source .venv/bin/activate` first")
    assert not [line for block in block_lines(README) for line in block if re.match(r"mnistlab ", line)], \
        "the README calls .venv/bin/mnistlab throughout"


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readmes_links_find_their_files_and_sections():
    """Links into BENCHMARKS.md and the docs pages, as GitHub renders them (the site's own links are
    checked by `mkdocs build --strict`)."""
    links = re.findall(r"\]\(([^)#:]+)(?:#([^)]+))?\)", README.read_text())
    assert any(path == "BENCHMARKS.md" and anchor for path, anchor in links)
    for path, anchor in links:
        target = ROOT / path
        assert target.exists(), f"README links {path}, which is gone"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), flags=re.M)
            assert anchor in {github_anchor(h) for h in headings}, f"README links {path}#{anchor}: no such section"


def test_the_api_page_documents_each_public_name_where_it_lives():
    import mnistlab

    api = (ROOT / "docs" / "api.md").read_text()
    for name in ("load_model", "Classifier", "Prediction", "train", "TrainResult", "RunConfig", "load_split",
                 "ModelCard", "Evaluation"):
        assert f"::: mnistlab.{mnistlab._LAZY[name]}.{name}\n" in api, f"docs/api.md lacks mnistlab.{name}"


# Run as written, each in a fresh folder holding model.pt, my_digit.png/.jpg and photos/.
RUN = [
    "export robust-real --format web site/",
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
def test_documented_commands_run_as_written(command, readme_files, tmp_path):
    cwd = tmp_path / "here"
    shutil.copytree(readme_files, cwd)
    result = subprocess.run([sys.executable, "-m", "mnistlab", *shlex.split(command)], cwd=cwd, text=True,
                            capture_output=True, timeout=600)
    assert result.returncode == 0, f"`mnistlab {command}`: {result.stderr}"
    assert "Traceback" not in result.stderr
    if command.startswith("predict"):
        assert re.search(r": 7( \(| or )", result.stdout), result.stdout  # "7 or 1?" where less than 90% sure
    if command.startswith("export"):
        written = re.search(r"wrote (\S+?)/? \(", result.stdout).group(1)
        assert (cwd / written).exists(), result.stdout
