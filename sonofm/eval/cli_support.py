"""Rich progress display for `sonofm eval` (driven by the runner's events; CLI-only)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class EvalProgress:
    """Context manager; pass the instance as `run_suite(on_event=...)`."""

    def __init__(self, console: Console, n_tasks: int, n_models: int) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.n_tasks = n_tasks * n_models
        self.embed: dict[tuple[str, str], Any] = {}
        self.tasks_bar: Any = None

    def __enter__(self) -> EvalProgress:
        self.progress.__enter__()
        self.tasks_bar = self.progress.add_task("tasks", total=self.n_tasks)
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "embed_start":
            key = (ev["model"], ev["split"])
            self.embed[key] = self.progress.add_task(f"embed {ev['model']} {ev['split']}", total=ev["total"])
        elif kind == "embed_advance":
            self.progress.advance(self.embed[(ev["model"], ev["split"])], ev["n"])
        elif kind == "embed_end":
            bar = self.embed[(ev["model"], ev["split"])]
            self.progress.update(bar, completed=ev["n"], total=ev["n"])
        elif kind == "task_start":
            self.progress.update(self.tasks_bar, description=f"{ev['model']}: {ev['task']}")
        elif kind == "task_end":
            self.progress.advance(self.tasks_bar)
        elif kind == "compare":
            self.progress.update(self.tasks_bar, description=f"compare {ev['a']} vs {ev['b']}")
