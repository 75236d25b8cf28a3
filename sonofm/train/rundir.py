"""The run folder of a training job (pretrain, ssl, finetune, train-vlm): new, continued or refused.

A thin layer over :mod:`sonofm.outdir` for jobs whose folder holds ``config.yaml`` and
``checkpoints/``: the settings fingerprint is the resolved config; re-running the same config
continues from the latest checkpoint; ``--resume`` first checks every checkpoint it may load, so a
corrupt one stops the job before ``config.yaml`` (or anything else) is rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sonofm.config import dump_config
from sonofm.outdir import OutputClaim, open_output, verify_checkpoint_file

LATEST = "latest.pt"


@dataclass
class RunDir:
    claim: OutputClaim
    resume: Any  # the job's resume argument after the folder was looked at ("latest", True, None...)

    def commit(self, config: Any) -> Path:
        """Create/clear the folder, record the job and write config.yaml (main process only)."""
        out = self.claim.commit()
        dump_config(config, out / "config.yaml")
        return out

    def start(self, config: Any, is_main: bool) -> None:
        """Commit on the main process once EVERY process has looked at the folder.

        Why: under torchrun each rank decides new / continue / refuse from the folder as it finds
        it; a rank that looked after the main one had started writing its record saw a non-empty
        folder without one and refused it as "another job's output" (a flaky two-rank test).
        Call after `init_distributed`, on every rank.
        """
        from sonofm.train.distributed import barrier  # lazy: distributed imports torch

        barrier()
        if is_main:
            self.commit(config)


def _same_config(out: Path, settings: dict[str, Any]) -> bool:
    """A run written before job records is the same run when its config.yaml is identical."""
    try:
        return yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8")) == settings
    except (OSError, yaml.YAMLError):
        return False


def open_run(
    out: str | Path,
    *,
    job: str,
    config: Any,
    resume: Any = None,
    overwrite: bool = False,
    continue_value: Any = "latest",
    needs_checkpoint: bool = True,
) -> RunDir:
    """Decide what the job does with `out` (writes nothing); UserError with one line to refuse.

    `resume` is the job's own resume argument (a checkpoint spec, or True); `continue_value` is
    what it becomes when the same config is re-run in the folder: always, or with
    `needs_checkpoint` only when a checkpoint exists (jobs that also keep finished parts without
    checkpoints, such as finetune's finished seeds or train-vlm's finished stages, pass False).
    """
    out = Path(out)
    settings = config.model_dump(mode="json")
    claim = open_output(
        out, job=job, settings=settings, resume=bool(resume), overwrite=overwrite,
        legacy_same=_same_config(out, settings),
    )
    checkpoints = sorted(out.glob("**/checkpoints/" + LATEST)) if claim.continues else []
    if claim.mode == "same" and not resume and (checkpoints or not needs_checkpoint):
        resume = continue_value
    if resume:
        explicit = Path(str(resume))
        if str(resume) not in ("latest", "best", "True") and explicit.is_file():
            checkpoints.append(explicit)
        if str(resume) == "best":
            checkpoints += sorted(out.glob("**/checkpoints/best.pt"))
        for ckpt in checkpoints:
            verify_checkpoint_file(ckpt)
    return RunDir(claim, resume)
