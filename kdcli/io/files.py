"""Writing files so that nothing is ever half-written: the bytes go to a temporary file in the same folder, are
flushed to disk, and the file is renamed over the target; a killed run leaves the old file or the new one. A run
directory is held by one run at a time (``RunDirectory``)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdcli.errors import UsageError


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
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes the file private; give it the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


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
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"--out {self.path} is a file, not a folder; choose another --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path / self.LOCK_NAME, "a+")  # held open for the whole run
        except OSError as exc:
            raise UsageError(f"cannot write the run directory {self.path} ({exc.strerror or exc}); pass --out DIR "
                             "in a writable place") from None  # fmt: skip
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise UsageError(
                f"{self.path} is in use by another kdcli run; wait for it, or choose another --out"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
