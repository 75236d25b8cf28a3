"""Prompt format and tokenizer of the generative VLM (shared by training data and `chat`).

One conversation renders as (per user/assistant turn pair, after one leading BOS):

    <s><|user|>\\n{user text}\\n<|assistant|>\\n{answer}</s>

where each `<image>` in the user text is expanded to num_image_tokens `<image>` tokens.

Training labels are -100 everywhere except the assistant's answer tokens and its closing EOS,
so the LM learns to answer and to stop, never to imitate the prompt. A generation prompt is the
same text up to and including `<|assistant|>\\n`, so what the model sees at inference is exactly
a prefix of what it saw in training.

Each piece (role header, text between images, answer) is tokenized on its own and the ids are
concatenated; `render_conversation` and `render_prompt` use the same segmentation, so a prompt
is always a token-exact prefix of the rendered conversation.

The default tokenizer is a byte-level BPE trained on the dataset's reports and questions
(`train_tokenizer`): byte-level so that any text (units, punctuation, digits) round-trips
through decode exactly, with no unknown tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from sonofm.errors import DataError, UserError

IMAGE_TOKEN = "<image>"
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"
PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, IMAGE_TOKEN, USER_TOKEN, ASSISTANT_TOKEN]
IGNORE_INDEX = -100

# Report-generation question used when `chat(..., question=None)`; E's conversation builder uses
# it as one of its report templates so the default prompt is one the model was trained on.
DEFAULT_QUESTION = "Write the ultrasound report for this study."

_USER_ROLES = {"human", "user"}
_ASSISTANT_ROLES = {"gpt", "assistant"}
_IMAGE_RE = re.compile(re.escape(IMAGE_TOKEN))


def _token_id(tokenizer: Any, token: str) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (
        tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id and token != UNK_TOKEN
    ):
        raise UserError(
            f"tokenizer has no special token {token!r}; build it with "
            "sonofm.models.vlm_prompt.train_tokenizer or add_vlm_special_tokens"
        )
    return int(tid)


def image_token_id(tokenizer: Any) -> int:
    return _token_id(tokenizer, IMAGE_TOKEN)


def _encode(tokenizer: Any, text: str) -> list[int]:
    if not text:
        return []
    return list(tokenizer.encode(text, add_special_tokens=False))


def _encode_with_images(tokenizer: Any, text: str, num_image_tokens: int) -> tuple[list[int], int]:
    """Token ids of `text` with each `<image>` replaced by `num_image_tokens` image-token ids."""
    img = image_token_id(tokenizer)
    pieces = _IMAGE_RE.split(text)
    ids: list[int] = []
    for i, piece in enumerate(pieces):
        if i > 0:
            ids.extend([img] * num_image_tokens)
        ids.extend(_encode(tokenizer, piece))
    return ids, len(pieces) - 1


def _user_block(tokenizer: Any, text: str, num_image_tokens: int) -> tuple[list[int], int]:
    body, n_img = _encode_with_images(tokenizer, text, num_image_tokens)
    ids = [_token_id(tokenizer, USER_TOKEN)] + _encode(tokenizer, "\n") + body
    ids += _encode(tokenizer, "\n") + [_token_id(tokenizer, ASSISTANT_TOKEN)] + _encode(tokenizer, "\n")
    return ids, n_img


def render_conversation(
    turns: Sequence[dict[str, str]], tokenizer: Any, num_image_tokens: int
) -> tuple[list[int], list[int]]:
    """ShareGPT turns -> (input_ids, labels), both lists of ints of equal length.

    `turns` alternate user ("human"/"user") and assistant ("gpt"/"assistant"), starting with the
    user; `<image>` placeholders in user turns become `num_image_tokens` image tokens each (the
    model checks that their count matches the images it is given).
    """
    if num_image_tokens < 1:
        raise UserError(f"num_image_tokens must be >= 1, got {num_image_tokens}")
    if not turns:
        raise DataError("conversation has no turns")
    if len(turns) % 2:
        raise DataError(f"conversation has {len(turns)} turns; expected user/assistant pairs")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("tokenizer has no eos_token")
    bos = tokenizer.bos_token_id
    input_ids: list[int] = [bos] if bos is not None else []
    labels: list[int] = [IGNORE_INDEX] * len(input_ids)
    for i in range(0, len(turns), 2):
        user, answer = turns[i], turns[i + 1]
        for j, roles, want in ((i, _USER_ROLES, "human"), (i + 1, _ASSISTANT_ROLES, "gpt")):
            role = turns[j].get("from", turns[j].get("role"))
            if role not in roles:
                raise DataError(f"conversation turn {j}: 'from' is {role!r}, expected {want!r}")
            if not isinstance(turns[j].get("value", turns[j].get("content")), str):
                raise DataError(f"conversation turn {j}: 'value' must be a string")
        prompt, _ = _user_block(tokenizer, user.get("value", user.get("content")), num_image_tokens)
        answer_text = answer.get("value", answer.get("content"))
        if IMAGE_TOKEN in answer_text:
            raise DataError(f"assistant turn {i + 1} contains {IMAGE_TOKEN!r}; images belong in user turns")
        target = _encode(tokenizer, answer_text) + [eos]
        input_ids += prompt + target
        labels += [IGNORE_INDEX] * len(prompt) + target
    return input_ids, labels


def render_prompt(
    question: str | None,
    n_images: int,
    tokenizer: Any,
    num_image_tokens: int,
    history: Sequence[dict[str, str]] | None = None,
) -> list[int]:
    """Generation prompt ending with `<|assistant|>\\n` (a token-exact prefix of a training sample).

    `question=None` asks for the report (`DEFAULT_QUESTION`). When the question has no `<image>`
    placeholder, `n_images` placeholders are put in front of it, one per line (the layout of the
    training conversations); otherwise its placeholders must number `n_images`. `history` is a
    list of earlier user/assistant turns (multi-turn chat).
    """
    text = DEFAULT_QUESTION if question is None else question
    n_in_history = sum(t.get("value", "").count(IMAGE_TOKEN) for t in history or [])
    if IMAGE_TOKEN not in text and n_in_history == 0:
        text = f"{IMAGE_TOKEN}\n" * n_images + text
    ids: list[int] = []
    if history:
        ids, _ = render_conversation(history, tokenizer, num_image_tokens)
    elif tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id]
    block, n_img = _user_block(tokenizer, text, num_image_tokens)
    if n_img + n_in_history != n_images:
        raise UserError(
            f"prompt has {n_img + n_in_history} {IMAGE_TOKEN} placeholders but {n_images} images were given"
        )
    return ids + block


def add_vlm_special_tokens(tokenizer: Any) -> int:
    """Add the VLM's special tokens to an existing (e.g. a pretrained LM's) tokenizer; returns # new.

    Used with `lm_pretrained`: the LM's own bos/eos/pad are kept when it has them.
    """
    spec: dict[str, Any] = {"extra_special_tokens": [IMAGE_TOKEN, USER_TOKEN, ASSISTANT_TOKEN]}
    if tokenizer.eos_token is None:
        spec["eos_token"] = EOS_TOKEN
    if tokenizer.pad_token is None:
        spec["pad_token"] = PAD_TOKEN if tokenizer.eos_token is None else tokenizer.eos_token
    if tokenizer.bos_token is None:
        spec["bos_token"] = BOS_TOKEN
    return int(tokenizer.add_special_tokens(spec, replace_extra_special_tokens=False))


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000):
    """Byte-level BPE trained on `texts`, wrapped as a transformers `PreTrainedTokenizerFast`.

    pad/bos/eos/unk, `<image>`, `<|user|>` and `<|assistant|>` are special tokens (never split,
    dropped by `decode(..., skip_special_tokens=True)`).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    min_size = 256 + len(SPECIAL_TOKENS)
    if vocab_size < min_size:
        raise UserError(f"vocab_size must be >= {min_size} (256 bytes + special tokens), got {vocab_size}")
    tok = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((t for t in texts if t), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        extra_special_tokens=[IMAGE_TOKEN, USER_TOKEN, ASSISTANT_TOKEN],
        model_max_length=1 << 20,
    )
