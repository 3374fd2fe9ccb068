#!/usr/bin/env bash
# Every check this project must run on a GPU, in one call of under 9 minutes on one H200 (docs/results.md):
#
#   bash bench/gpu.sh --prepare        # here, once: the wheels the GPU machine lacks into .whl/, the data into .data/
#   bash bench/gpu.sh OUT              # on the GPU machine (the device tool, carrying .whl and .data)
#   bash bench/gpu.sh OUT --dry-run    # here, on the CPU: every stage, tiny, to check the script itself
#
# Stages, each under its own time limit so that one slow stage cannot take the others' results with it:
#   1. the CUDA tests (tests/runtime/test_acceleration.py and tests/data/test_device_images.py -k cuda; their CPU tests run in CI): graphs equal eager, nvJPEG decodes,
#      no host sync in an epoch (114 s alone on an H200, 2026-11-30). They check results, not speed, so they run in
#      the background beside stage 2 (whose wall times then include sharing the machine with them);
#   2. parity with the plain reference loop (bench/parity.py, issue 19): the loop (.data/reference/, copied there
#      by --prepare from ../shared/reference; never committed) and kdcli on the same 5,000 images, teacher, student
#      alone and KD, 3 seeds each, 12 runs at a time, bf16 on both sides, kdcli without compile (a 40-epoch run of
#      these small models is shorter than its compilation); the one-difference ablations ran on the CPU;
#   3. the FMNIST-5k protocol as written (../shared/data/README.md): stage 2's kdcli teacher of seed 0 (40 epochs),
#      resnet8 alone, vanilla, pesf, skd and pea with their shipped defaults, one `kdcli sweep` (bench/fmnist5k.py),
#      bf16 without torch.compile; 3 seeds, 8 at a time;
#   4. with KDCLI_GPU_ENGINE=1, the engine benchmark (bench/engine.py), in what is left of 525 s; it was measured in
#      the sessions of 2026-11-30 and the schedule change does not touch the step it times.
# With KDCLI_GPU_PLAN=recipes (issue 23) stage 2 is skipped and stage 3 trains its own 40-epoch teacher (seed 0),
# then runs vanilla against the recipes (fmnist5k-consistent, dist, bench/recipes/*.yaml) for
# KDCLI_GPU_EPOCHS (default 40; 160 and 400 for the patience curve, one call each) and 3 seeds, 8 at a time.
# KDCLI_GPU_ARMS replaces those arms and KDCLI_GPU_GRID adds a sweep grid: the temperature grid is
#   KDCLI_GPU_PLAN=recipes KDCLI_GPU_ARMS="vanilla BEST" KDCLI_GPU_GRID="method.temperature=1,2,4,8" bash bench/gpu.sh OUT
# With KDCLI_GPU_PLAN=imagefolder (issue 24) stages 2 and 3 give way to bench/imagefolder.py: a 224-px JPEG folder of
# 10,000 images, resnet50 → resnet18 and vit_small → vit_tiny, loader alone, step alone, kdcli distill and timm's
# train.py (.data/timm-train/train.py, put there by --prepare from a fetched timm repository) for 3 epochs each, from
# the same teacher trained 2 epochs by kdcli (so that the top-1s compare students of a teacher that knows something);
# then resnet50 → resnet18 again with data.decode=device (nvJPEG and the crops on the GPU).
# Writes under OUT (at most 8 files come back from the device machine): results.jsonl (every JSON line), gpu.log
# (every log but the tests'), cuda-tests.log, cuda-tests.xml, runs.tgz (each run's report.json, metrics.jsonl,
# config.yaml and the reference loop's results, never weights). KDCLI_COMMIT=<sha> names the commit where the copy
# has no .git.
# The GPU machine has torch, timm, typer, rich, safetensors and pyyaml but no pydantic and no network: the wheels in
# .whl/ (WHEELS below, fetched by --prepare) are installed into /tmp/site, and kdcli is built there from this tree.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
        typing-extensions==4.16.0 hatchling==1.33.0 trove-classifiers==2026.9.21.13 pathspec==1.1.1 pluggy==1.6.0
        packaging==26.2)
ARMS=(student vanilla pesf skd pea)
RECIPE_ARMS=(vanilla fmnist5k-consistent dist bench/recipes/ls.yaml bench/recipes/ls-paper.yaml
             bench/recipes/consistent-labels.yaml bench/recipes/cutmix-labels.yaml)
PLAN=${KDCLI_GPU_PLAN:-protocol}
[[ -n ${KDCLI_GPU_ARMS:-} ]] && read -r -a RECIPE_ARMS <<<"$KDCLI_GPU_ARMS"
GRID=(); [[ -n ${KDCLI_GPU_GRID:-} ]] && read -r -a GRID <<<"--grid $KDCLI_GPU_GRID"  # items split at spaces

if [[ ${1:-} == --prepare ]]; then
    mkdir -p .whl .data
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}" || exit 1
    cp -r ../shared/data/fashion-mnist .data/ || exit 1
    mkdir -p .data/reference && cp ../shared/reference/fmnist5k_reference.py .data/reference/ || exit 1
    # timm's train.py for the image-folder comparison: from a local clone or mirror of huggingface/pytorch-image-models
    # (KDCLI_TIMM_REPO, a git directory; REF the commit), never committed here
    TIMM_REPO=${KDCLI_TIMM_REPO:-/work/.mirror/huggingface+pytorch-image-models/repo}
    if git --git-dir "$TIMM_REPO" rev-parse -q --verify "${KDCLI_TIMM_REF:-main}" >/dev/null 2>&1; then
        mkdir -p .data/timm-train
        git --git-dir "$TIMM_REPO" show "${KDCLI_TIMM_REF:-main}:train.py" >.data/timm-train/train.py || exit 1
        git --git-dir "$TIMM_REPO" rev-parse "${KDCLI_TIMM_REF:-main}" >.data/timm-train/REF
    else
        echo "no timm repository at $TIMM_REPO: the image-folder plan will run without timm's train.py"
    fi
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
    DEVICE=cpu; TEST_LIMIT=600; PARITY_LIMIT=900; TOTAL_LIMIT=3000
    PARITY=(--epochs 1 --teacher-epochs 1 --seeds 0 --jobs 2 --ablations "kdcli/alone:data.drop_last=false")
    FMNIST=(--epochs 1 --seeds 0 --arms student vanilla --jobs 2 --threads 1)
    [[ $PLAN == recipes ]] && FMNIST=(--epochs 1 --teacher-epochs 1 --seeds 0 --arms "${RECIPE_ARMS[@]:0:3}" "${GRID[@]}"
                                      --jobs 2 --threads 1)
    ENGINE=(--device cpu --images 256 --configs eager bf16)
else
    DEVICE=cuda; TEST_LIMIT=300; PARITY_LIMIT=270; TOTAL_LIMIT=525
    PARITY=(--jobs 12 --ablations none --kdcli-args=--no-compile)
    FMNIST=(--arms "${ARMS[@]}" --jobs 8 --threads 2 --set train.compile=false)
    [[ $PLAN == recipes ]] && FMNIST=(--arms "${RECIPE_ARMS[@]}" "${GRID[@]}" --epochs "${KDCLI_GPU_EPOCHS:-40}" --jobs 8
                                      --threads 2 --set train.compile=false)
    ENGINE=(--images 20000 --configs eager recipe graphs-eager batch1024 pesf skd pea-nosps bf16)
fi
DATA=.data/fashion-mnist
[[ -d $DATA ]] || DATA=../shared/data/fashion-mnist
rm -rf /tmp/kdcli-runs && mkdir -p /tmp/kdcli-runs

say "1/4 CUDA tests in the background, beside the benchmarks (limit ${TEST_LIMIT}s; log cuda-tests.log)"
timeout "$TEST_LIMIT" python3 -m pytest -v -rs -p no:cacheprovider tests/runtime/test_acceleration.py \
    tests/data/test_device_images.py -k cuda \
    --junitxml "$OUT/cuda-tests.xml" >"$OUT/cuda-tests.log" 2>&1 &
TESTS_PID=$!

if [[ $PLAN == imagefolder ]]; then
    IMAGES=10000; VAL=2000; EPOCHS=3; BATCH=128; TEACHER_EPOCHS=2  # a teacher that knows something: comparable top-1s
    [[ $DRY == --dry-run ]] && IMAGES=64 && VAL=32 && EPOCHS=1 && BATCH=16 && TEACHER_EPOCHS=1  # timm's train.py drops a partial batch
    TIMM=(); [[ -f .data/timm-train/train.py ]] && TIMM=(--timm-train .data/timm-train/train.py)
    LIMIT=$((TOTAL_LIMIT - SECONDS - 20))
    say "2-3/4 image folders at 224 px (limit ${LIMIT}s)"
    timeout "$LIMIT" python3 bench/imagefolder.py --data-dir "$DATA" --device "$DEVICE" --out /tmp/kdcli-runs/imagefolder \
        --images "$IMAGES" --val-images "$VAL" --epochs "$EPOCHS" --batch-size "$BATCH" --teacher-epochs "$TEACHER_EPOCHS" \
        "${TIMM[@]}" >>"$RESULTS" 2>>"$LOG"
    echo "imagefolder exit $?" >>"$LOG"
    LIMIT=$((TOTAL_LIMIT - SECONDS - 20)); ((LIMIT < 30)) && LIMIT=30
    say "2-3/4 the same with data.decode=device, resnet50 → resnet18 (limit ${LIMIT}s)"
    timeout "$LIMIT" python3 bench/imagefolder.py --data-dir "$DATA" --device "$DEVICE" --out /tmp/kdcli-runs/imagefolder \
        --images "$IMAGES" --val-images "$VAL" --epochs "$EPOCHS" --batch-size "$BATCH" --decode device \
        --teacher-epochs "$TEACHER_EPOCHS" \
        --pairs resnet50:resnet18 >>"$RESULTS" 2>>"$LOG"
    echo "imagefolder (device decode) exit $?" >>"$LOG"
    TEACHER_ARGS=(--skip)
elif [[ $PLAN == recipes ]]; then
    say "2/4 skipped (KDCLI_GPU_PLAN=recipes): stage 3 trains its own teacher"
    TEACHER_ARGS=()
else
    say "2/4 parity with the reference loop (limit ${PARITY_LIMIT}s)"
    timeout "$PARITY_LIMIT" python3 bench/parity.py --data-dir "$DATA" --device "$DEVICE" --out /tmp/kdcli-runs/parity \
        "${PARITY[@]}" >>"$RESULTS" 2>>"$LOG"
    echo "parity exit $?" >>"$LOG"
    TEACHER_ARGS=(--teacher /tmp/kdcli-runs/parity/kdcli-teacher-s0/student.safetensors)
fi

FMNIST_LIMIT=$((TOTAL_LIMIT - SECONDS - 20)); ((FMNIST_LIMIT < 30)) && FMNIST_LIMIT=30
if [[ ${TEACHER_ARGS[0]:-} == --skip ]]; then
    echo "stage 3 skipped (KDCLI_GPU_PLAN=imagefolder)" >>"$LOG"
elif [[ ${#TEACHER_ARGS[@]} -eq 0 || -f ${TEACHER_ARGS[1]} ]]; then
    say "3/4 FMNIST-5k $PLAN with kdcli's 40-epoch teacher of seed 0 (limit ${FMNIST_LIMIT}s)"
    timeout "$FMNIST_LIMIT" python3 bench/fmnist5k.py --data-dir "$DATA" --val-split "${KDCLI_PROTOCOL_VAL_SPLIT:-0}" \
        --device "$DEVICE" "${TEACHER_ARGS[@]}" --out /tmp/kdcli-runs/fmnist5k "${FMNIST[@]}" >>"$RESULTS" 2>>"$LOG"
    echo "fmnist5k exit $?" >>"$LOG"
else
    echo "no kdcli teacher from stage 2: the protocol did not run" | tee -a "$LOG"
fi
(cd /tmp/kdcli-runs && find . \( -name report.json -o -name metrics.jsonl -o -name config.yaml \
    -o -name results.jsonl \) -print0 | tar czf "$OUT/runs.tgz" --null -T -)

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

if [[ ${KDCLI_GPU_ENGINE:-0} == 1 ]]; then
    ENGINE_LIMIT=$((TOTAL_LIMIT - SECONDS)); ((ENGINE_LIMIT < 30)) && ENGINE_LIMIT=30
    say "4/4 engine benchmark (limit ${ENGINE_LIMIT}s)"
    timeout "$ENGINE_LIMIT" python3 bench/engine.py "${ENGINE[@]}" >>"$RESULTS" 2>>"$LOG"
    echo "engine exit $?" >>"$LOG"
fi
say "done"
cat "$RESULTS"
