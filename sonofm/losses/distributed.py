"""Gather contrastive features across data-parallel ranks.

Contrastive losses need every negative in the global batch, so each rank gathers the features
of all ranks before building its logits. Two gradient modes exist (as in open_clip):

* ``gather_with_grad=True``: ``torch.distributed.nn.functional.all_gather`` is differentiable;
  its backward sums the gradient every rank computed for a slot and returns it to the slot's
  owner. Combined with DDP's gradient *averaging* this yields exactly the full-batch gradient,
  both for the replicated full loss and for ``local_loss`` (each rank's rows only).
* ``gather_with_grad=False``: a plain ``all_gather`` (no autograd) whose own slot is replaced
  by the local tensor so gradients flow into the local features. Every rank computes the same
  full loss, and the gradient reaching the local features is the exact full-batch gradient;
  DDP then averages over ``world_size`` ranks, which would shrink it by ``world_size``. We scale
  the gradient of the local slot by ``world_size`` (value unchanged) so that the averaged result
  is the exact full-batch gradient. Local-loss mode needs the gradients of other ranks' rows and
  therefore requires ``gather_with_grad=True``.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor


def dist_info() -> tuple[int, int]:
    """(rank, world_size) of the default process group, or (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _scale_grad(x: Tensor, factor: float) -> Tensor:
    """Return ``x`` unchanged in value whose gradient is multiplied by ``factor``."""
    return x * factor - x.detach() * (factor - 1.0)


def gather_sizes(n: int, device: torch.device) -> list[int]:
    """Row count of every rank (ranks may hold fewer rows when images failed to decode)."""
    _, world = dist_info()
    if world == 1:
        return [n]
    mine = torch.tensor([n], dtype=torch.long, device=device)
    parts = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(parts, mine)
    return [int(p.item()) for p in parts]


def gather_tensor(x: Tensor, *, gather_with_grad: bool, sizes: list[int] | None = None) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0 (rank order). Identity on one process.

    Ranks may hold different row counts (``sizes``, from :func:`gather_sizes`); rows are padded
    to the largest count for the collective and the padding is cut off again.
    """
    rank, world = dist_info()
    if world == 1:
        return x
    sizes = gather_sizes(x.shape[0], x.device) if sizes is None else sizes
    longest = max(sizes)
    padded = x if x.shape[0] == longest else torch.cat([x, x.new_zeros(longest - x.shape[0], *x.shape[1:])])
    if gather_with_grad:
        # The public differentiable all_gather (backward = reduce-scatter sum) is marked deprecated
        # in favour of private functional collectives; it is still the supported public API.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            parts = list(dist_fn.all_gather(padded))
    else:
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.detach().contiguous())
        parts[rank] = _scale_grad(x, float(world)) if x.requires_grad else x
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)], dim=0)


def gather_pair(
    image_features: Tensor, text_features: Tensor, *, gather_with_grad: bool, local_loss: bool
) -> tuple[Tensor, Tensor, int]:
    """:func:`gather_features` plus the global index of this rank's first row (for labels)."""
    if local_loss and not gather_with_grad:
        raise ValueError(
            "local_loss=True needs gather_with_grad=True: without it the gradients of other ranks' "
            "rows never reach the local features and the update is not the full-batch gradient"
        )
    rank, world = dist_info()
    if world == 1:
        return image_features, text_features, 0
    sizes = gather_sizes(image_features.shape[0], image_features.device)
    all_img = gather_tensor(image_features, gather_with_grad=gather_with_grad, sizes=sizes)
    all_txt = gather_tensor(text_features, gather_with_grad=gather_with_grad, sizes=sizes)
    return all_img, all_txt, sum(sizes[:rank])


def gather_features(
    image_features: Tensor,
    text_features: Tensor,
    *,
    gather_with_grad: bool = True,
    local_loss: bool = False,
) -> tuple[Tensor, Tensor]:
    """Gather image and text features of all ranks: ``(all_images, all_texts)``, each (N, D).

    ``local_loss`` does not change what is gathered (the caller keeps its local rows for the
    row side of the logits) but it requires ``gather_with_grad`` for exact gradients.
    """
    all_img, all_txt, _ = gather_pair(
        image_features, text_features, gather_with_grad=gather_with_grad, local_loss=local_loss
    )
    return all_img, all_txt
