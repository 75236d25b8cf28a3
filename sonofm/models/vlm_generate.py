"""Text generation for SonoVLM (a mixin): `generate` and the chat/answer helpers around it.

Generation goes through Hugging Face `generate` with token ids; a forward hook on the LM's input
embedding puts the image features in (see `sonofm.models.vlm` for why not `inputs_embeds`).
Images are prepared as the training pipeline sees them; answers come back as text, optionally with
their mean token log-probability and low-confidence flag.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sonofm.data.transforms import model_input
from sonofm.errors import UserError
from sonofm.models import vlm_answers, vlm_context, vlm_prompt
from sonofm.models.moe import DualPathMoE, routing_context
from sonofm.models.vlm_confidence import GeneratedText, assess
from sonofm.reports.grounding import agreeing_report


@dataclass(frozen=True)
class HeadReading:
    """One study's findings head output: its probabilities (K,) and the labels they decide."""

    probs: torch.Tensor
    labels: dict[str, Any]


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


class AnswerRepetitionPenalty:
    """CTRL's repetition penalty on the tokens generated so far, not on the prompt.

    transformers' own ``repetition_penalty`` also penalises every prompt token: the question's
    words ("Answer yes or no", the options of a multiple-choice question, "ultrasound report")
    would be pushed down in the answer. Logits of tokens already in the answer are divided by
    ``penalty`` when positive and multiplied by it when negative.
    """

    def __init__(self, penalty: float, prompt_length: int) -> None:
        if penalty < 1.0:
            raise UserError(f"repetition_penalty must be >= 1, got {penalty}")
        self.penalty, self.prompt_length = float(penalty), int(prompt_length)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        answer = input_ids[:, self.prompt_length :]  # (B, t) tokens generated so far
        if answer.shape[1] == 0 or self.penalty == 1.0:
            return scores
        picked = torch.gather(scores, 1, answer)
        picked = torch.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return scores.scatter(1, answer, picked)


@contextlib.contextmanager
def _collect(blocks: Sequence[DualPathMoE], regions: Sequence[str] | None) -> Iterator[None]:
    """Routing statistics during generation only when the caller labels the samples."""
    was = [b.collect_stats for b in blocks]
    for b in blocks:
        b.collect_stats = regions is not None
    try:
        yield
    finally:
        for b, w in zip(blocks, was, strict=True):
            b.collect_stats = w


class VLMGeneration:
    """`generate`, `chat`, `chat_batch`, `answer_batch` and their helpers; mixed into `SonoVLM`.

    Uses the model's `lm`, `tokenizer`, `config`, `moe_blocks`, `image_token_id`, `device`,
    `encode_images` and `_check_image_tokens`.
    """

    # ----- generation -----
    @contextlib.contextmanager
    def _image_hook(self, feats: list[torch.Tensor], rows_per_sample: int) -> Iterator[None]:
        """Replace image-token embeddings by `feats[row // rows_per_sample]` on every LM call."""
        img_id = self.image_token_id

        def hook(_module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            ids = args[0]
            mask = ids == img_id
            if not bool(mask.any()):
                return output
            rows = mask.any(dim=1).nonzero().flatten().tolist()
            parts = [feats[r // rows_per_sample] for r in rows]
            n_tok = int(mask.sum())
            src = torch.cat(parts).to(output.dtype) if parts else output.new_zeros(0, output.shape[-1])
            if src.shape[0] != n_tok:
                raise UserError(f"image tokens ({n_tok}) and image features ({src.shape[0]}) disagree")
            return output.masked_scatter(mask.unsqueeze(-1).expand_as(output), src)

        handle = self.lm.get_input_embeddings().register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def room_after(self, prompt_len: int) -> int:
        """How many tokens fit after a prompt of `prompt_len` in the LM's position table.

        Why: an echo prompt with findings and study-context lines is ~200 tokens; a 320-token
        report limit would run past a 512-position BERT decoder's table (an index error mid-batch).
        """
        positions = getattr(self.lm.config.get_text_config(), "max_position_embeddings", None)
        if positions is None:
            return 1 << 30
        room = int(positions) - int(prompt_len)
        if room < 1:
            raise UserError(
                f"the prompt holds {prompt_len} tokens, the language model {positions} positions: "
                "no room to answer (shorten the question or the study context)"
            )
        return room

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor | None,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        max_new_tokens: int = 128,
        num_beams: int = 1,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int | None = None,
        use_cache: bool = True,
        repetition_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        seed: int | None = None,
        regions: Sequence[str] | None = None,
        return_logprobs: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """New tokens only, (B, <= max_new_tokens), padded with pad_token_id after EOS.

        Decoding cannot loop: no n-gram of `no_repeat_ngram_size` tokens (default: the model's
        `config.no_repeat_ngram`, 0 = off) is generated twice, tokens the answer already holds are
        penalised by `repetition_penalty` (default `config.repetition_penalty`; the prompt is not,
        see `AnswerRepetitionPenalty`), and `max_new_tokens` bounds the length. With
        `return_logprobs`, also the log-probability of every new token under the model's own
        distribution (raw logits, before the penalties) (B, T), 0 at padding (the low-confidence
        flag reads its mean).

        Prompts must be LEFT-padded (`pad_prompts` does this); `pixel_values` hold every sample's
        images in order. `seed` makes sampling reproducible. With `regions` (one per sample)
        the MoE routing of the prompt and generated tokens is added to `routing_stats()`
        (exact with the KV cache; without it every step re-routes the whole sequence).
        """
        from transformers import GenerationConfig, LogitsProcessorList  # lazy: transformers takes ~1-2 s

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape[0] > 1 and bool((attention_mask[:, -1] == 0).any()):
            raise UserError("prompts must be left-padded for generation (use SonoVLM.pad_prompts)")
        n_images = 0 if pixel_values is None else int(pixel_values.shape[0])
        self._check_image_tokens(input_ids, n_images)
        per_sample: list[torch.Tensor] = []
        if n_images:
            flat = self.encode_images(pixel_values).reshape(-1, self.lm.config.get_text_config().hidden_size)
            counts = (input_ids == self.image_token_id).sum(dim=1).tolist()
            per_sample = list(torch.split(flat, counts))
        tok = self.tokenizer
        if no_repeat_ngram_size is None:
            no_repeat_ngram_size = self.config.no_repeat_ngram
        if no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = int(no_repeat_ngram_size)
        if repetition_penalty is None:
            repetition_penalty = self.config.repetition_penalty
        processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        if repetition_penalty != 1.0:
            processors.append(AnswerRepetitionPenalty(repetition_penalty, input_ids.shape[1]))
        if return_logprobs:
            kwargs.update(output_scores=True, output_logits=True, return_dict_in_generate=True)
        gen_cfg = GenerationConfig(
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=top_p if do_sample else None,
            top_k=top_k if do_sample else None,
            use_cache=use_cache,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
            suppress_tokens=[self.image_token_id, *(kwargs.pop("suppress_tokens", None) or [])],
            **kwargs,
        )
        if seed is not None:
            torch.manual_seed(seed)
        prompt_len = input_ids.shape[1]
        gen_cfg.max_new_tokens = min(max_new_tokens, self.room_after(prompt_len))
        stats_ctx = contextlib.nullcontext()
        if regions is not None:
            if len(regions) != input_ids.shape[0]:
                raise UserError(f"{len(regions)} regions given for {input_ids.shape[0]} prompts")
            rows = [r for r in regions for _ in range(num_beams)]
            stats_ctx = routing_context(
                self.moe_blocks, attention_mask.repeat_interleave(num_beams, 0).bool(), rows
            )
        with (
            _eval_mode(self),
            self._image_hook(per_sample, num_beams),
            stats_ctx,
            _collect(self.moe_blocks, regions),
        ):
            out = self.lm.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=gen_cfg,
                logits_processor=processors,
            )
        if not return_logprobs:
            return out[:, prompt_len:]
        new = out.sequences[:, prompt_len:]
        # log p(token) of the chosen tokens under the model's own distribution: the raw logits,
        # before the repetition penalties, n-gram blocking and sampling warpers changed them
        lp = self.lm.compute_transition_scores(
            out.sequences, out.logits, getattr(out, "beam_indices", None), normalize_logits=True
        )
        lp = lp[:, : new.shape[1]].float()
        done = torch.zeros(new.shape[0], dtype=torch.bool, device=new.device)
        keep = torch.zeros_like(new, dtype=torch.bool)
        for t in range(new.shape[1]):  # every token up to and including the first EOS
            keep[:, t] = ~done
            done |= new[:, t] == tok.eos_token_id
        lp = torch.where(keep & torch.isfinite(lp), lp, torch.zeros_like(lp))
        return new, lp * keep

    def pad_prompts(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad token-id lists -> (input_ids, attention_mask) on the model's device."""
        if not prompts:
            raise UserError("no prompts given")
        n = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(prompts), n), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), n), dtype=torch.long)
        for i, p in enumerate(prompts):
            if len(p):
                ids[i, n - len(p) :] = torch.tensor(list(p), dtype=torch.long)
                mask[i, n - len(p) :] = 1
        dev = self.device
        return ids.to(dev), mask.to(dev)

    def prepare_images(self, images: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
        """Images as the training pipeline sees them -> (N, C, S, S) float [0, 1].

        numpy arrays: uint8 (H, W) / (H, W, 3) (colour -> luminance) or float in [0, 1]; resized
        bilinearly to image_size by `sonofm.data.transforms`, as in training. Tensors: (C, H, W) or
        (H, W) float in [0, 1], resized with bilinear interpolation.
        """
        size = self.config.image.image_size
        out = []
        for i, im in enumerate(images):
            if isinstance(im, torch.Tensor):
                t = im.detach().float().cpu()
                t = t.unsqueeze(0) if t.ndim == 2 else t
                if t.ndim != 3 or t.shape[0] not in (1, 3):
                    raise UserError(
                        f"image {i}: tensor must be (H, W) or (C, H, W) with C 1|3, got {tuple(im.shape)}"
                    )
                if t.shape[-2:] != (size, size):
                    t = F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False)[0]
                out.append(t[:1] if t.shape[0] == 1 else t.mean(0, keepdim=True))
                continue
            a = np.asarray(im)
            if a.ndim == 3 and a.shape[-1] in (3, 4):
                a = a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            if a.ndim != 2:
                raise UserError(f"image {i}: array must be (H, W) or (H, W, 3), got shape {a.shape}")
            if a.dtype != np.uint8:
                a = np.asarray(a, np.float32)
                a = np.clip(a * 255.0 if a.max() <= 1.0 else a, 0, 255).round().astype(np.uint8)
            out.append(model_input(a, size))  # the shared pipeline, steps 3-4
        return torch.stack(out).to(self.device)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Token ids -> text (special tokens dropped; WordPiece output made readable)."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        return vlm_prompt.detokenize(text) if vlm_prompt.is_wordpiece(self.tokenizer) else text

    def answer_batch(
        self,
        batch: Sequence[tuple[Sequence[Any], str | None]],
        hints: Sequence[str | None] | None = None,
        contexts: Sequence[dict[str, Any] | None] | None = None,
        ground: bool = True,
        sources: bool = True,
        agree: bool = True,
        **gen: Any,
    ) -> list[GeneratedText]:
        """Like `chat_batch`, with each text's mean token log-prob and its low-confidence flag.

        `hints`: findings prompt lines to use instead of the head's predictions (one per study;
        e.g. known findings to draft a report from, or the ground truth for a ceiling; given
        hints are used as they are, context included). `contexts`: each study's
        ``{"measurements": {id: value}, "sex": "M"|"F"}`` (or None): a model trained with the
        study-context prompt (`sonofm.models.vlm_context`) reads them in its prompt, and with
        `ground` every report drawn up for a study with a context is grounded in it
        (`sonofm.reports.grounding`: its numbers, sex and echo guideline findings are the
        study's; the model's own text stays in ``draft``). With `sources`, a closed question a
        source covers (the study's measurements, the guideline rules on them, the findings head;
        `sonofm.models.vlm_answers`) is answered by it: ``answered_by`` names it and the language
        model's own answer stays in ``draft``. With `agree`, a report drafted from the findings
        head's line states what the head decided (organ, view, diagnosis, descriptors;
        `sonofm.reports.grounding.agree_with_findings`), so it never contradicts the line shown
        beside it; the model's own text stays in ``draft``.
        """
        limit = int(gen.get("max_new_tokens", 128))
        pixels, ids, mask, hints, readings = self._batch_inputs_and_hints(batch, hints, contexts)
        new, lp = self.generate(pixels, ids, mask, return_logprobs=True, **gen)
        ctxs = list(contexts) if contexts is not None else [None] * len(batch)
        cap = min(limit, self.room_after(ids.shape[1]))  # what generate allowed: reaching it = cut
        out = []
        for (_, question), row, row_lp, hint, ctx, read in zip(
            batch, new, lp, hints, ctxs, readings, strict=True
        ):
            n = int((row_lp != 0).sum()) or 1
            eos = bool((row == self.tokenizer.eos_token_id).any())
            checked = assess(
                self.decode(row),
                mean_logprob=float(row_lp.sum()) / n,
                is_report=question is None,
                truncated=not eos and row.shape[0] >= cap,
                threshold=self.config.low_confidence_logprob,
            )
            checked.findings = hint
            if sources and question is not None:
                self._take_sourced_answer(checked, question, ctx, read.probs if read else None)
            labels = read.labels if read is not None and agree and question is None else None
            ctx = vlm_context.clean_context(ctx) if ground and ctx and question is None else None
            if labels is not None or ctx is not None:
                checked.draft = checked.text
                checked.text = agreeing_report(
                    checked.text,
                    labels,
                    ctx["measurements"] if ctx else None,
                    ctx["sex"] if ctx else None,
                    dimensions=self.config.findings.groups if labels is not None else None,
                )
            if ctx is not None:
                lost = vlm_context.unstated(checked.text, ctx)
                if lost:  # e.g. echo numbers given for a draft about a breast: the draft is suspect
                    checked.reasons.append(f"the draft has no place for the given measurements {lost}")
                    checked.low_confidence = True
            out.append(checked)
        return out

    def _take_sourced_answer(
        self, checked: GeneratedText, question: str, ctx: dict[str, Any] | None, probs: torch.Tensor | None
    ) -> None:
        """Replace the LM's answer by a source's (`vlm_answers.sourced_answer`) where one covers it."""
        head = getattr(self, "findings", None)
        got = vlm_answers.sourced_answer(
            question,
            context=ctx,
            probs=probs,
            vocab=head.vocab if head is not None else None,
            threshold=self.config.findings.threshold if self.config.findings is not None else 0.5,
        )
        if got is None:
            return
        checked.draft, checked.text, checked.answered_by = checked.text, got.text, got.source
        # the flag now judges the answer shown: the LM's log-probability was about its own text
        checked.reasons = []
        if got.probability is not None and got.probability < vlm_answers.UNSURE_BELOW:
            checked.reasons.append(f"the findings head is unsure (p = {got.probability:.2f})")
        checked.low_confidence = bool(checked.reasons)

    def chat_checked(
        self,
        images: Sequence[np.ndarray | torch.Tensor],
        question: str | None = None,
        context: dict[str, Any] | None = None,
        **gen: Any,
    ) -> GeneratedText:
        """`chat` for one study, returning the text with its confidence (what `serve` shows)."""
        return self.answer_batch([(images, question)], contexts=[context], **gen)[0]

    def chat(
        self,
        images: Sequence[np.ndarray | torch.Tensor],
        question: str | None = None,
        history: Sequence[dict[str, str]] | None = None,
        context: dict[str, Any] | None = None,
        **gen: Any,
    ) -> str:
        """Answer `question` about `images` (None = write the report); `gen` goes to `generate`.

        `history`: earlier turns [{"from": "human", "value"}, {"from": "gpt", "value"}, ...] of a
        multi-turn chat; the images' `<image>` placeholders are then in its first user turn.
        `context`: the study's measurements and sex (see `answer_batch`).
        """
        if not history:  # reports grounded, closed answers sourced: what answer_batch gives
            return self.answer_batch([(images, question)], contexts=[context], **gen)[0].text
        pixels = self.prepare_images(images) if len(images) else None
        hint = self.findings_hint(pixels, context)
        if history and hint:  # the hint belongs to the first user turn, where training put it
            history = [dict(t) for t in history]
            if not history[0].get("value", "").count(vlm_prompt.HINT_PREFIX):
                history[0]["value"] = vlm_prompt.with_hint(history[0].get("value", ""), hint)
        prompt = vlm_prompt.render_prompt(
            question, len(images), self.tokenizer, self.config.num_image_tokens, history=history, hint=hint
        )
        ids, mask = self.pad_prompts([prompt])
        new = self.generate(pixels, ids, mask, **gen)
        return self.decode(new[0])

    def findings_hint(self, pixels: torch.Tensor | None, context: dict[str, Any] | None = None) -> str | None:
        """The prompt lines of ONE study's images: findings and/or context (None: neither applies,
        or not exactly one image, as in training, where multi-image studies carry no such lines)."""
        return self._batch_hints([pixels], [context])[0]

    def chat_batch(self, batch: Sequence[tuple[Sequence[Any], str | None]], **gen: Any) -> list[str]:
        """Batched `chat`: [(images, question), ...] -> answers (left-padded, one generate call;
        closed questions a source covers answered by it, as `answer_batch` does)."""
        return [g.text for g in self.answer_batch(batch, **gen)]

    def _batch_inputs_and_hints(
        self,
        batch: Sequence[tuple[Sequence[Any], str | None]],
        given: Sequence[str | None] | None = None,
        contexts: Sequence[dict[str, Any] | None] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, list[str | None], list[HeadReading | None]]:
        """(pixels of every image or None, left-padded prompt ids, attention mask, each study's prompt
        lines, each study's findings head reading (None: hints were given, no head, or not exactly
        one image)) of a batch of (images, question) studies."""
        if given is not None and len(given) != len(batch):
            raise UserError(f"{len(given)} findings hints given for {len(batch)} studies")
        if contexts is not None and len(contexts) != len(batch):
            raise UserError(f"{len(contexts)} study contexts given for {len(batch)} studies")
        pix = [self.prepare_images(images) if len(images) else None for images, _ in batch]
        if given is not None:
            hints, readings = list(given), [None] * len(batch)
        else:
            hints, readings = self._hints_and_readings(pix, contexts)
        prompts = [
            vlm_prompt.render_prompt(
                question, len(images), self.tokenizer, self.config.num_image_tokens, hint=hint
            )
            for (images, question), hint in zip(batch, hints, strict=True)
        ]
        ids, mask = self.pad_prompts(prompts)
        stacked = [p for p in pix if p is not None]
        return (torch.cat(stacked) if stacked else None), ids, mask, hints, readings

    def _batch_hints(
        self, pix: Sequence[torch.Tensor | None], contexts: Sequence[dict[str, Any] | None] | None = None
    ) -> list[str | None]:
        """`findings_hint` of every study, with one head pass over all one-image studies."""
        return self._hints_and_readings(pix, contexts)[0]

    def _hints_and_readings(
        self, pix: Sequence[torch.Tensor | None], contexts: Sequence[dict[str, Any] | None] | None = None
    ) -> tuple[list[str | None], list[HeadReading | None]]:
        """Every study's prompt lines and its findings head reading (None: no head, or not exactly
        one image, as in training), from one head pass over all one-image studies."""
        # the prompt line only for a model trained with it; any model's reports are still grounded
        contexts = (
            list(contexts) if contexts is not None and self.config.context is not None else [None] * len(pix)
        )
        single = [k for k, p in enumerate(pix) if p is not None and len(p) == 1]
        hints: list[str | None] = [None] * len(pix)
        readings: list[HeadReading | None] = [None] * len(pix)
        if not single:
            return hints, readings
        vocab = self.findings.vocab if getattr(self, "findings", None) is not None else None
        labels: list[dict[str, Any] | None] = [None] * len(single)
        if vocab:
            p = self.findings_probabilities(torch.cat([pix[k] for k in single]))
            labels = vocab.decide(p, self.config.findings.threshold)
            for k, row, lab in zip(single, p.float().cpu(), labels, strict=True):
                readings[k] = HeadReading(row, lab)
        for k, lab in zip(single, labels, strict=True):
            ctx = vlm_context.clean_context(contexts[k], f"study {k}") if contexts[k] else None
            hints[k] = vlm_context.prompt_hint(vocab, lab, ctx)
        return hints, readings
