"""Torch dataset and collate function over ShareGPT conversations, for training the VLM.

Each record is rendered by `sonofm.models.vlm_prompt.render_conversation` (the prompt format
`SonoVLM.chat` uses at inference): ``input_ids`` with every ``<image>`` expanded to
``num_image_tokens`` image tokens, and ``labels`` equal to the ids on the assistant's answer
tokens (and their closing EOS) and -100 everywhere else.

Batches (`collate_conversations`):

- ``input_ids`` / ``labels`` / ``attention_mask``: (B, T) padded to the longest sample. Training
  pads on the RIGHT (``padding_side="right"``, the default; pad ids get label -100 and mask 0);
  ``"left"`` is what generation needs (prompts end at the same column). `SonoVLM.forward` derives
  positions from the mask, so both paddings give the same loss.
- ``pixel_values``: (N_img, C, S, S) float in [0, 1], every image of the batch stacked in order
  of appearance (sample 0's images first, in placeholder order), the order `SonoVLM.forward`
  scatters them into the image-token positions.
- ``n_images`` (B,) images per sample; ``regions`` / ``ids`` / ``tasks``: lists of str.
- with a findings vocabulary: ``findings_targets`` (N_img, K) and ``findings_known`` (N_img, G),
  one row per image in ``pixel_values`` order (`FindingsVocab.targets`).

Images are read as 8-bit grayscale and resized bilinearly with PIL to ``image_size``, exactly as
`SonoVLM.prepare_images` does at inference.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sonofm.data.transforms import load_model_input
from sonofm.errors import DataError, UserError
from sonofm.models.vlm_context import ContextConfig, dropped, prompt_hint
from sonofm.models.vlm_findings import FindingsVocab
from sonofm.models.vlm_prompt import image_token_id, render_conversation, with_hint

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


def load_image(path: Path, image_size: int) -> torch.Tensor:
    """(1, S, S) float [0, 1] from an image file, by the shared pipeline (`sonofm.data.transforms`)."""
    try:
        return load_model_input(path, image_size)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read image ({err})") from err


class ConversationDataset(Dataset):
    """Map-style dataset of rendered conversations (see the module docstring).

    ``root``: folder the records' image paths are relative to. ``max_length``: longer samples are
    cut at the end (a sample whose image tokens would be cut raises DataError). Items whose image
    cannot be read come back as None; `collate_conversations` drops them and counts them.

    ``findings``: the VLM's findings vocabulary (`sonofm.models.vlm_findings`). A one-image record
    with ``meta["labels"]`` then gets its ground-truth findings prompt line in the first user turn
    (`with_hint`, the layout generation uses with predicted findings) and per-image targets for
    the findings head; other records get neither (their head targets are masked out).

    ``context``: the study-context prompt (`sonofm.models.vlm_context`): a one-image record with
    labels then also carries its measurements / sex line, unless its id falls in the config's
    dropout fraction (those train the image-only prompt the same model serves without context).
    """

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        root: str | Path,
        tokenizer: Any,
        *,
        num_image_tokens: int,
        image_size: int,
        max_length: int = 512,
        findings: FindingsVocab | None = None,
        context: ContextConfig | None = None,
    ) -> None:
        if not records:
            raise DataError(f"{root}: no conversations to train on")
        self.findings = findings
        self.context = context
        prompted = findings is not None or context is not None
        self.records = [self._with_prompt_lines(r) for r in records] if prompted else list(records)
        self.root = Path(root)
        self.tokenizer = tokenizer
        self.num_image_tokens = int(num_image_tokens)
        self.image_size = int(image_size)
        self.max_length = int(max_length)
        img_id = image_token_id(tokenizer)
        self.encoded: list[tuple[list[int], list[int]]] = []
        cut = 0
        for rec in self.records:
            where = f"conversation {rec.get('id')!r}"
            try:
                ids, labels = render_conversation(rec["conversations"], tokenizer, self.num_image_tokens)
            except (DataError, KeyError) as err:
                raise DataError(f"{where}: {err}") from err
            n_ph = ids.count(img_id)
            if n_ph != len(rec["image"]) * self.num_image_tokens:
                n_img = len(rec["image"])
                raise DataError(
                    f"{where}: {n_ph // self.num_image_tokens} <image> placeholders but {n_img} images"
                )
            if len(ids) > self.max_length:
                if img_id in ids[self.max_length :]:
                    raise DataError(
                        f"{where}: max_length {self.max_length} would cut image tokens; raise max_length"
                    )
                ids, labels = ids[: self.max_length], labels[: self.max_length]
                cut += 1
            self.encoded.append((ids, labels))
        if cut:
            log.warning(
                "%d of %d conversations were cut to max_length %d", cut, len(self.records), max_length
            )

    def _with_prompt_lines(self, rec: dict[str, Any]) -> dict[str, Any]:
        """The record with its findings / context lines (one image and labels), else unchanged."""
        labels = (rec.get("meta") or {}).get("labels")
        if labels is None or len(rec.get("image") or ()) != 1:
            return rec
        context = None
        if self.context is not None and not dropped(rec.get("id"), self.context):
            context = {"measurements": labels.get("measurements"), "sex": labels.get("sex")}
        hint = prompt_hint(self.findings, labels, context)
        if hint is None:
            return rec
        turns = [dict(t) for t in rec["conversations"]]
        turns[0]["value"] = with_hint(turns[0]["value"], hint)
        return {**rec, "conversations": turns}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        rec = self.records[i]
        try:
            pixels = [load_image(self.root / p, self.image_size) for p in rec["image"]]
        except DataError as err:
            log.warning("skipping %s: %s", rec.get("id"), err)
            return None
        ids, labels = self.encoded[i]
        meta = rec.get("meta") or {}
        item_findings = None
        if self.findings is not None:
            lab = meta.get("labels") if len(pixels) == 1 else None
            y, known = self.findings.targets(lab)
            item_findings = (y.expand(len(pixels), -1), known.expand(len(pixels), -1))
        return {
            "findings": item_findings,
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "pixel_values": torch.stack(pixels)
            if pixels
            else torch.zeros(0, 1, self.image_size, self.image_size),
            "id": str(rec.get("id")),
            "region": str(meta.get("region") or "unknown"),
            "task": str(meta.get("task") or "unknown"),
        }


def collate_conversations(
    batch: Sequence[dict[str, Any] | None], pad_id: int, padding_side: str = "right"
) -> dict[str, Any]:
    """Pad and stack items of `ConversationDataset` (see the module docstring)."""
    if padding_side not in ("left", "right"):
        raise UserError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    items = [b for b in batch if b is not None]
    n_skipped = len(batch) - len(items)
    if not items:
        return {"n_skipped": n_skipped}
    n = max(len(b["input_ids"]) for b in items)
    ids = torch.full((len(items), n), pad_id, dtype=torch.long)
    labels = torch.full((len(items), n), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), n), dtype=torch.long)
    for i, b in enumerate(items):
        k = len(b["input_ids"])
        sl = slice(0, k) if padding_side == "right" else slice(n - k, n)
        ids[i, sl] = b["input_ids"]
        labels[i, sl] = b["labels"]
        mask[i, sl] = 1
    pix = [b["pixel_values"] for b in items if len(b["pixel_values"])]
    found = [b.get("findings") for b in items if len(b["pixel_values"])]
    findings = {}
    if found and all(f is not None for f in found):
        findings = {
            "findings_targets": torch.cat([f[0] for f in found]),
            "findings_known": torch.cat([f[1] for f in found]),
        }
    return {
        "input_ids": ids,  # first: the trainer counts batch rows from the first tensor
        "attention_mask": mask,
        "labels": labels,
        "pixel_values": torch.cat(pix) if pix else None,
        "n_images": torch.tensor([len(b["pixel_values"]) for b in items], dtype=torch.long),
        "regions": [b["region"] for b in items],
        "tasks": [b["task"] for b in items],
        "ids": [b["id"] for b in items],
        "n_skipped": n_skipped,
        **findings,
    }


class Collator:
    """Picklable collate function (DataLoader workers) bound to a pad id and padding side."""

    def __init__(self, pad_id: int, padding_side: str = "right") -> None:
        self.pad_id = int(pad_id)
        self.padding_side = padding_side

    def __call__(self, batch: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
        return collate_conversations(batch, self.pad_id, self.padding_side)


class LengthGroupedBatches(Dataset):
    """Items are whole batches of conversations of similar token length (HF's group_by_length).

    Why: a report is about five times longer than a VQA answer, so a random batch pads every row
    to its report and spends most of its compute on padding (measured on a 1000-image demo set,
    4494 conversations, batch 16: 929k padded tokens in random batches vs 259k grouped, 257k
    real). Groups are fixed once (sorted by length, random tie-break with `seed`); the trainer
    shuffles their order every epoch. Use with `GroupCollator` and a
    trainer batch size of 1 (one group per step).
    """

    def __init__(self, base: ConversationDataset, batch_size: int, seed: int = 0) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        lengths = np.array([len(ids) for ids, _ in base.encoded])
        rng = np.random.default_rng(seed)
        order = np.lexsort((rng.random(len(lengths)), lengths))
        self.base = base
        self.groups = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> list[dict[str, Any] | None]:
        return [self.base[j] for j in self.groups[i]]


class GroupCollator:
    """Collate a batch of `LengthGroupedBatches` items (lists) as one flat batch."""

    def __init__(self, collator: Collator) -> None:
        self.collator = collator

    def __call__(self, batch: Sequence[list[dict[str, Any] | None]]) -> dict[str, Any]:
        return self.collator([item for group in batch for item in group])
