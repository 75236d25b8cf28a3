"""The generative VLM's data, training stages, metrics and eval tasks (docs/methods.md section 5).

- `conversations`: ShareGPT conversations from a dataset directory; EchoVLM JSON read/write.
- `data`: torch dataset + collate over conversations (prompt format of `sonofm.models.vlm_prompt`).
- `train`: `train_vlm` (stage 1: MoE + mix + projector; stage 2: LoRA + MoE) through the shared trainer.
- `metrics`: BLEU/ROUGE/METEOR/CIDEr, clinical-correctness F1, VQA accuracy and token F1.
- `tasks`: eval task kinds `report_generation` and `vqa`.

Submodules import torch/transformers lazily; importing this package is cheap.
"""

from __future__ import annotations

from sonofm.vlm.conversations import conversations_from_dataset, read_sharegpt, write_sharegpt

__all__ = ["conversations_from_dataset", "read_sharegpt", "write_sharegpt"]
