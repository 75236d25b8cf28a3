"""EchoVLM's dual-path mixture-of-experts block, inserted beside each decoder layer's dense MLP.

For the post-attention-normalised hidden state x of one token (docs/methods.md section 5):

    p      = softmax(W_g x)                                   router over N routed experts
    MoE(x) = sum_{e in top-k(p)} p_e * FFN_e(x) + sigmoid(w_s . x) * FFN_shared(x)
    c      = softmax(W_c x)                                   (d -> 2) per-token path mix
    mlp(x) = c0 * MoE(x) + c1 * FFN_dense(x)

and the decoder layer adds its residual, h = h + mlp(x). The top-k weights are NOT renormalised
(the paper's choice: an unsure router shrinks the MoE path). All FFNs are SwiGLU,
W2(silu(W1 x) * W3 x). Routed experts use Mixtral's w1/w2/w3 names, so a LoRA whose targets are
the LM's `gate_proj`/`up_proj`/`down_proj` touches the dense MLP only, never the experts.

Dispatch gathers the tokens routed to each expert (one loop over the N experts, none over
tokens), runs that expert once on the gathered batch and scatter-adds the weighted result.

`insert_moe(lm, cfg)` wraps every decoder layer's `mlp` of any transformers decoder-only LM
(Qwen2, Llama, Mistral, ... and GPT-2-style blocks: anything whose layers have an `mlp`), and the
feed-forward path of BERT-style layers (a pretrained BERT/MiniLM run as a causal decoder, see
`BertFFN`).

Load-balancing loss (`load_balancing_loss`, Switch Transformer / Mixtral style):

    L_aux = N * sum_e f_e * P_e,  f_e = (# top-k assignments to e) / (T * k),  P_e = mean_t p_e(t)

f counts every top-k slot, normalised by T*k so that sum_e f_e = 1: a perfectly balanced router
gives L_aux = 1 whatever k is (Mixtral's HF code normalises by T only, i.e. k times this value).
Only P carries gradient (f comes from an argmax). Per forward, the model's aux loss is the mean
over layers of the per-layer loss over valid (non-padding) tokens.

Routing statistics: every block counts, per region label, how many top-k assignments each expert
received (valid tokens only) until `reset_routing_stats`. The caller tells the blocks which
tokens are valid and which region each sample belongs to through `set_routing_context`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

from sonofm.errors import UserError

log = logging.getLogger(__name__)

UNKNOWN_REGION = "unknown"


class MoEConfig(BaseModel):
    """Dual-path MoE settings (EchoVLM: 4 routed experts, top-2, one shared expert, aux loss off)."""

    model_config = ConfigDict(extra="forbid")

    num_experts: int = 4
    top_k: int = 2
    shared_expert: bool = True
    ffn_dim: int | None = None  # hidden width of each expert FFN; None = the LM's intermediate_size
    aux_loss: bool = False  # add the load-balancing loss to the training loss
    aux_weight: float = 0.01
    # "random": normal(0, initializer_range); "copy_dense": every expert starts as a copy of the
    # layer's dense SwiGLU MLP (sparse upcycling; needs ffn_dim equal to the dense width).
    expert_init: Literal["random", "copy_dense"] = "random"

    @model_validator(mode="after")
    def _check(self) -> MoEConfig:
        if self.num_experts < 1:
            raise ValueError(f"moe.num_experts must be >= 1, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"moe.top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")
        if self.ffn_dim is not None and self.ffn_dim < 1:
            raise ValueError(f"moe.ffn_dim must be >= 1, got {self.ffn_dim}")
        if self.aux_weight < 0:
            raise ValueError(f"moe.aux_weight must be >= 0, got {self.aux_weight}")
        return self


class SwiGLU(nn.Module):
    """W2(silu(W1 x) * W3 x), bias-free (the LLaMA/Qwen MLP)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def _in_backward() -> bool:
    """True while autograd recomputes a checkpointed forward (its routing is not counted twice)."""
    task = getattr(torch._C, "_current_graph_task_id", None)
    return task is not None and task() != -1


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """Softmax inputs in at least float32 (bf16/fp16 router logits lose the ranking of close experts)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def load_balancing_loss(router_probs: torch.Tensor, topk_idx: torch.Tensor, num_experts: int) -> torch.Tensor:
    """N * sum_e f_e * P_e for router probabilities (T, N) and top-k expert indices (T, k).

    f_e = fraction of the T*k top-k assignments that went to expert e (sums to 1);
    P_e = mean router probability of e over the T tokens. Balanced routing gives 1.0.
    """
    if router_probs.ndim != 2 or topk_idx.ndim != 2 or router_probs.shape[0] != topk_idx.shape[0]:
        raise ValueError(
            f"router_probs must be (T, N) and topk_idx (T, k); got {tuple(router_probs.shape)}, "
            f"{tuple(topk_idx.shape)}"
        )
    if router_probs.shape[0] == 0:
        return router_probs.sum() * 0.0
    counts = torch.bincount(topk_idx.reshape(-1), minlength=num_experts).to(router_probs.dtype)
    f = counts / topk_idx.numel()
    p_mean = router_probs.mean(dim=0)
    return num_experts * torch.sum(f * p_mean)


class DualPathMoE(nn.Module):
    """Replaces one decoder layer's `mlp`: c0 * MoE(x) + c1 * dense(x) (see module docstring)."""

    def __init__(
        self, dense: nn.Module, dim: int, cfg: MoEConfig, *, ffn_dim: int, init_std: float = 0.02
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_experts = cfg.num_experts
        self.top_k = cfg.top_k
        self.dense = dense
        self.router = nn.Linear(dim, cfg.num_experts, bias=False)  # W_g
        self.experts = nn.ModuleList(SwiGLU(dim, ffn_dim) for _ in range(cfg.num_experts))
        self.shared = SwiGLU(dim, ffn_dim) if cfg.shared_expert else None
        self.shared_gate = nn.Linear(dim, 1, bias=False) if cfg.shared_expert else None  # w_s
        self.mix = nn.Linear(dim, 2, bias=False)  # W_c
        self._init(init_std)
        # Ablation / test hook: a fixed (c0, c1) instead of softmax(W_c x); (0, 1) = dense only.
        self.fixed_mix: tuple[float, float] | None = None
        # Set by the caller around a forward (see `routing_context`).
        self.token_mask: torch.Tensor | None = None  # (B, L) bool, True = real token
        self.regions: Sequence[str] | None = None  # one label per sample
        self._ctx: tuple[torch.Tensor | None, Sequence[str] | None] = (None, None)
        self.collect_stats = True
        self.counts: dict[str, torch.Tensor] = {}
        self.last_router_probs: torch.Tensor | None = None  # (T_valid, N)
        self.last_topk: torch.Tensor | None = None  # (T_valid, k)
        self.last_aux_loss: torch.Tensor | None = None

    def _init(self, std: float) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear) and not any(m is d for d in self.dense.modules()):
                nn.init.normal_(m.weight, std=std)
        # Zero W_c: both paths start with weight 1/2 for every token.
        nn.init.zeros_(self.mix.weight)
        if self.cfg.expert_init == "copy_dense":
            self._copy_dense_into_experts()

    def _copy_dense_into_experts(self) -> None:
        names = ("gate_proj", "up_proj", "down_proj")
        if not all(isinstance(getattr(self.dense, n, None), nn.Linear) for n in names):
            raise UserError(
                "moe.expert_init='copy_dense' needs a SwiGLU dense MLP with gate_proj/up_proj/down_proj "
                f"(got {type(self.dense).__name__}); use expert_init='random'"
            )
        targets = list(self.experts) + ([self.shared] if self.shared is not None else [])
        with torch.no_grad():
            for ex in targets:
                for src, dst in zip(names, ("w1", "w3", "w2"), strict=True):
                    w = getattr(self.dense, src).weight
                    if getattr(ex, dst).weight.shape != w.shape:
                        raise UserError(
                            f"moe.expert_init='copy_dense' needs moe.ffn_dim equal to the dense width "
                            f"({self.dense.down_proj.in_features})"
                        )
                    getattr(ex, dst).weight.copy_(w)

    # ----- parameters -----
    def moe_parameters(self) -> Iterator[nn.Parameter]:
        """Everything this block adds (router, experts, shared expert + gate, mix), not the dense MLP."""
        for name, p in self.named_parameters():
            if not name.startswith("dense."):
                yield p

    def active_parameters(self) -> int:
        """Parameters one token uses in the MoE part: router + k experts + shared expert/gate + mix."""
        per_expert = sum(p.numel() for p in self.experts[0].parameters())
        n = self.router.weight.numel() + self.mix.weight.numel() + self.top_k * per_expert
        if self.shared is not None:
            n += sum(p.numel() for p in self.shared.parameters()) + self.shared_gate.weight.numel()
        return n

    # ----- forward -----
    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(T, d) -> router probs (T, N) (>= float32), top-k weights (T, k), top-k indices (T, k)."""
        probs = torch.softmax(_upcast(self.router(x)), dim=-1)
        weights, idx = probs.topk(self.top_k, dim=-1)
        return probs, weights, idx

    def moe(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """MoE(x) for flat tokens x (T, d); also returns router probs and top-k indices."""
        probs, weights, idx = self.route(x)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.nonzero(idx == e, as_tuple=True)
            # An expert with no tokens still runs on an empty batch: its weights then get zero
            # (not missing) gradients, which DDP needs without find_unused_parameters.
            y = expert(x[tok]) * weights[tok, slot].unsqueeze(-1).to(x.dtype)
            out.index_add_(0, tok, y.to(out.dtype))
        if self.shared is not None:
            out = out + torch.sigmoid(self.shared_gate(x)) * self.shared(x)
        return out, probs, idx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if self.fixed_mix is not None:
            c0, c1 = self.fixed_mix
            dense = self.dense(x)
            if c0 == 0:
                return dense if c1 == 1 else c1 * dense
            moe, probs, idx = self.moe(x.reshape(-1, shape[-1]))
            self._record(probs, idx, shape)
            return c0 * moe.view(shape) + c1 * dense
        flat = x.reshape(-1, shape[-1])
        moe, probs, idx = self.moe(flat)
        self._record(probs, idx, shape)
        c = torch.softmax(_upcast(self.mix(flat)), dim=-1).to(x.dtype)
        out = c[:, :1] * moe + c[:, 1:] * self.dense(flat)
        return out.view(shape)

    # ----- aux loss + statistics -----
    def _context(self) -> tuple[torch.Tensor | None, Sequence[str] | None]:
        """The caller's (token_mask, regions); a checkpoint recomputation in backward reuses the
        context of the forward it recomputes (the caller's `routing_context` has exited by then)."""
        if _in_backward():
            return self._ctx
        self._ctx = (self.token_mask, self.regions)
        return self._ctx

    @staticmethod
    def _valid(mask: torch.Tensor | None, shape: torch.Size, device: torch.device) -> torch.Tensor | None:
        """Flat bool mask of real tokens, when the caller's mask matches this batch (else all valid)."""
        if mask is None or len(shape) != 3 or tuple(mask.shape) != tuple(shape[:2]):
            return None
        return mask.to(device=device, dtype=torch.bool).reshape(-1)

    def _record(self, probs: torch.Tensor, idx: torch.Tensor, shape: torch.Size) -> None:
        mask, regions = self._context()
        valid = self._valid(mask, shape, probs.device)
        if valid is not None:
            probs_v, idx_v = probs[valid], idx[valid]
        else:
            probs_v, idx_v = probs, idx
        # Always computed (cheap) so it can be logged; the model adds it to the loss only when enabled.
        aux = load_balancing_loss(probs_v, idx_v, self.num_experts)
        if _in_backward():  # checkpoint recomputation: same ops, but keep the forward's results/stats
            return
        self.last_router_probs, self.last_topk, self.last_aux_loss = probs_v, idx_v, aux
        if self.collect_stats:
            self._count(idx.detach(), valid, shape, regions)

    @torch.no_grad()
    def _count(
        self, idx: torch.Tensor, valid: torch.Tensor | None, shape: torch.Size, regions: Sequence[str] | None
    ) -> None:
        b = shape[0] if len(shape) == 3 else 1
        per_tok = idx.shape[0] // max(b, 1)
        regions = list(regions) if regions is not None and len(regions) == b else None
        sample = torch.arange(idx.shape[0], device=idx.device) // max(per_tok, 1)
        labels = regions if regions is not None else [UNKNOWN_REGION]
        for r in sorted(set(labels)):
            sel = torch.ones(idx.shape[0], dtype=torch.bool, device=idx.device)
            if regions is not None:
                ids = torch.tensor([i for i, x in enumerate(regions) if x == r], device=idx.device)
                sel = torch.isin(sample, ids)
            if valid is not None:
                sel = sel & valid
            c = torch.bincount(idx[sel].reshape(-1), minlength=self.num_experts).cpu()
            self.counts[r] = self.counts.get(r, torch.zeros(self.num_experts, dtype=torch.long)) + c

    def reset_stats(self) -> None:
        self.counts = {}


# ---------------------------------------------------------------- insertion into an LM


class BertFFN(nn.Module):
    """A BERT layer's feed-forward path (intermediate dense + GELU, output dense) as one module.

    Why: BERT splits its FFN over `layer.intermediate` and `layer.output` (whose LayerNorm also
    adds the residual), so there is no single `mlp` to wrap. `_bertify` moves both dense layers
    in here (pretrained weights kept) and leaves `output.dense` an identity, so the layer computes
    LayerNorm(h + dropout(MoE-mix(h))) exactly as the dual-path formula asks.
    """

    def __init__(self, intermediate: nn.Module, out_dense: nn.Module) -> None:
        super().__init__()
        self.intermediate = intermediate
        self.out = out_dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.intermediate(x))


def _is_bert_layer(m: nn.Module) -> bool:
    out = getattr(m, "output", None)
    return (
        isinstance(getattr(m, "intermediate", None), nn.Module)
        and isinstance(getattr(out, "dense", None), nn.Module)
        and hasattr(m, "attention")
    )


def _decoder_layers(lm: nn.Module) -> list[nn.Module]:
    """The decoder layers of `lm`, in order: modules with an `mlp` child, or BERT-style layers."""
    return [
        m
        for m in lm.modules()
        if (isinstance(getattr(m, "mlp", None), nn.Module) or _is_bert_layer(m))
        and not isinstance(m, DualPathMoE)
    ]


def _ffn_of(layer: nn.Module) -> nn.Module:
    """The layer's dense FFN; a BERT layer's is first gathered into a `BertFFN` (see there)."""
    if hasattr(layer, "mlp"):
        return layer.mlp
    if isinstance(layer.intermediate, DualPathMoE):
        return layer.intermediate
    ffn = BertFFN(layer.intermediate, layer.output.dense)
    layer.output.dense = nn.Identity()
    return ffn


def _set_ffn(layer: nn.Module, block: nn.Module) -> None:
    if hasattr(layer, "mlp"):
        layer.mlp = block
    else:
        layer.intermediate = block


def insert_moe(lm: nn.Module, cfg: MoEConfig) -> list[DualPathMoE]:
    """Wrap every decoder layer's `mlp` of a transformers causal LM in a `DualPathMoE` (in place).

    Returns the inserted blocks in layer order. New weights get the LM's dtype/device and
    `initializer_range`; the dense MLPs keep their weights (their parameter names gain `.dense`).
    """
    layers = _decoder_layers(lm)
    config = getattr(lm, "config", None)
    if not layers or config is None:
        raise UserError(
            f"{type(lm).__name__} has no decoder layers with an `mlp` module; the dual-path MoE needs a "
            "transformers decoder-only LM such as Qwen2 or Llama"
        )
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    dim = int(config.hidden_size)
    dense_width = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * dim
    ffn_dim = int(cfg.ffn_dim or dense_width)
    std = float(getattr(config, "initializer_range", 0.02))
    blocks = []
    for layer in layers:
        dense = _ffn_of(layer)
        ref = next(dense.parameters())
        block = DualPathMoE(dense, dim, cfg, ffn_dim=ffn_dim, init_std=std)
        for name, p in block.named_parameters():  # new weights follow the LM's dtype/device
            if not name.startswith("dense."):
                p.data = p.data.to(device=ref.device, dtype=ref.dtype)
        _set_ffn(layer, block)
        blocks.append(block)
    log.info(
        "inserted %d dual-path MoE blocks (%d experts, top-%d, ffn %d)",
        len(blocks),
        cfg.num_experts,
        cfg.top_k,
        ffn_dim,
    )
    return blocks


def moe_blocks(model: nn.Module) -> list[DualPathMoE]:
    return [m for m in model.modules() if isinstance(m, DualPathMoE)]


@contextlib.contextmanager
def routing_context(
    blocks: Sequence[DualPathMoE],
    token_mask: torch.Tensor | None = None,
    regions: Sequence[str] | None = None,
) -> Iterator[None]:
    """Within the block, MoE statistics and aux loss use `token_mask` (B, L) and per-sample `regions`."""
    for b in blocks:
        b.token_mask, b.regions = token_mask, regions
    try:
        yield
    finally:
        for b in blocks:
            b.token_mask, b.regions = None, None


def aux_loss(blocks: Sequence[DualPathMoE]) -> torch.Tensor | None:
    """Mean over layers of the last forward's load-balancing losses (None without MoE blocks)."""
    losses = [b.last_aux_loss for b in blocks if b.last_aux_loss is not None]
    return torch.stack(losses).mean() if losses else None


def routing_stats(blocks: Sequence[DualPathMoE]) -> dict[str, Any]:
    """Expert load since the last reset, per layer and region, as counts and fractions.

    {"num_experts": N, "top_k": k,
     "layers": [{region: {"counts": [..N], "fraction": [..N]}}, ...],
     "total": {region: {"counts", "fraction"}}}   (fractions of top-k assignments, sum to 1)
    """

    def entry(c: torch.Tensor) -> dict[str, list]:
        s = int(c.sum())
        return {"counts": [int(v) for v in c], "fraction": [float(v) / s if s else 0.0 for v in c]}

    if not blocks:
        return {"num_experts": 0, "top_k": 0, "layers": [], "total": {}}
    n = blocks[0].num_experts
    total: dict[str, torch.Tensor] = {}
    layers = []
    for b in blocks:
        layers.append({r: entry(c) for r, c in sorted(b.counts.items())})
        for r, c in b.counts.items():
            total[r] = total.get(r, torch.zeros(n, dtype=torch.long)) + c
    return {
        "num_experts": n,
        "top_k": blocks[0].top_k,
        "layers": layers,
        "total": {r: entry(c) for r, c in sorted(total.items())},
    }


def reset_routing_stats(blocks: Sequence[DualPathMoE]) -> None:
    for b in blocks:
        b.reset_stats()
