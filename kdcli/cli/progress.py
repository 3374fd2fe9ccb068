"""Progress on stderr with rich: a bar per epoch or task on a terminal, one line per epoch everywhere (CI logs too);
a note that names an option names it as a flag."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kdcli.cli.options import cli_spelling
from kdcli.errors import spell
from kdcli.interfaces import Reporter
from kdcli.records import EpochRecord


class RichReporter(Reporter):
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, soft_wrap=True)  # a note is one line, also in logs
        self.progress: Progress | None = None
        self.task: Any = None
        self.epochs = 0

    def note(self, message: str) -> None:
        self.console.print(spell(message, cli_spelling), highlight=False, markup=False)

    def begin(self, description: str, steps: int) -> None:
        if not self.console.is_terminal:
            return
        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("", total=steps)
        self.progress.reset(self.task, total=steps, description=description)

    def status(self, description: str, done: int, total: int) -> None:
        self.begin(description, total)
        if self.progress is not None:
            self.progress.update(self.task, completed=done)

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.epochs = epochs
        self.begin(f"epoch {epoch + 1}/{epochs}", steps)

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def end_epoch(self, record: EpochRecord) -> None:
        parts = [f"epoch {record.epoch:>3}/{self.epochs}", f"loss {record.train_loss:.4f}"]
        parts.append(f"train {record.train_top1:.2f}%")
        parts += [f"{name} {split.top1:.2f}%" for name in ("val", "test") if (split := record.split(name)) is not None]
        seconds = f"{record.seconds:.1f} s"
        if record.loader_seconds is not None and record.seconds > 0:
            seconds += f" (data {100 * record.loader_seconds / record.seconds:.0f} %)"
        parts.append(seconds)
        self.note("  ".join(parts))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
