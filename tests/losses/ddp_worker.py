"""Worker for the 2-process gather test (run by ``torch.distributed.run``; see test_distributed.py).

Every rank builds the same tiny dual encoder, takes its slice of one global batch, computes each
loss mode under DDP and saves rank 0's loss (averaged over ranks) and averaged gradients.
"""

from __future__ import annotations

import gc
import sys

import torch
import torch.distributed as dist
from torch import nn

GLOBAL_BATCH = 8
# (loss, gather_with_grad, local_loss, rows on rank 0): 4 = an even split of the 8 rows; 5 = an
# uneven one (a rank lost rows to undecodable images), exact only for the replicated full loss.
MODES = [
    ("clip", True, False, 4),
    ("clip", True, True, 4),
    ("clip", False, False, 4),
    ("siglip", True, False, 4),
    ("siglip", True, True, 4),
    ("siglip", False, False, 4),
    ("clip", True, False, 5),
    ("clip", False, False, 5),
    ("siglip", True, False, 5),
]


class TinyDual(nn.Module):
    """Linear towers + learnable logit scale/bias: enough to check gradients end to end."""

    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.img = nn.Linear(6, 4)
        self.txt = nn.Linear(5, 4)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        # CLIP has no bias; an unused parameter would leave its DDP bucket un-reduced.
        self.logit_bias = nn.Parameter(torch.tensor(-1.0)) if bias else None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "image_features": nn.functional.normalize(self.img(x), dim=-1),
            "text_features": nn.functional.normalize(self.txt(t), dim=-1),
            "logit_scale": self.logit_scale.exp(),
            "logit_bias": self.logit_bias,
        }


def make_problem(name: str) -> tuple[TinyDual, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyDual(bias=name == "siglip").double()
    x = torch.randn(GLOBAL_BATCH, 6, dtype=torch.float64)
    t = torch.randn(GLOBAL_BATCH, 5, dtype=torch.float64)
    return model, x, t


def main(out_path: str) -> None:
    from sonofm.losses import build_contrastive_loss

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results = {}
    for name, with_grad, local, first in MODES:
        model, x, t = make_problem(name)
        ddp = nn.parallel.DistributedDataParallel(model)
        assert world == 2
        sl = slice(0, first) if rank == 0 else slice(first, GLOBAL_BATCH)
        loss_fn = build_contrastive_loss(name, gather_with_grad=with_grad, local_loss=local)
        out = ddp(x[sl], t[sl])
        loss = loss_fn(**out)["contrastive_loss"]
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        mean_loss /= world
        key = f"{name}-{int(with_grad)}-{int(local)}-{first}"
        results[f"{key}/loss"] = mean_loss
        for pname, p in model.named_parameters():
            results[f"{key}/{pname}"] = p.grad.detach().clone()
    if rank == 0:
        torch.save(results, out_path)
    # Free the last DDP wrapper while the group is still registered: a reducer freed after
    # destroy_process_group can hold the gloo group's last reference, and PyTorch frees it with the
    # GIL held while the group's worker thread waits for the GIL (the hang Trainer._release_ddp
    # fixes; this test timed out that way under load)
    del ddp, out, loss
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
