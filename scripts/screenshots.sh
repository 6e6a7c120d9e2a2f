#!/usr/bin/env bash
# The README's pictures of the two pages, taken by their browser tests (Debian chromium, Playwright):
# docs/serve.png (mnistlab serve) and docs/web.png (the static site of mnistlab export --format web).
set -euo pipefail
cd "$(dirname "$0")/.."
export MNISTLAB_SCREENSHOTS="$PWD/docs" MNISTLAB_DATA="${MNISTLAB_DATA:-$(cd .. && pwd)/shared/data}"
.venv/bin/python -m pytest -q tests/test_serving.py::test_the_page_explains_its_answer_and_teaches_the_lesson \
  tests/test_export_web.py::test_the_site_works_from_a_static_server_with_nothing_from_outside
