#!/usr/bin/env bash
# Set up a fresh machine for the tests and run them (pytest). MNIST comes from $MNISTLAB_DATA,
# else ../shared/data beside the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # system packages some tests use: Fashion-MNIST, Chromium for the browser tests (driven by
  # Playwright through executable_path; Playwright never downloads a browser here), and the fonts
  # that "not a digit" renders its outliers from (Noto, Droid) and judges on (FreeFont)
  packages="dataset-fashion-mnist chromium fonts-noto-core fonts-droid-fallback fonts-freefont-ttf"
  # shellcheck disable=SC2086
  if ! dpkg -s $packages >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
  fi
fi
scripts/setup.sh test
# onnxruntime-web from the npm registry, pinned in package-lock.json, for the static page's tests
npm ci --no-audit --no-fund --loglevel=error
# absolute: the notebook runs in notebooks/, where a path relative to the repo points elsewhere
MNISTLAB_DATA="$(realpath -m "${MNISTLAB_DATA:-../shared/data}")"
export MNISTLAB_DATA
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/lint-imports  # the layering and no import cycles (pyproject.toml, [tool.importlinter])
.venv/bin/mypy  # the types, over src/ ([tool.mypy] in pyproject.toml)
# the docs site (mkdocs.yml), strict: a broken link or anchor, or a docstring the API pages
# cannot render, fails; built into a temporary folder, never into the checkout
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$site"
.venv/bin/python -m pytest "$@"
# the tutorial notebook, top to bottom (its data from $MNISTLAB_DATA); stored without outputs (tests/test_notebook.py)
.venv/bin/python -m pytest --nbmake notebooks/
