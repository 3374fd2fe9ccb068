"""``kdcli sweep``: which method, at which settings, gives the best student for this pair — arms × a grid × seeds,
several runs at a time on one device, resumable, ending in a verdict (kdcli.reporting.verdict).

Each run is a whole train or distill run (kdcli.training) in a process of its own (``python -m kdcli.sweeps``),
from a configuration file the sweep writes first (``DIR/.sweep/NAME.yaml``), into ``DIR/NAME``; its output goes
to ``DIR/.sweep/NAME.log``, never to the terminal, so nothing from the workers interleaves. That makes each run
exactly what ``distill`` would do, keeps one run's failure (a NaN, memory) out of the others, and makes the sweep
resumable for free: started again, a run with a report is kept, one with a checkpoint is resumed, any other is
started. A worker dies with the sweep (Linux's parent-death signal): killed, the sweep leaves checkpoints, not
orphans.

Choices where the issue is silent, so a reader knows them:
- an arm is a method name (its shipped defaults, as ``method.name`` alone gives), ``student`` (the student alone: no
  teacher, ``kdcli train``), or a recipe: a preset (shipped, or a YAML file, named by its stem) that sets a method.
  The keys the recipe sets itself (not its base's) go over the sweep's configuration, the grid over those, so a
  recipe runs beside the methods it is measured against, paired by seed;
- a grid key under ``method.`` applies to the arms whose method has that option (``method.temperature`` sweeps
  vanilla's T but not the student alone's); other keys apply to every arm;
- a run that failed is tried again when the sweep is started again (an out-of-memory may pass then; a NaN resumes
  from its last good checkpoint and fails again, quickly).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from kdcli.catalog import catalog, method_spec
from kdcli.config import RunConfig, dump, nested, preset_own_keys, resolve
from kdcli.errors import Interrupted, OptionRef, UsageError, option, spell
from kdcli.interfaces import Reporter
from kdcli.io.files import atomic_write_text
from kdcli.records import Record
from kdcli.reporting.compare import compare_runs
from kdcli.reporting.verdict import verdict
from kdcli.suggest import did_you_mean

SWEEP_SCHEMA = "kdcli.sweep/1"
STUDENT = "student"
STATE = "sweep.json"
WORK = ".sweep"


@dataclass(frozen=True, kw_only=True)
class PlannedRun:
    """One run of a sweep: its arm, grid point and seed, its folder name under the sweep's, and its configuration."""

    name: str
    arm: str
    point: dict[str, Any]
    seed: int
    config: RunConfig


Status = Literal["finished", "failed", "interrupted"]


class RunOutcome(Record):
    """How one run of a sweep ended: ``finished``, ``failed`` (with its one-line reason) or ``interrupted``."""

    name: str
    arm: str
    point: dict[str, Any]
    seed: int
    status: Status
    reason: str | None = None
    """Why it did not finish: its error's message, whose options are references (``spell`` it, or read
    ``KdcliError``-style data with ``kdcli.errors.references``)."""
    seconds: float
    top1: float | None = None


class SweepResult(Record):
    """A sweep's runs, the compare table over the finished ones and the verdict; ``passed`` is false when a run did
    not finish or the ``min_gain`` gate was not met."""

    out: str
    jobs: int
    wall_seconds: float
    runs: list[RunOutcome]
    compare: dict[str, Any]
    verdict: dict[str, Any] | None
    passed: bool

    def document(self, spelling: Callable[[OptionRef], str] | None = None) -> dict[str, Any]:
        """The ``kdcli.sweep/1`` JSON document, each run's reason spelled by ``spelling`` (default: for Python)."""
        document = {"schema": SWEEP_SCHEMA, **self.model_dump(mode="json")}
        for run in document["runs"]:
            if run["reason"] is not None:
                run["reason"] = spell(run["reason"], spelling)
        return document


def _label(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", json.dumps(value) if not isinstance(value, str) else value).strip("_")


def plan(base: RunConfig, arms: list[str], seeds: list[int], grid: dict[str, list[Any]], out: Path) -> list[PlannedRun]:
    """Every run of the sweep, each checked as ``distill`` would check it (a bad arm, grid key or value is a usage
    error before any training). ``base`` is the configuration every run starts from (preset, file, flags)."""
    if not arms:
        raise UsageError(
            f"name at least one arm with {option('methods')}: a method, or {STUDENT} for the student alone"
        )
    if not seeds:
        raise UsageError(f"name at least one seed with {option('seeds')}")
    if len(set(arms)) < len(arms) or len(set(seeds)) < len(seeds):
        raise UsageError(f"{option('methods')} and {option('seeds')} name each arm and seed once")
    for key, values in grid.items():
        if not values:
            raise UsageError(f"{option('grid', key + '=V1,V2')} gives no values for {key}")
    if len({arm_name(arm) for arm in arms}) < len(arms):
        raise UsageError(f"{option('methods')} names two arms alike (recipe files are named by their stem)")
    arm_layers = {arm_name(arm): arm_layer(arm) for arm in arms}
    known = {
        name for arm, layer in arm_layers.items() if arm != STUDENT for name in method_options(layer["method"]["name"])
    }
    for key in grid:
        if key.startswith("method.") and key.removeprefix("method.") not in known:
            hint = did_you_mean(key.removeprefix("method."), sorted(known), n=1)
            raise UsageError(
                f"unknown configuration key {key!r} in {option('grid')}: no arm's method has that option; "
                f"{hint}the arms' options: {', '.join(sorted(known)) or 'none'}"
            )
    start = {k: v for k, v in dump(base).items() if k not in ("output",)}
    runs: dict[str, PlannedRun] = {}
    for arm, layer in arm_layers.items():
        options = set() if arm == STUDENT else method_options(layer["method"]["name"])
        applied = {
            key: values
            for key, values in grid.items()
            if not key.startswith("method.") or key.removeprefix("method.") in options
        }
        for combination in itertools.product(*applied.values()):
            point = dict(zip(applied, combination, strict=True))
            for seed in seeds:
                name = "-".join(
                    [arm, *(f"{key.rsplit('.', 1)[-1]}{_label(v)}" for key, v in point.items()), f"s{seed}"]
                )
                layers: list[tuple[str, dict[str, Any]]] = [("sweep base", start), (f"arm {arm}", layer)]
                layers += [(f"grid {key}={value}", nested(key, value)) for key, value in point.items()]
                layers += [("sweep", {"train": {"seed": seed}, "output": {"dir": str(out / name)}})]
                runs[name] = PlannedRun(name=name, arm=arm, point=point, seed=seed, config=resolve(layers).config)
    return list(runs.values())


def arm_name(arm: str) -> str:
    """An arm's name in its runs' folder names: a recipe file's stem, else the arm as given."""
    return Path(arm).stem if arm.endswith((".yaml", ".yml")) else arm


def arm_layer(arm: str) -> dict[str, Any]:
    """The configuration an arm lays over the sweep's: the student alone, a method at its defaults, or the keys a
    recipe preset sets itself. An unknown name fails as an unknown method does, with suggestions."""
    if arm == STUDENT:
        return {"method": {"name": "none"}, "teacher": {"arch": None, "checkpoint": None, "pretrained": False}}
    recipe = preset_own_keys(arm) if arm not in catalog() else None
    if recipe is None and arm != arm_name(arm):
        raise UsageError(f"the recipe file {arm} does not exist; give a YAML file that sets a method, or a preset name")
    if recipe is None:
        method_spec(arm)  # an unknown arm fails here, with suggestions
        return {"method": {"name": arm}}
    method = recipe.get("method")
    if not isinstance(method, dict) or not isinstance(method.get("name"), str):
        raise UsageError(
            f"the preset {arm!r} sets no method.name, so it is no arm; an arm is a method, {STUDENT}, or a preset "
            "that sets a method (a recipe such as fmnist5k-consistent)"
        )
    return recipe


def method_options(name: str) -> set[str]:
    return set(method_spec(name).options.model_fields)


def check_out(out: Path) -> None:
    """A sweep's folder is new, empty, or a sweep's (it holds ``.sweep/``): never a folder of other files."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option('output.dir', out)} is a file, not a folder; choose another {option('output.dir')}")
    if out.is_dir() and any(out.iterdir()) and not (out / WORK).is_dir():
        raise UsageError(
            f"{option('output.dir', out)} holds files that are not a kdcli sweep's; choose a new or empty "
            f"{option('output.dir')}, or the folder of the sweep to continue"
        )


def check_models(runs: list[PlannedRun]) -> None:
    """Every run names its student and its teacher's weights, and the teachers the runs distill from are each opened
    once, before any run starts (a missing, damaged or mismatched file fails the sweep now, not in every worker)."""
    import torch

    from kdcli.runtime.loading import check_models_named, open_model_file, resolve_checkpoint_path

    for run in runs:
        check_models_named(run.config, teacher=run.arm != STUDENT)
    teachers = {run.config.teacher.checkpoint for run in runs if run.arm != STUDENT} - {None}
    for checkpoint in sorted(str(path) for path in teachers):
        open_model_file(resolve_checkpoint_path(checkpoint), torch.device("cpu"))


def default_jobs(runs: list[PlannedRun], threads: int | None) -> tuple[int, int]:
    """``(jobs, threads per run)`` for this machine: on a GPU as many runs as its free memory holds at the measured
    size of one (one training step of the first run, on the device, with a margin), at most 16, the cores shared
    among them; on the CPU the cores divided by the threads of one run (one each by default)."""
    import torch

    from kdcli.data import usable_cores

    cores = usable_cores()
    device = runs[0].config.train.device

    if (device in ("auto", "cuda") or device.startswith("cuda:")) and torch.cuda.is_available():
        peak = measured_memory(runs[0].config)
        free, _ = torch.cuda.mem_get_info()
        per_run = peak * 1.5 + (600 << 20)  # the step's peak, a margin, and each process's CUDA context
        jobs = max(1, min(16, len(runs), int(0.9 * free // per_run)))
        return jobs, threads or max(1, cores // jobs)
    per = threads or 1
    return max(1, min(len(runs), cores // per)), per


def measured_memory(config: RunConfig) -> int:
    """The peak CUDA memory (bytes) of building a run and training it for one step, in this process."""
    import torch

    from kdcli.training.run import setup

    torch.cuda.reset_peak_memory_stats()
    run = setup(
        config.model_copy(update={"train": config.train.model_copy(update={"cuda_graphs": False, "compile": False})}),
        None,
    )
    images, labels, mix = next(iter(run.data.train.training_batches()))
    run.step(images, labels, 0.0, mix=mix)
    torch.cuda.synchronize()
    peak = int(torch.cuda.max_memory_allocated())
    del run
    torch.cuda.empty_cache()
    return peak


def core_shares(jobs: int, threads: int) -> list[frozenset[int]] | None:
    """The cores of each of ``jobs`` run slots: the cores this process may use, split into ``jobs`` contiguous shares
    (sizes differing by one at most). A run is pinned to its slot's share, so its threads and its image loader's
    workers (one per core it may use, kdcli.data.loader_workers) stay on its own cores, instead of every run
    starting a worker on every core of the machine. None (no pinning) where the platform cannot pin, or where the
    runs ask more threads than the cores hold (oversubscribing is then the caller's choice)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    from kdcli.data import usable_core_ids  # imports torch: not at the CLI's start (kdcli --help)

    cores = usable_core_ids()
    if jobs * threads > len(cores):
        return None
    return [frozenset(cores[k * len(cores) // jobs : (k + 1) * len(cores) // jobs]) for k in range(jobs)]


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child process sent SIGTERM when the thread that started it ends (Linux's
    PR_SET_PDEATHSIG; None elsewhere), so a killed sweep or benchmark leaves no orphan training on. libc is opened
    here, in the parent: loading a library between fork and exec in a process with threads can deadlock."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_parent_death_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(1, signal.SIGTERM)

    return set_parent_death_signal


def _state(out: Path, runs: list[PlannedRun]) -> dict[str, str]:
    """Each run's state on disk: ``done`` (a report), ``resume`` (a checkpoint) or ``start``."""
    state = {}
    for run in runs:
        folder = out / run.name
        state[run.name] = (
            "done"
            if (folder / "report.json").is_file()
            else "resume"
            if (folder / "checkpoint.pt").is_file()
            else "start"
        )
    return state


def work(how: str, target: Path, cores: str | None = None) -> int:
    """One run of a sweep, in its own process: ``start`` from a configuration file, or ``resume`` a run folder, on
    ``cores`` (``"0,1"``: its share of the machine's, ``core_shares``; a platform or container that refuses the pin
    leaves the run on every core). SIGTERM (the sweep stopping, or dying: the parent-death signal) stops it as Ctrl-C
    does, at a checkpoint. An error ends it with its exit code and one ``kdcli: error:`` line whose options are
    references (kdcli.errors), which the sweep keeps as the run's reason."""
    if cores and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError, ValueError):
            os.sched_setaffinity(0, {int(core) for core in cores.split(",")})
    from kdcli.config import read_yaml
    from kdcli.errors import KdcliError
    from kdcli.training.engine import execute, resume_config

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        if how == "resume":
            execute(resume_config(target), resume=True, run_dir=target)
        else:
            execute(resolve([(f"config {target}", read_yaml(target))]).config)
    except KdcliError as error:
        print(f"kdcli: error: {error.message}", file=sys.stderr, flush=True)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


def _reason(log: Path, code: int) -> str:
    """The one line a failed worker ended with: its ``kdcli: error:`` line, else its last line, else its code."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line.removeprefix("kdcli: error: ") for line in lines if line.startswith("kdcli: error: ")]
    if errors:
        return errors[-1]
    return lines[-1][:200] if lines else f"the run's process ended with code {code}"


class _Workers:
    """The processes of the runs in flight, so that an interrupted sweep can stop them (each checkpoints)."""

    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def run(
        self, run: PlannedRun, out: Path, how: str, threads: int, cores: frozenset[int] | None
    ) -> tuple[int, float]:
        work = out / WORK
        target = out / run.name if how == "resume" else work / f"{run.name}.yaml"
        command = [sys.executable, "-m", "kdcli.sweeps", how, str(target)]
        if cores is not None:
            command.append(",".join(map(str, sorted(cores))))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        env.pop("RANK", None)
        env.pop("WORLD_SIZE", None)
        started = time.perf_counter()
        with open(work / f"{run.name}.log", "wb") as log:
            try:
                process = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    preexec_fn=die_with_parent(),
                )
            except (OSError, subprocess.SubprocessError) as error:  # the run fails, not the sweep
                log.write(f"kdcli: error: the run's process did not start: {error}\n".encode())
                return 1, time.perf_counter() - started
            self.processes[run.name] = process
            code = process.wait()
        self.processes.pop(run.name, None)
        return code, time.perf_counter() - started

    def stop(self) -> None:
        for process in list(self.processes.values()):
            with contextlib.suppress(OSError):
                process.send_signal(signal.SIGTERM)
        for process in list(self.processes.values()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM to the sweep stops it as Ctrl-C does (the workers checkpoint and stop)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def sweep(
    base: RunConfig,
    arms: list[str],
    seeds: list[int],
    grid: dict[str, list[Any]] | None = None,
    *,
    jobs: int | None = None,
    threads: int | None = None,
    baseline: str = "vanilla",
    min_gain: float | None = None,
    reporter: Reporter | None = None,
) -> SweepResult:
    """Run every arm × grid point × seed into ``base.output.dir`` (one folder a run), ``jobs`` at a time (default:
    ``default_jobs``), and return the runs, the compare table and the verdict against ``baseline`` (when it ran).
    Started again with the same arguments it finishes only what is missing. Raises ``Interrupted`` (the workers
    stopped at their checkpoints) on Ctrl-C or SIGTERM."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError(
            "a sweep packs whole runs on one device and each run stays one process; under torchrun "
            "(which splits one run over processes) start the sweep as a plain command instead"
        )
    reporter = reporter or Reporter()
    if base.output.dir is None:
        raise UsageError(f"a sweep needs a folder for its runs: {option('output.dir', 'DIR')}")
    out = Path(base.output.dir).expanduser()
    check_out(out)
    runs = plan(base, arms, seeds, grid or {}, out)
    if min_gain is not None and baseline not in arms:
        raise UsageError(
            f"{option('min_gain')} needs the baseline {baseline!r} among the arms; add it to "
            f"{option('methods')} or choose another {option('baseline')}"
        )
    if jobs is not None and jobs < 1:
        raise UsageError(f"{option('jobs')} is a number of runs at a time, 1 or more, not {jobs}")
    if threads is not None and threads < 1:
        raise UsageError(f"{option('threads')} is a number of CPU threads for each run, 1 or more, not {threads}")
    check_models(runs)  # after the cheap checks: it reads every teacher's weights
    chosen, per_run = default_jobs(runs, threads) if jobs is None else (jobs, threads or 1)
    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    state = _state(out, runs)
    texts = {
        run.name: f"# kdcli sweep: run {run.name}\n" + yaml.safe_dump(dump(run.config), sort_keys=False) for run in runs
    }
    for run in runs:  # every run checked before any file is written
        path = work / f"{run.name}.yaml"
        if state[run.name] != "start" and path.is_file() and path.read_text() != texts[run.name]:
            raise UsageError(
                f"{out / run.name} was run with other settings than this sweep gives it (see {path}); "
                f"continue a sweep with the same command, or choose a new {option('output.dir')}"
            )
    for run in runs:
        atomic_write_text(work / f"{run.name}.yaml", texts[run.name])
    outcomes: dict[str, RunOutcome] = {}
    for run in runs:
        if state[run.name] == "done":
            outcomes[run.name] = _outcome(run, out, "finished", None, 0.0)
    pending = [run for run in runs if run.name not in outcomes]
    shares = core_shares(max(1, min(chosen, len(pending))), per_run)
    pinned = ""
    if shares:
        low, high = min(map(len, shares)), max(map(len, shares))
        pinned = f" on {low} core(s)" if low == high else f" on {low}-{high} cores"
    reporter.note(
        f"sweep: {len(runs)} runs ({len(runs) - len(pending)} already done), {chosen} at a time, "
        f"{per_run} thread(s) each{pinned}, in {out}"
    )
    started = time.perf_counter()
    workers = _Workers()
    flight: dict[Future[tuple[int, float]], PlannedRun] = {}
    queue = list(pending)
    slots: dict[Future[tuple[int, float]], int] = {}  # a run in flight -> its slot (its share of the cores)
    free = list(range(len(shares) if shares else chosen))
    _show(reporter, outcomes, flight, len(runs))
    stopped = False
    with _terminate_on_sigterm(), ThreadPoolExecutor(max_workers=chosen) as pool:
        try:
            while queue or flight:
                while queue and len(flight) < chosen:
                    run, slot = queue.pop(0), free.pop(0)
                    cores_of_run = shares[slot] if shares else None
                    future = pool.submit(workers.run, run, out, state[run.name], per_run, cores_of_run)
                    flight[future], slots[future] = run, slot
                    _show(reporter, outcomes, flight, len(runs))
                done, _ = wait(flight, return_when=FIRST_COMPLETED)
                for future in done:
                    run = flight.pop(future)
                    free.append(slots.pop(future))
                    code, seconds = future.result()
                    finished = code == 0 and (out / run.name / "report.json").is_file()
                    reason = None if finished else _reason(work / f"{run.name}.log", code)
                    outcome = _outcome(run, out, "finished" if finished else "failed", reason, seconds)
                    outcomes[run.name] = outcome
                    top1 = f"top-1 {outcome.top1:.2f} %" if outcome.top1 is not None else f"FAILED: {reason}"
                    reporter.note(f"{len(outcomes)}/{len(runs)} {run.name}: {top1} in {seconds:.0f} s")
                    _write_state(out, outcomes, runs)
                _show(reporter, outcomes, flight, len(runs))
        except KeyboardInterrupt:  # inside the pool: its threads wait for workers that must be stopped first
            stopped = True
            workers.stop()
    if stopped:
        for run in flight.values():
            outcomes[run.name] = _outcome(run, out, "interrupted", "the sweep was stopped", 0.0)
        _write_state(out, outcomes, runs)
        reporter.close()
        raise Interrupted(
            f"the sweep was stopped; its runs keep their checkpoints: run the same sweep again to "
            f"finish what is missing in {out}",
            run=out,
        )
    reporter.close()
    ordered = [outcomes[run.name] for run in runs]
    _write_state(out, outcomes, runs)
    finished_runs = [out / o.name for o in ordered if o.status == "finished"]
    table: dict[str, Any] = {"schema": "kdcli.compare/1", "rows": []}
    if finished_runs:
        table = compare_runs(finished_runs, reporter)
    has_baseline = any(row["arm"] == baseline for row in table["rows"])
    judged = verdict(table, baseline, min_gain) if has_baseline else None
    passed = all(o.status == "finished" for o in ordered) and (judged is None or judged["passed"] is not False)
    return SweepResult(
        out=str(out),
        jobs=chosen,
        wall_seconds=time.perf_counter() - started,
        runs=ordered,
        compare=table,
        verdict=judged,
        passed=passed,
    )


def _outcome(run: PlannedRun, out: Path, status: Status, reason: str | None, seconds: float) -> RunOutcome:
    top1 = None
    if status == "finished":
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            report = json.loads((out / run.name / "report.json").read_text())
            top1 = report["final"]["last_top1"]
            seconds = seconds or float(report["timing"]["wall_seconds"])
    return RunOutcome(
        name=run.name,
        arm=run.arm,
        point=run.point,
        seed=run.seed,
        status=status,
        reason=reason,
        seconds=seconds,
        top1=top1,
    )


def _write_state(out: Path, outcomes: dict[str, RunOutcome], runs: list[PlannedRun]) -> None:
    document = {
        "schema": SWEEP_SCHEMA,
        "runs": [outcomes[r.name].model_dump(mode="json") for r in runs if r.name in outcomes],
    }
    atomic_write_text(out / STATE, json.dumps(document, indent=1) + "\n")


def _show(reporter: Reporter, outcomes: dict[str, RunOutcome], flight: dict[Any, PlannedRun], total: int) -> None:
    running = ", ".join(run.name for run in flight.values())
    reporter.status(
        f"sweep {len(outcomes)}/{total}" + (f" — running {running}" if running else ""), len(outcomes), total
    )


def sweep_runs(folder: Path) -> list[Path]:
    """The finished runs of a sweep folder (``kdcli compare DIR``): its subfolders with a report, in name order."""
    return sorted(entry for entry in folder.iterdir() if (entry / "report.json").is_file())


def is_sweep(folder: Path) -> bool:
    return (folder / WORK).is_dir()


if __name__ == "__main__":
    sys.exit(work(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:4]))
