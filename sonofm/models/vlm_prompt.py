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

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers import models as tokenizer_models

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


HINT_PREFIX = "Image findings:"  # the findings prompt line (sonofm.models.vlm_findings) starts so


def with_hint(text: str, hint: str | None) -> str:
    """``text`` with the findings prompt line ``hint`` after its leading ``<image>`` lines.

    The one place the layout is decided: training conversations (ground-truth findings) and
    generation prompts (predicted findings) both go through here, so they match token for token.
    """
    if not hint:
        return text
    k = 0
    line = f"{IMAGE_TOKEN}\n"
    while text.startswith(line, k):
        k += len(line)
    return f"{text[:k]}{hint}\n{text[k:]}"


def render_prompt(
    question: str | None,
    n_images: int,
    tokenizer: Any,
    num_image_tokens: int,
    history: Sequence[dict[str, str]] | None = None,
    hint: str | None = None,
) -> list[int]:
    """Generation prompt ending with `<|assistant|>\\n` (a token-exact prefix of a training sample).

    `question=None` asks for the report (`DEFAULT_QUESTION`). When the question has no `<image>`
    placeholder, `n_images` placeholders are put in front of it, one per line (the layout of the
    training conversations); otherwise its placeholders must number `n_images`. `history` is a
    list of earlier user/assistant turns (multi-turn chat). `hint`: the findings prompt line
    (`with_hint`; only for a first turn, where the training conversations have it).
    """
    text = DEFAULT_QUESTION if question is None else question
    n_in_history = sum(t.get("value", "").count(IMAGE_TOKEN) for t in history or [])
    if IMAGE_TOKEN not in text and n_in_history == 0:
        text = f"{IMAGE_TOKEN}\n" * n_images + text
    if not history:
        text = with_hint(text, hint)
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
    from transformers import PreTrainedTokenizerFast  # lazy: transformers imports torch; prompts need neither

    min_size = 256 + len(SPECIAL_TOKENS)
    if vocab_size < min_size:
        raise UserError(f"vocab_size must be >= {min_size} (256 bytes + special tokens), got {vocab_size}")
    tok = Tokenizer(tokenizer_models.BPE(unk_token=UNK_TOKEN))
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


# ---------------------------------------------------------------- pretrained WordPiece (BERT/MiniLM) LMs

# Characters kept in a pruned WordPiece vocabulary whatever the corpus holds (word-initial and
# `##` continuation forms), so unseen words still tokenize to characters instead of [UNK].
_KEEP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,:;%/()-'+<>=x"


def is_wordpiece(tokenizer: Any) -> bool:
    """True for a BERT-style WordPiece tokenizer (the packaged MiniLM's)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    return json.loads(backend.to_str()).get("model", {}).get("type") == "WordPiece"


def set_bert_roles(tokenizer: Any) -> None:
    """BERT has no bos/eos: use [CLS] / [SEP], whose pretrained embeddings mark sequence ends."""
    if tokenizer.bos_token is None and tokenizer.cls_token is not None:
        tokenizer.bos_token = tokenizer.cls_token
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token


def prune_wordpiece(tokenizer: Any, texts: Iterable[str]) -> Any:
    """A copy of a WordPiece tokenizer whose vocabulary is only what `texts` use (+ specials, chars).

    Why: MiniLM's 30k-row output layer costs more than its decoder layers at demo scale; a report
    corpus uses about a thousand word pieces. Tokenization of `texts` is unchanged (WordPiece takes
    the longest piece in the vocabulary, and every piece the full vocabulary chose is kept), and
    the LM's embedding rows are copied by token string (`remap_embeddings`).
    """
    from transformers import PreTrainedTokenizerFast  # lazy: transformers imports torch; prompts need neither

    if not is_wordpiece(tokenizer):
        raise UserError(f"lm_vocab='corpus' needs a WordPiece tokenizer, got {type(tokenizer).__name__}")
    full = tokenizer.get_vocab()
    used: set[str] = set()
    for t in texts:
        if t:
            used.update(tokenizer.tokenize(t))
    chars = [c for c in _KEEP_CHARS] + [f"##{c}" for c in _KEEP_CHARS]
    specials = [t for t in tokenizer.all_special_tokens if t in full]
    keep = list(dict.fromkeys(specials + [c for c in chars if c in full] + sorted(used)))
    vocab = {t: i for i, t in enumerate(keep)}
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["model"]["vocab"] = vocab
    spec["post_processor"] = None  # prompts are rendered without the tokenizer's [CLS]/[SEP] template
    spec["added_tokens"] = [
        a | {"id": vocab[a["content"]]} for a in spec["added_tokens"] if a["content"] in vocab
    ]
    backend = Tokenizer.from_str(json.dumps(spec))
    roles = {
        k: getattr(tokenizer, k)
        for k in ("unk_token", "pad_token", "cls_token", "sep_token", "mask_token", "bos_token", "eos_token")
        if getattr(tokenizer, k, None) is not None
    }
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=1 << 20, **roles)


def remap_embeddings(lm: Any, old_tokenizer: Any, new_tokenizer: Any) -> int:
    """Resize `lm`'s token embeddings to `new_tokenizer` and copy each row by token string.

    Tokens the old vocabulary lacks (the VLM's special tokens) start at the mean embedding.
    Returns how many rows were copied from the pretrained matrix.
    """
    import torch  # lazy: keeps torch out of prompt rendering (vlm data workers)

    old = lm.get_input_embeddings().weight.detach().clone()
    old_vocab = old_tokenizer.get_vocab()
    tokens = new_tokenizer.convert_ids_to_tokens(list(range(len(new_tokenizer))))
    lm.resize_token_embeddings(len(new_tokenizer), mean_resizing=False)
    new = old.mean(0, keepdim=True).repeat(len(tokens), 1)
    copied = 0
    for i, t in enumerate(tokens):
        j = old_vocab.get(t)
        if j is not None and j < old.shape[0]:
            new[i] = old[j]
            copied += 1
    with torch.no_grad():
        lm.get_input_embeddings().weight.copy_(new)
    return copied


_DETOK_RULES: tuple[tuple[str, str], ...] = (
    (r"\s*([/\-])\s*", r"\1"),  # e / e -> e/e, 4 - chamber -> 4-chamber
    (r"(\d)\s*\.\s+(\d)", r"\1.\2"),  # 1. 42 -> 1.42
    (r"\s+([:%)',;.])", r"\1"),
    (r"\(\s+", "("),
    (r"\s*\bimpression:", "\nimpression:"),
)


def detokenize(text: str) -> str:
    """Readable text from an uncased WordPiece decode: joined punctuation, numbers and sentence case.

    "findings : a 1. 42 cm mass . impression : ..." -> "Findings: a 1.42 cm mass.\\nImpression: ..."
    """
    out = text.strip()
    for pat, rep in _DETOK_RULES:
        out = re.sub(pat, rep, out)
    out = re.sub(r"(^|[.!?]\s+|\n|:\s)([a-z])", lambda m: m.group(1) + m.group(2).upper(), out)
    return out.strip()


def _repeats(ids: Sequence[int], n: int) -> bool:
    seen: set[tuple[int, ...]] = set()
    for i in range(len(ids) - n + 1):
        g = tuple(ids[i : i + n])
        if g in seen:
            return True
        seen.add(g)
    return False


def safe_no_repeat_ngram(tokenizer: Any, answers: Iterable[str], floor: int = 3, cap: int = 16) -> int:
    """The smallest n-gram size that never repeats inside any of `answers` (clipped to [floor, cap]).

    Decoding with `no_repeat_ngram_size` = this value cannot loop, yet can still write every
    training answer (an n-gram that repeats inside a real report stays allowed).
    """
    longest = 0
    for text in answers:
        ids = _encode(tokenizer, text)
        while longest + 1 <= cap and _repeats(ids, longest + 1):
            longest += 1
    return int(min(cap, max(floor, longest + 1)))
