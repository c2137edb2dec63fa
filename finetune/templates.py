"""Turn a conversation into model input ids and labels, one template per chat format.

Labels are -100 everywhere except on the tokens the model must learn to produce: assistant replies and
the token that ends each reply. Templates build ids piece by piece from token strings
(`tokenizer.convert_tokens_to_ids`), so every id can be checked against the documented format.

Templates (the TEMPLATES registry):

- "chatglm3": `[gMASK]sop<|system|>\\n{system}<|user|>\\n{query}<|assistant|>\\n{response}` + eos, as
  ChatGLM3's finetune_hf.py builds it: each role token is followed by encode("{metadata}\\n") and then
  encode(content), the two encoded separately. Labels follow finetune_hf.py's one-token shift: every
  token after an `<|assistant|>` role token up to and including the first token of the next turn (the
  next role token, or eos after the last reply). Deviation: tool results (`<|observation|>`) are not
  labelled (finetune_hf.py labels every non-system/user role; GLM-4's finetune.py excludes observation).
- "llama2": `<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {assistant}</s>` per turn pair
  (the system block only in the first turn); the reply is encoded separately from the `[INST]` part, as
  a SentencePiece tokenizer would split it anyway; labels are the reply tokens and `</s>`.
- "hf": the tokenizer's own chat template. The assistant span of turn i is the text between rendering
  turns [0, i) with the generation prompt and rendering turns [0, i]; tokens of the full rendering that
  start inside that span are labelled, minus whitespace after the end-of-turn token (Qwen's "\\n" after
  `<|im_end|>`, which the model never generates). When a reply ends without a special token (GLM-4's
  template has no end-of-turn token) the next turn's first token is labelled if it is special (the
  model stops on it), and eos is appended after the last reply.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.data import Conversation
from kb.errors import ConfigError, DataError

IGNORE_INDEX = -100

CHATGLM3_PREFIX = ("[gMASK]", "sop")
CHATGLM3_ROLES = {
    "system": "<|system|>",
    "user": "<|user|>",
    "assistant": "<|assistant|>",
    "observation": "<|observation|>",
    # OpenAI/Qwen-style tool results are ChatGLM3 observations.
    "tool": "<|observation|>",
}
B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"


@dataclass
class Rendered:
    """An untruncated example. `prefix_len` leading tokens survive left truncation of the source;
    `target_start` is the first token of the last assistant reply (everything before it is the source)."""

    input_ids: list[int]
    labels: list[int]
    prefix_len: int
    target_start: int


def _spelling(name: str, added: set[str]) -> str | None:
    """How the tokenizer spells ChatGLM3's special token `name`: as is, or GLM-4 style "<sop>", which a
    converter uses when "sop" is also an ordinary SentencePiece piece (kb.generate.chatglm3_tokenizer)."""
    return next((text for text in (name, f"<{name}>") if text in added), None)


def _ids(tokenizer: Any, names: list[str]) -> list[int]:
    """Ids of special tokens by name, looked up among the tokenizer's added special tokens only: an
    ordinary piece spelled "sop" must not stand in for the sop token."""
    added = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    texts = [_spelling(name, added) for name in names]
    for name, text in zip(names, texts, strict=True):
        if text is None:
            raise ConfigError(f"template: the tokenizer has no special token {name!r}")
    return tokenizer.convert_tokens_to_ids(texts)


def _eos(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise ConfigError("template: the tokenizer has no eos token")
    return tokenizer.eos_token_id


def _text(tokenizer: Any, text: str) -> list[int]:
    # Special-token strings inside data (a literal "<|user|>", or "sop" inside a word when "sop" is an
    # added token) must stay text: ChatGLM3's own tokenizer never parses them out of content either.
    return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special)
    return ids


def chatglm3(conv: Conversation, tokenizer: Any) -> Rendered:
    """ChatGLM3's finetune_hf.py format and labels (see the module docstring)."""
    ids = _ids(tokenizer, list(CHATGLM3_PREFIX))
    role_ids = dict(zip(CHATGLM3_ROLES, _ids(tokenizer, list(CHATGLM3_ROLES.values())), strict=True))
    # Per token: belongs to an assistant message, role token included (finetune_hf.py's loss mask).
    trained = [False] * len(ids)
    target_start = 0
    for msg in conv:
        role = msg["role"]
        if role not in role_ids:
            raise DataError(f"chatglm3 template: unknown role {role!r}")
        content = msg["content"]
        if role == "system" and msg.get("tools"):
            # ChatGLM3's build_chat_input appends the tool schemas to the system prompt this way.
            content = content + "\n" + json.dumps(msg["tools"], indent=4, ensure_ascii=False)
        piece = [
            role_ids[role],
            *_text(tokenizer, f"{msg.get('metadata', '')}\n"),
            *_text(tokenizer, content),
        ]
        if role == "assistant":
            target_start = len(ids) + 1
        ids += piece
        trained += [role == "assistant"] * len(piece)
    ids.append(_eos(tokenizer))
    # The mask shifted right by one: a token is labelled when the token before it belongs to an assistant
    # message. That drops the role token itself and adds the token after the reply (next role or eos),
    # so the model learns to stop.
    labels = [IGNORE_INDEX] + [t if m else IGNORE_INDEX for t, m in zip(ids[1:], trained, strict=True)]
    return Rendered(ids, labels, prefix_len=len(CHATGLM3_PREFIX), target_start=target_start)


def llama2(conv: Conversation, tokenizer: Any) -> Rendered:
    """Llama 2 chat format (Meta's reference chat_completion, without its trailing space before </s>)."""
    if tokenizer.bos_token_id is None:
        raise ConfigError("llama2 template: the tokenizer has no bos token")
    bos, eos = tokenizer.bos_token_id, _eos(tokenizer)
    system = conv[0]["content"].strip() if conv and conv[0]["role"] == "system" else ""
    body = conv[1:] if conv and conv[0]["role"] == "system" else conv
    roles = [m["role"] for m in body]
    if len(body) % 2 or roles != ["user", "assistant"] * (len(body) // 2):
        raise DataError(f"llama2 template: needs alternating user/assistant turns, got {roles}")
    ids: list[int] = []
    labels: list[int] = []
    target_start = 0
    for k in range(0, len(body), 2):
        query = body[k]["content"].strip()
        if k == 0 and system:
            query = f"{B_SYS}{system}{E_SYS}{query}"
        source = [bos, *_text(tokenizer, f"{B_INST} {query} {E_INST}")]
        target = [*_text(tokenizer, body[k + 1]["content"].strip()), eos]
        target_start = len(ids) + len(source)
        ids += source + target
        labels += [IGNORE_INDEX] * len(source) + target
    return Rendered(ids, labels, prefix_len=1, target_start=target_start)


def _hf_messages(conv: Conversation) -> tuple[list[dict[str, Any]], list | None]:
    """Messages for apply_chat_template; ChatGLM3-style tools move to its `tools=` argument. Roles pass
    through unchanged: tool results are "tool" for Qwen-style templates, "observation" for ChatGLM's."""
    tools = conv[0].get("tools") if conv and conv[0]["role"] == "system" else None
    msgs = []
    for m in conv:
        if m["role"] == "system" and tools and not m["content"]:
            continue
        msgs.append({k: v for k, v in m.items() if k != "tools"})
    return msgs, tools


def hf(conv: Conversation, tokenizer: Any) -> Rendered:
    """The tokenizer's own chat template; assistant spans found by rendering prefixes (module docstring)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("hf template: the tokenizer has no chat_template")
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("hf template: needs a fast tokenizer (character offsets locate the replies)")
    msgs, tools = _hf_messages(conv)

    def render(upto: int, generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            msgs[:upto], tools=tools, tokenize=False, add_generation_prompt=generation_prompt
        )

    full = render(len(msgs), False)
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        before, through = render(i, True), render(i + 1, False)
        eos = tokenizer.eos_token or ""
        if eos and through.endswith(eos) and not full.startswith(through) and i + 1 < len(msgs):
            # Some templates close only a final assistant turn with eos (ChatGLM3's converted one).
            through = through[: -len(eos)]
        if not (through.startswith(before) and full.startswith(through)):
            # Templates that re-render history (Qwen3 drops earlier <think> blocks) have no stable prefix.
            raise ConfigError(f"hf template: the chat template does not render turn {i + 1} as a prefix")
        spans.append((len(before), len(through)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    special = _special_ids(tokenizer)
    end = len(ids)
    target_start = 0
    for k, (a, b) in enumerate(spans):
        span = [j for j, (s, _) in enumerate(offsets) if a <= s < b]
        while span and ids[span[-1]] not in special and not tokenizer.decode([ids[span[-1]]]).strip():
            span.pop()
        if not span:
            raise DataError(f"hf template: assistant turn {k + 1} renders to no tokens")
        for j in span:
            labels[j] = ids[j]
        target_start, last = span[0], span[-1]
        closed = ids[last] in special
        if k == len(spans) - 1:
            end = last + 1
        elif not closed and last + 1 < len(ids) and ids[last + 1] in special:
            labels[last + 1] = ids[last + 1]
    # Tokens after the last reply (a trailing newline) are never trained on; drop them.
    ids, labels = ids[:end], labels[:end]
    if ids[-1] not in special:
        ids.append(_eos(tokenizer))
        labels.append(ids[-1])
    prefix_len = 0
    while prefix_len < target_start and ids[prefix_len] in special:
        prefix_len += 1
    return Rendered(ids, labels, prefix_len=prefix_len, target_start=target_start)


TEMPLATES: dict[str, Callable[[Conversation, Any], Rendered]] = {
    "chatglm3": chatglm3,
    "llama2": llama2,
    "hf": hf,
}


def encode(
    conv: Conversation, tokenizer: Any, template: str, max_source_len: int, max_target_len: int
) -> dict[str, list[int]]:
    """Encode one conversation as `{"input_ids", "labels"}` with `template` from TEMPLATES.

    Truncation: the source (every token before the last assistant reply, earlier turns included) keeps
    at most `max_source_len` tokens: the template's format prefix (`[gMASK]sop`, `<s>`, a chat
    template's leading special tokens) plus the rightmost tokens, so the question nearest the reply
    survives; the label of the first token after the cut is -100, since its context is gone. The target
    (the last reply and its closing token) keeps its first `max_target_len` tokens. The closing eos is kept
    only when the whole target fits: a reply cut short carries no eos, so the model never learns to stop
    mid-sentence. The result is at most `max_source_len + max_target_len` tokens long.
    """
    if template not in TEMPLATES:
        raise ConfigError(f"template: unknown template {template!r}; known: {', '.join(TEMPLATES)}")
    r = TEMPLATES[template](conv, tokenizer)
    if max_source_len <= r.prefix_len or max_target_len < 1:
        raise ConfigError(
            f"max_source_len={max_source_len}, max_target_len={max_target_len}: the source must exceed "
            f"the {r.prefix_len}-token format prefix and the target hold at least one token"
        )
    src_ids, src_labels = r.input_ids[: r.target_start], r.labels[: r.target_start]
    if len(src_ids) > max_source_len:
        keep = max_source_len - r.prefix_len
        src_ids = src_ids[: r.prefix_len] + src_ids[-keep:]
        src_labels = src_labels[: r.prefix_len] + [IGNORE_INDEX] + src_labels[len(src_labels) - keep + 1 :]
    tgt = slice(r.target_start, r.target_start + max_target_len)
    return {"input_ids": src_ids + r.input_ids[tgt], "labels": src_labels + r.labels[tgt]}


def ensure_pad_token(tokenizer: Any) -> int:
    """Give the tokenizer a pad token (its eos) when it has none; returns the pad id.

    Why eos: it is always in the vocabulary with a trained embedding, so nothing needs resizing, and pad
    positions never matter anyway (attention_mask 0, label -100; collators never infer either from the
    pad id, since pad == eos would mask real eos tokens). Some recipes pad with unk instead (Llama-style
    pad=unk=0); that has been reported to keep fp16 training from converging with some models, which
    this rule avoids. Tokenizers that already have a pad (ChatGLM3: pad 0) are left alone.
    """
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ConfigError("tokenizer: has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer.pad_token_id


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _describe(model: Any) -> tuple[str, str, bool | None, set[str]]:
    """(model_type, name, has a chat template or None when unknown, added token strings) of a model spec."""
    if isinstance(model, str | Path):
        root = Path(model)
        cfg = _load_json(root / "config.json")
        tok_cfg = _load_json(root / "tokenizer_config.json")
        added = {t["content"] for t in _load_json(root / "tokenizer.json").get("added_tokens", [])}
        added |= {t["content"] for t in tok_cfg.get("added_tokens_decoder", {}).values()}
        has: bool | None = None
        if tok_cfg:
            has = bool(tok_cfg.get("chat_template")) or (root / "chat_template.jinja").is_file()
        return cfg.get("model_type", ""), str(model), has, added
    if isinstance(model, dict):
        return model.get("model_type", ""), model.get("_name_or_path", ""), None, set()
    return getattr(model, "model_type", ""), getattr(model, "_name_or_path", "") or "", None, set()


def template_for(model_config_or_name: Any, tokenizer: Any = None) -> str:
    """Pick a template name for a model config (object or dict), a model directory, or a model name.

    chatglm3: ChatGLM models (model_type "chatglm"), and transformers-native GLM ("glm") whose tokenizer
    has ChatGLM3's special tokens (`sop` possibly spelled `<sop>`) but not GLM-4's `<|endoftext|>`.
    llama2: Llama models whose tokenizer has no chat template. Otherwise hf. Pass the tokenizer when
    there is one: it decides the chat-template and special-token questions a config alone cannot.
    """
    model_type, name, has_template, added = _describe(model_config_or_name)
    if tokenizer is not None:
        has_template = bool(getattr(tokenizer, "chat_template", None))
        # Added tokens only: a BPE vocabulary may hold "sop" as an ordinary piece.
        added = {t.content for t in tokenizer.added_tokens_decoder.values()}
    # GLM-4 tokenizers have the same role tokens and "<sop>"; only they have <|endoftext|>.
    glm3_tokens = (
        all(_spelling(t, added) for t in ("[gMASK]", "sop", "<|user|>", "<|assistant|>"))
        and "<|endoftext|>" not in added
    )
    lname = name.lower()
    if model_type == "chatglm" or (not model_type and "chatglm" in lname):
        if (added and not glm3_tokens) or any(s in lname for s in ("chatglm2", "chatglm-6b")):
            raise ConfigError(f"model {name or model_type!r}: only ChatGLM3's chat format is supported")
        return "chatglm3"
    if model_type == "glm" and glm3_tokens:
        return "chatglm3"
    if (model_type == "llama" or (not model_type and "llama" in lname)) and not has_template:
        return "llama2"
    return "hf"


def explain(example: dict[str, list[int]], tokenizer: Any) -> str:
    """A table of position, token, id and label (`-` for -100) for eyeballing an encoded example."""
    ids, labels = example["input_ids"], example["labels"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    width = max([len(repr(t)) for t in tokens] + [5])
    rows = [f"{'pos':>5}  {'token':<{width}}  {'id':>8}  label"]
    for pos, (tok, i, lab) in enumerate(zip(tokens, ids, labels, strict=True)):
        rows.append(f"{pos:>5}  {tok!r:<{width}}  {i:>8}  {'-' if lab == IGNORE_INDEX else lab}")
    n_labelled = sum(lab != IGNORE_INDEX for lab in labels)
    rows.append(f"{len(ids)} tokens, {n_labelled} labelled")
    return "\n".join(rows)
