"""``report.json``: one typed model (pydantic) with a schema version, which the engine writes and ``kdcli compare``, the
benchmarks and the tests read.

"Best" is chosen on the validation split (``data.val_split``), never on test. Without a validation split the report
gives the last epoch, plus the highest test top-1 over epochs under its own name (``max_test_top1``): that is the
figure mdistiller's tables report, and it is optimistic, so it is never called "best".

Schema history: ``kdcli.report/2`` (0.2.0) names the method's own findings ``method_report`` (``strategy`` before)
and describes any student transform under ``student.transform`` (``student.sps`` before). Reports of schema 1 are
read and migrated, so old run directories still compare.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from kdcli.errors import UsageError
from kdcli.records import EpochRecord, Record
from kdcli.reporting.finite import dumps

REPORT_SCHEMA = "kdcli.report/2"


class Environment(Record):
    python: str
    torch: str
    timm: str
    platform: str
    device: str
    cuda: str | None = None
    cpu_threads: int
    cpu_cores: int | None = None
    """The CPU cores the run could use (a sweep's run: its share of the machine's); absent in older reports."""
    precision: str | None = None
    """The precision the run trained in, ``auto`` settled (bf16 on CUDA, else fp32); absent in older reports."""
    channels_last: bool | None = None
    compile: bool | None = None
    cuda_graphs: bool | None = None
    """The fast-path switches as the run resolved them (kdcli.runtime.acceleration); absent in older reports."""


class TeacherCheck(Record):
    """The teacher measured on the evaluation split before distilling."""

    arch: str
    split: str
    sha256: str | None = None
    path: str | None = None
    parameters: int
    macs: int
    top1: float
    top5: float
    nll: float
    ece: float


class TransformCost(Record):
    """A student transform (Pea-KD's SPS, a plugin's) and what it costs against the plain student."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    parameters_plain: int
    macs_plain: int
    parameters_unshared: int
    """Parameters if every shared weight had its own copy: the plain network of the same effective depth."""


class StudentSummary(Record):
    arch: str
    parameters: int
    macs: int
    file_bytes: int
    extra_training_parameters: int
    """Parameters training adds on top of the student (a method's adapter or regressor); never exported."""
    transform: TransformCost | None = None


class Final(Record):
    epochs: int
    last_top1: float | None = None
    last_top5: float | None = None
    last_nll: float | None = None
    last_ece: float | None = None
    max_test_top1: float | None = None
    best_epoch: int | None = None
    best_val_top1: float | None = None
    best_top1: float | None = None
    """Test top-1 at the epoch with the best validation top-1 (with a validation split, ``data.val_split``)."""


class Timing(Record):
    wall_seconds: float
    seconds_per_epoch: float
    images_per_second: float
    loader_fraction: float | None = None
    """The share of the training epochs' time spent waiting for the next batch (None in reports before 0.2.0): near
    1 the data path, not the model, sets the pace."""


class TargetWarning(Record):
    epoch: int
    warning: str


class Report(Record):
    schema_: str = Field(REPORT_SCHEMA, alias="schema")
    kdcli_version: str
    created: str
    kind: Literal["train", "distill"]
    method: str
    environment: Environment
    config: dict[str, Any]
    teacher: TeacherCheck | None
    student: StudentSummary
    final: Final
    timing: Timing
    target_warnings: list[TargetWarning] = Field(default_factory=list)
    method_report: dict[str, Any] = Field(default_factory=dict)
    epochs: list[EpochRecord]
    """Every epoch's record, as metrics.jsonl has it (losses, top-1 per split, diagnostics, seconds)."""

    model_config = ConfigDict(populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        if not (isinstance(data, dict) and data.get("schema") == "kdcli.report/1"):
            return data
        if not isinstance(data.get("student"), dict):
            return data  # a damaged report: validation says what is missing
        data = {**data, "schema": REPORT_SCHEMA, "method_report": data.get("strategy", {})}
        data.pop("strategy", None)
        student = dict(data["student"])
        sps = student.pop("sps", None)
        if isinstance(sps, dict):
            method = (data.get("config") or {}).get("method") if isinstance(data.get("config"), dict) else None
            method = method if isinstance(method, dict) else {}
            options = {k: v for k, v in method.items() if k in ("shuffle", "share_norm", "tied")}
            student["transform"] = {
                "name": "sps",
                "options": options,
                "parameters_plain": sps.get("parameters_without_sps"),
                "macs_plain": sps.get("macs_without_sps"),
                "parameters_unshared": sps.get("parameters_untied_same_depth"),
            }
        data["student"] = student
        return data

    def to_json(self) -> str:
        """The report as JSON; a number that is not finite (an epoch's NLL, say) as the string "inf", "-inf" or
        "nan" (kdcli.reporting.finite), never as null, which would read as "not measured"."""
        return dumps(self.model_dump(mode="python", by_alias=True))[0] + "\n"


@dataclass(frozen=True)
class RunResult:
    """What ``kdcli.distill``, ``train`` and ``resume`` return: the run's folder, its report and its student file."""

    run_dir: Path
    report: Report
    student_path: Path


def read_report(run_dir: Path) -> Report:
    """A finished run's report.json, through the typed model (schema 1 migrated). A missing, unreadable or damaged
    one (truncated, not JSON, another shape) is a usage error that names the file."""
    path = run_dir / "report.json"
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):  # a name too long, a folder not searchable
            raise UsageError(f"cannot read {path} ({exc.strerror or exc}); leave {run_dir} out") from None
    if not path.is_file():
        if os.path.lexists(path):  # a folder, a pipe, a device, a link to nothing or into a loop
            raise UsageError(
                f"{path} is not a regular file (a folder, device, pipe or broken link), so it is not a "
                f"kdcli report; leave {run_dir} out, or run it again"
            )
        if os.path.isfile(run_dir):
            raise UsageError(f"{run_dir} is a file, not a run folder; give the folders kdcli train or distill wrote")
        raise UsageError(f"{run_dir} has no report.json (not a finished kdcli run)")
    way_out = f"leave {run_dir} out, or run it again"
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path} ({exc.strerror or exc}); {way_out}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a kdcli report (not text: damaged?); {way_out}") from None
    try:
        return Report.model_validate_json(text)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise UsageError(
            f"{path} is not a kdcli report ({where + ': ' if where else ''}{error['msg']}); {way_out}"
        ) from None
