"""ChatGLM3's SentencePiece tokenizer as a plain transformers fast tokenizer (no remote code).

ChatGLM3's own tokenizer (`tokenization_chatglm.py`, class `SPTokenizer`) wraps a SentencePiece model
and appends nine special tokens right after its pieces, in this order:

    [MASK] [gMASK] [sMASK] sop eop <|system|> <|user|> <|assistant|> <|observation|>

so with the 64789 pieces of the released model they get ids 64789..64797. A chat is built token by
token (`build_single_message`): `[gMASK] sop`, then per message the role token, `encode(metadata +
"\\n")` and `encode(content)`, and finally `<|assistant|>`. Every `encode` is a separate SentencePiece
call, so each one starts with SentencePiece's dummy prefix "▁". The fast tokenizer reproduces that:
SentencePiece's normalizer with the "legacy" prepend scheme puts "▁" before every chunk of text
between special tokens (the chunk "\\n" after a role token), and the chat template writes a space
before the content (THUDM's own template for chatglm3-6b does the same), which becomes the
content's own dummy prefix. Tests check the ids against SentencePiece called the ChatGLM3 way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kb.errors import ModelError

SPECIAL_TOKENS = (
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "sop",
    "eop",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
)
ROLES = ("system", "user", "assistant", "observation")
# What ChatGLM3's chat() passes to generate(): end of text, or the model starting the next turn.
STOP_TOKENS = ("<|user|>", "<|observation|>")

# THUDM's chatglm3-6b template (tokenizer_config.json), plus: unknown roles raise, optional
# `metadata` (tool name) after the role token, no dummy-prefix space for empty content (ChatGLM3's
# encode("") is empty) and eos after a closing assistant turn, as ChatGLM3's fine-tuning data ends.
_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant', 'observation'] -%}"
    "{{- raise_exception('ChatGLM3 roles are system, user, assistant and observation, not ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- if loop.first -%}[gMASK]@SOP@{%- endif -%}"
    "<|{{ message['role'] }}|>{{ message.get('metadata') or '' }}\n"
    "{% if message['content'] %} {{ message['content'] }}{% endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>"
    "{%- elif messages and messages[-1]['role'] == 'assistant' -%}{{ eos_token }}"
    "{%- endif -%}"
)


def chat_template(sop: str = "sop") -> str:
    """The Jinja chat template; `sop` is the text of the sop token (see token_texts)."""
    return _TEMPLATE.replace("@SOP@", sop)


def token_texts(pieces: set[str], where: Path) -> dict[str, str]:
    """The text each special token gets in the fast tokenizer. ChatGLM3 keeps its special tokens
    outside the SentencePiece vocabulary, so "sop" could also be an ordinary piece there with its own
    id; a fast tokenizer has one id per string, so such a token is spelled "<sop>" (GLM-4's spelling)
    instead. The ids stay ChatGLM3's; only the text in a rendered prompt changes."""
    texts = {}
    for t in SPECIAL_TOKENS:
        text = f"<{t}>" if t in pieces and t in ("[MASK]", "[sMASK]", "sop", "eop") else t
        if text in pieces:
            raise _bad(where, f"special token {t!r} is also a SentencePiece piece; cannot give it its own id")
        texts[t] = text
    return texts


def _bad(path: Path, reason: str) -> ModelError:
    return ModelError(f"{path}: {reason}")


def check_tokenizer_code(src: Path) -> None:
    """Refuse GLM-4 and ChatGLM2 folders (same model_type) by their remote tokenizer code, if shipped."""
    code = src / "tokenization_chatglm.py"
    if code.is_file():
        text = code.read_text(encoding="utf-8", errors="replace")
        if "tiktoken" in text:
            raise _bad(src, "tiktoken tokenizer: a GLM-4 checkpoint; use its transformers (-hf) release")
        if "<|observation|>" not in text:
            raise _bad(src, "tokenizer without ChatGLM3's role tokens: ChatGLM2, whose prompt format differs")


def load_sp_proto(path: Path):  # -> sentencepiece_model_pb2.ModelProto
    """The parsed SentencePiece model. GLM-4's tokenizer.model (tiktoken ranks) is not one."""
    from google.protobuf.message import DecodeError
    from transformers.convert_slow_tokenizer import import_protobuf

    if not path.is_file():
        raise _bad(path, "tokenizer.model not found (ChatGLM3 ships its SentencePiece model under that name)")
    proto = import_protobuf().ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except (DecodeError, RuntimeWarning) as e:
        raise _bad(
            path, f"not a SentencePiece model ({e}); GLM-4's tiktoken tokenizer is not ChatGLM3's"
        ) from e
    if not proto.pieces:
        raise _bad(
            path, "not a SentencePiece model (no pieces); GLM-4's tiktoken tokenizer is not ChatGLM3's"
        )
    if proto.trainer_spec.model_type not in (1, 2):  # 1 unigram, 2 BPE: what `tokenizers` can express
        raise _bad(path, f"SentencePiece model type {proto.trainer_spec.model_type} is not unigram or BPE")
    return proto


def special_token_ids(n_pieces: int) -> dict[str, int]:
    """ChatGLM3's ids for its special tokens: appended in order after the SentencePiece pieces."""
    return {tok: n_pieces + i for i, tok in enumerate(SPECIAL_TOKENS)}


def convert_tokenizer(src_dir: Path, out_dir: Path, *, model_max_length: int) -> dict[str, Any]:
    """Write tokenizer.json + tokenizer_config.json (+ chat template) for src_dir/tokenizer.model into
    out_dir. Returns what the model config needs: eos and pad ids, the piece count, the special
    tokens' ids and any special token whose text had to change (token_texts)."""
    from tokenizers import AddedToken, decoders, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter

    sp_path = src_dir / "tokenizer.model"
    proto = load_sp_proto(sp_path)
    n = len(proto.pieces)
    spec = proto.trainer_spec
    if spec.eos_id < 0 or spec.unk_id < 0 or max(spec.eos_id, spec.unk_id) >= n:
        raise _bad(sp_path, f"eos id {spec.eos_id} / unk id {spec.unk_id} outside the {n} pieces")
    texts = token_texts({p.piece for p in proto.pieces}, sp_path)

    # BPE wants {piece: id} (merges are rebuilt from piece scores); unigram wants [(piece, score)].
    if spec.model_type == 2:
        vocab: dict[str, int] | list[tuple[str, float]] = {p.piece: i for i, p in enumerate(proto.pieces)}
    else:
        vocab = [(p.piece, p.score) for p in proto.pieces]
    # legacy=True: a dummy "▁" before every chunk between special tokens, as ChatGLM3's separate
    # SentencePiece calls give. It also follows the model's own normalizer spec and byte fallback.
    tok = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=True)
    if tok is None:
        raise _bad(sp_path, "transformers could not build a fast tokenizer from this SentencePiece model")

    # Appended after the pieces, in ChatGLM3's order: ids n..n+8. `single_word` keeps "sop"/"eop"
    # from being cut out of ordinary words ("people", "isopropyl"); the template writes "[gMASK]sop<|",
    # where "sop" stands between non-word characters and still matches.
    tok.add_special_tokens(
        [
            AddedToken(texts[t], special=True, normalized=False, single_word=texts[t].isalpha())
            for t in SPECIAL_TOKENS
        ]
    )
    ids = special_token_ids(n)
    got = {t: tok.token_to_id(texts[t]) for t in SPECIAL_TOKENS}
    if got != ids:
        raise _bad(sp_path, f"special tokens landed at {got}, expected {ids}")

    # ChatGLM3's build_inputs_with_special_tokens: every encoded text starts with [gMASK] sop.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{texts['[gMASK]']} {texts['sop']} $A",
        pair=f"{texts['[gMASK]']} {texts['sop']} $A $B",
        special_tokens=[(texts["[gMASK]"], ids["[gMASK]"]), (texts["sop"], ids["sop"])],
    )
    # ChatGLM3 decodes each chunk between special tokens separately, so the dummy prefix after a role
    # token is dropped ("<|user|>\n hi", not "<|user|> \n hi"). The fused string only loses its first
    # space; drop the one after each role token too.
    assert tok.decoder is not None
    tok.decoder = decoders.Sequence(
        [tok.decoder] + [decoders.Replace(f"<|{r}|> ", f"<|{r}|>") for r in ROLES]
    )

    eos, unk = proto.pieces[spec.eos_id].piece, proto.pieces[spec.unk_id].piece
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos,
        unk_token=unk,
        pad_token=unk,  # ChatGLM3: pad_id = unk_id (0)
        padding_side="left",  # ChatGLM3's tokenizer pads on the left (batched generation)
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
        chat_template=chat_template(texts["sop"]),
    )
    fast.save_pretrained(str(out_dir))
    renamed = {t: x for t, x in texts.items() if t != x}
    return {"eos": spec.eos_id, "pad": spec.unk_id, "n_pieces": n, "ids": ids, "renamed": renamed}
