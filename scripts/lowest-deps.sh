#!/usr/bin/env bash
# The declared dependency floors, tested: a fresh virtual environment at the lowest version pyproject.toml allows of
# each direct dependency, then the quick test subset. Too heavy for CI (torch alone is several GB); run it when a
# floor moves, and record the result in docs/results.md ("Dependency floors").
#   bash scripts/lowest-deps.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/kdcli-lowest}
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -U pip
# timm needs torchvision; torch 2.9.1 is the lowest torch tested, with its torchvision.
"$VENV/bin/pip" install -q "torch==2.9.1" "torchvision==0.24.1"
floors=$(python3 - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = project["dependencies"] + project["optional-dependencies"]["onnx"]  # the onnx extra's floors too
print(" ".join(d.replace(">=", "==") for d in deps if not d.startswith("torch")))
PY
)
# shellcheck disable=SC2086
"$VENV/bin/pip" install -q $floors pytest hypothesis
"$VENV/bin/pip" install -q --no-deps -e .
"$VENV/bin/pip" freeze | grep -v "^-e"
"$VENV/bin/python" -m pytest -q -m "not slow" -p no:cacheprovider
