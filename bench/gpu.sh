#!/usr/bin/env bash
# Every check this project must run on a GPU, in one call of under 9 minutes on one H200 (docs/results.md):
#
#   bash bench/gpu.sh --prepare        # here, once: the wheels the GPU machine lacks into .whl/, the data into .data/
#   bash bench/gpu.sh OUT              # on the GPU machine (the device tool, carrying .whl and .data)
#   bash bench/gpu.sh OUT --dry-run    # here, on the CPU: every stage, tiny, to check the script itself
#
# Stages, each under its own time limit so that one slow stage cannot take the others' results with it:
#   1. the CUDA tests (tests/training/test_acceleration.py -k cuda; its CPU tests run in CI): graphs equal eager,
#      no host sync in an epoch (114 s alone on an H200, 2026-11-30). They check results, not speed, so they run in
#      the background beside stage 2 (whose wall times then include sharing the machine with them);
#   2. the FMNIST-5k protocol (../shared/data/README.md): teacher resnet56, 40 epochs (the one in
#      .data/fmnist5k-teacher.safetensors when --prepare found it, else trained here, eager fp32, in the background
#      while stage 1 runs; KDCLI_FMNIST5K_TEACHER_EPOCHS=N trains it N epochs); resnet8 alone, vanilla, pesf,
#      skd, pea and pea's two ablations on the eager loop, plus vanilla on the fast path (compile, CUDA graphs,
#      bf16) for its accuracy; 3 seeds, seed 0 of every arm first; 8 runs at a time. Eager because a 40-epoch run of
#      these small models is shorter than its compilation;
#   3. the engine benchmark (bench/engine.py): the fast path one step at a time, and the methods' cost; `recipe`
#      (compile + graphs) right after the eager baseline, as compiling resnet110 takes most of a minute.
# Stage times on the H200 (2026-11-30, second session): wheels and kdcli 14 s, the protocol's 24 runs 248 s with the
# CUDA tests (135 s) beside them, the engine stage the remaining 263 s (five configurations; each compiled one spends
# 70-80 s compiling).
# Writes under OUT (at most 8 files come back from the device machine): results.jsonl (every JSON line), gpu.log
# (every log but the tests'), cuda-tests.log, cuda-tests.xml, fmnist5k-runs.tgz (each run's report.json,
# metrics.jsonl, config.yaml, report.md, the unfinished runs' too, and the teacher's under teacher/ when it was
# trained here). KDCLI_COMMIT=<sha> names the commit where the copy has no .git. Stage 3 gets what is left of 525 s,
# so a teacher trained here costs the engine benchmark, never the 9 minutes.
# The GPU machine has torch, timm, typer, rich, safetensors and pyyaml but no pydantic and no network: the wheels in
# .whl/ (WHEELS below, fetched by --prepare) are installed into /tmp/site, and kdcli is built there from this tree.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
        typing-extensions==4.16.0 hatchling==1.33.0 trove-classifiers==2026.9.21.13 pathspec==1.1.1 pluggy==1.6.0
        packaging==26.2)
ARMS=(student@eager vanilla@eager pesf@eager skd@eager pea@eager pea:sps=false@eager pea:ptp=false@eager vanilla)
TEACHER_FILE=${KDCLI_FMNIST5K_TEACHER:-/work/bench-runs/teacher/student.safetensors}

if [[ ${1:-} == --prepare ]]; then
    mkdir -p .whl .data
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}" || exit 1
    cp -r ../shared/data/fashion-mnist .data/ || exit 1
    if [[ -f $TEACHER_FILE ]]; then cp "$TEACHER_FILE" .data/fmnist5k-teacher.safetensors; fi
    du -sh .whl .data
    exit 0
fi

OUT=${1:?usage: bash bench/gpu.sh OUT [--dry-run] | bash bench/gpu.sh --prepare}
DRY=${2:-}
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
RESULTS="$OUT/results.jsonl"
: >"$LOG"
: >"$RESULTS"
say() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"; }

# --- what the machine lacks: pydantic (and kdcli's own entry points, which need an installed distribution) -------
if ! python3 -c "import pydantic, kdcli, importlib.metadata as m; m.version('kdcli')" 2>/dev/null; then
    missing=$(for w in "${WHEELS[@]}"; do n=${w%%==*}; ls .whl/"${n//-/_}"-* >/dev/null 2>&1 || echo "$w"; done)
    if [[ -n $missing ]]; then
        echo "bench/gpu.sh: .whl/ lacks these wheels: $missing; run 'bash bench/gpu.sh --prepare' where pip can reach PyPI" | tee -a "$LOG"
        exit 2
    fi
    say "installing .whl/ into /tmp/site and building kdcli from this tree"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    rm -rf /tmp/kdcli-wheel
    python3 -m pip wheel -q --no-index --no-deps --no-build-isolation -w /tmp/kdcli-wheel . >>"$LOG" 2>&1 || exit 1
    python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/kdcli-wheel/kdcli-*.whl >>"$LOG" 2>&1 || exit 1
fi
export PYTHONUNBUFFERED=1
python3 - >>"$RESULTS" <<'PY'
import json, platform, torch, timm, kdcli
import os
print(json.dumps({"check": "environment", "commit": os.environ.get("KDCLI_COMMIT"), "kdcli": kdcli.__version__, "torch": torch.__version__, "timm": timm.__version__,
                  "python": platform.python_version(), "cuda": torch.version.cuda,
                  "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}))
PY

if [[ $DRY == --dry-run ]]; then
    DEVICE=cpu; TEST_LIMIT=600; FMNIST_LIMIT=600; TOTAL_LIMIT=3000
    FMNIST=(--epochs 1 --seeds 0 --arms student@eager vanilla pea:sps=false@eager --jobs 2 --threads 1)
    TEACHER_EPOCHS=1; TEACHER_LIMIT=600
    ENGINE=(--device cpu --images 256 --configs eager bf16)
else
    DEVICE=cuda; TEST_LIMIT=300; FMNIST_LIMIT=320; TOTAL_LIMIT=525
    FMNIST=(--arms "${ARMS[@]}" --jobs 8 --threads 2)
    TEACHER_EPOCHS=${KDCLI_FMNIST5K_TEACHER_EPOCHS:-40}; TEACHER_LIMIT=180
    ENGINE=(--images 20000 --configs eager recipe graphs-eager batch1024 pesf skd pea-nosps bf16)
fi
DATA=.data/fashion-mnist
[[ -d $DATA ]] || DATA=../shared/data/fashion-mnist
TEACHER=.data/fmnist5k-teacher.safetensors
TEACHER_PID=
if [[ ! -f $TEACHER ]]; then
    say "0/3 training the FMNIST-5k teacher in the background (${TEACHER_EPOCHS} epochs, eager fp32)"
    rm -rf /tmp/kdcli-teacher
    TEACHER=/tmp/kdcli-teacher/student.safetensors
    python3 -m kdcli train --preset fmnist5k-teacher --data-dir "$DATA" --epochs "$TEACHER_EPOCHS" --device "$DEVICE" \
        --precision fp32 --no-compile --no-cuda-graphs --no-channels-last --out /tmp/kdcli-teacher \
        >>"$LOG" 2>&1 &
    TEACHER_PID=$!
fi

say "1/3 CUDA tests in the background, beside the protocol (limit ${TEST_LIMIT}s; log cuda-tests.log)"
timeout "$TEST_LIMIT" python3 -m pytest -v -rs -p no:cacheprovider tests/training/test_acceleration.py -k cuda \
    --junitxml "$OUT/cuda-tests.xml" >"$OUT/cuda-tests.log" 2>&1 &
TESTS_PID=$!

if [[ -n $TEACHER_PID ]]; then
    say "waiting for the teacher (limit ${TEACHER_LIMIT}s from now)"
    for _ in $(seq "$TEACHER_LIMIT"); do kill -0 "$TEACHER_PID" 2>/dev/null || break; sleep 1; done
    kill "$TEACHER_PID" 2>/dev/null
    wait "$TEACHER_PID"
    echo "teacher exit $?" >>"$LOG"
fi
FMNIST+=(--teacher "$TEACHER")

say "2/3 FMNIST-5k protocol (limit ${FMNIST_LIMIT}s)"
rm -rf /tmp/kdcli-fmnist /tmp/kdcli-fmnist-results
timeout "$FMNIST_LIMIT" python3 bench/fmnist5k.py --data-dir "$DATA" --val-split 0.1 --device "$DEVICE" \
    --out /tmp/kdcli-fmnist --results /tmp/kdcli-fmnist-results "${FMNIST[@]}" >>"$RESULTS" 2>>"$LOG"
echo "fmnist5k exit $?" >>"$LOG"
if [[ -n $TEACHER_PID ]]; then
    mkdir -p /tmp/kdcli-fmnist/teacher && cp /tmp/kdcli-teacher/{report.json,metrics.jsonl,config.yaml} \
        /tmp/kdcli-fmnist/teacher/ 2>/dev/null
fi
(cd /tmp/kdcli-fmnist 2>/dev/null && find . \( -name report.json -o -name report.md -o -name metrics.jsonl \
    -o -name config.yaml \) -print0 | tar czf "$OUT/fmnist5k-runs.tgz" --null -T -)

say "waiting for the CUDA tests"
wait "$TESTS_PID"
echo "pytest exit $?" >>"$LOG"
python3 - "$OUT/cuda-tests.xml" >>"$RESULTS" <<'PY'
import json, sys, xml.etree.ElementTree as ET
try:
    suite = ET.parse(sys.argv[1]).getroot().find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
except (OSError, ET.ParseError, AttributeError):
    counts = {"unfinished": True}
print(json.dumps({"check": "cuda-tests", **counts}))
PY

ENGINE_LIMIT=$((TOTAL_LIMIT - SECONDS)); ((ENGINE_LIMIT < 30)) && ENGINE_LIMIT=30
say "3/3 engine benchmark (limit ${ENGINE_LIMIT}s)"
timeout "$ENGINE_LIMIT" python3 bench/engine.py "${ENGINE[@]}" >>"$RESULTS" 2>>"$LOG"
echo "engine exit $?" >>"$LOG"
say "done"
cat "$RESULTS"
