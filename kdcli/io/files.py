"""Writing files so that nothing is ever half-written: the bytes go to a temporary file in the same folder, are
flushed to disk, and the file is renamed over the target; a killed run leaves the old file or the new one. A run
directory is held by one run at a time (``RunDirectory``)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from kdcli.config import MAX_CONFIG_BYTES, load_yaml
from kdcli.errors import UsageError, option


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Run ``write(tmp)`` for a temporary file next to ``path``, fsync it, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        tmp.chmod(0o666 & ~umask())  # mkstemp makes the file private; give it the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def umask() -> int:
    """The process's file mode creation mask (read by setting it and putting it back): what to clear from 0o666 or
    0o777 to give a file or folder made private by ``tempfile`` the permissions an ordinary one would get."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def same_file(path: Path, other: Path) -> bool:
    """Whether the two paths name one file: the same path, a symbolic link to it, or a hard link (same inode)."""
    try:
        return os.path.samefile(path, other)
    except OSError:  # either is missing (or unreadable): not one existing file
        return False


def check_output_file(
    out: Path, inputs: Iterable[Path], ours: Callable[[Path], bool], force: bool = False, name: str = "out"
) -> None:
    """Refuse, before any work, to write ``out`` over a file kdcli did not write: never over one of the command's
    ``inputs`` (by path, symbolic or hard link), and without ``force`` never over anything that is not a regular
    file (a device, a pipe, a link) nor a regular file that ``ours`` does not recognise as kdcli's output. ``name``
    is the option that gave ``out`` (kdcli.errors.option)."""
    given = option(name, out)
    for source in inputs:
        if same_file(out, source):
            alias = "" if os.path.abspath(out) == os.path.abspath(source) else f" (the same file as {source})"
            raise UsageError(
                f"{given} is an input of this command{alias}; writing would replace it: choose another path"
            )
    if force or not os.path.lexists(out):
        return
    mode = os.lstat(out).st_mode
    if stat.S_ISLNK(mode) or not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise UsageError(
            f"{given} is {kind}; kdcli would replace it with a file: choose another path, or "
            f"pass {option('force')} to replace it"
        )
    if not ours(out):
        raise UsageError(
            f"{given} already exists and was not written by kdcli; choose another path, or pass "
            f"{option('force')} to replace it"
        )


def probe_path(path: Path, what: str) -> None:
    """Refuse, with one line, a path the operating system cannot even look up (a name too long, a loop of symbolic
    links, a component that cannot be searched); a missing path, or one below a regular file, is left to the caller,
    whose message says what it needed there."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return
        raise UsageError(f"{what} {path} cannot be used ({exc.strerror or exc}); give another path") from None


def check_run_path(path: Path, name: str = "output.dir") -> None:
    """Refuse, before any work, a run directory's path that cannot be a folder: one the system cannot look up, a
    symbolic link to nothing (``mkdir`` would say "File exists", which misleads), or a file. ``name`` is the option
    that gave the path (kdcli.errors.option): ``output.dir`` for a new run, ``run_dir`` for one to resume."""
    given = option(name, path)
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise UsageError(f"{given} cannot be used ({exc.strerror or exc}); give another path") from None
    if path.is_symlink() and not path.exists():
        raise UsageError(
            f"{given} is a symbolic link to nothing (its target is missing); remove the link, or "
            f"choose another {option(name)}"
        )
    if path.exists() and not path.is_dir():
        raise UsageError(f"{given} is a file, not a folder; choose another {option(name)}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RunDirectory:
    """A run directory held by one run: made if missing (with a one-line error when it cannot be), and locked with
    an advisory lock that the operating system drops when the process ends, however it ends — a second run started
    on the same folder is refused instead of mixing its files with the first's."""

    LOCK_NAME = ".kdcli.lock"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: Any = None

    def __enter__(self) -> RunDirectory:
        check_run_path(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path / self.LOCK_NAME, "a+")  # held open for the whole run
        except OSError as exc:
            raise UsageError(
                f"cannot write the run directory {self.path} ({exc.strerror or exc}); pass "
                f"{option('output.dir', 'DIR')} in a writable place"
            ) from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise UsageError(
                f"{self.path} is in use by another kdcli run; wait for it, or choose another {option('output.dir')}"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()


RUN_FILES = (
    "config.yaml",
    "checkpoint.pt",
    "metrics.jsonl",
    "student.safetensors",
    "student-best.safetensors",
    "report.json",
    "report.md",
    "accuracy.png",
    "loss.png",
    "diagnostics.png",
    RunDirectory.LOCK_NAME,
)
"""Every file a run writes in its folder (its temporary files are ``.NAME.*.tmp`` beside them)."""

RUN_SECTIONS = frozenset({"teacher", "student", "method", "data", "optim", "schedule", "train", "output"})


def _is_run_file(entry: Path) -> bool:
    """A file a run left: one of ``RUN_FILES`` (a ``config.yaml`` only when it is a whole run configuration, as
    kdcli writes it, not a user's partial one), or an interrupted write's temporary file."""
    name = entry.name
    if name.startswith(".") and name.endswith(".tmp") and any(name.startswith(f".{n}.") for n in RUN_FILES):
        return True
    if name not in RUN_FILES or not entry.is_file() or entry.is_symlink():
        return False
    if name != "config.yaml":
        return True
    try:
        with entry.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        data = load_yaml(raw.decode()) if len(raw) <= MAX_CONFIG_BYTES else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return False
    return isinstance(data, dict) and set(data) == RUN_SECTIONS


def check_run_directory(path: Path, inputs: Iterable[Path], force: bool = False) -> None:
    """Refuse, before any work, a new run's folder that holds files kdcli did not write there (a project folder, a
    home folder) unless ``force``; and, forced or not, a folder where a run's file would replace one of its
    ``inputs`` (the teacher's file in the folder it was trained in, say). A missing or empty folder, or one left by
    a run stopped before its first checkpoint, is fine."""
    for name in RUN_FILES:
        check_output_file(path / name, inputs, lambda _: True, force=True)
    if force or not path.is_dir():
        return
    try:
        entries = sorted(path.iterdir())
        foreign = [entry.name for entry in entries if not _is_run_file(entry)]
        if entries and not _is_run_file(path / "config.yaml"):  # without kdcli's config.yaml none of it is kdcli's
            foreign = [entry.name for entry in entries]
    except OSError as exc:
        reason = exc.strerror or exc
        raise UsageError(
            f"cannot read the run directory {path} ({reason}); choose another {option('output.dir')}"
        ) from None
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UsageError(
            f"{option('output.dir', path)} already holds files that are not a kdcli run's ({shown}); a "
            "run writes config.yaml, report.md and student.safetensors there: choose a new or empty "
            f"{option('output.dir')}, or pass {option('force')} to write beside them"
        )
