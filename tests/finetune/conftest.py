"""A tiny word-level tokenizer with ChatGLM3, Llama 2 and ChatML special tokens, built in memory.

Words and single whitespace characters are tokens of their own, so token strings read like the text and
"\\n" after a role token is one visible token.
"""

from __future__ import annotations

import re

import pytest
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

TEXT = (
    "be brief hello hi there how are you fine thanks track the weather sunny system user assistant tool "
    "[INST] [/INST] <<SYS>> <</SYS>> what is vpn server answer one two three four five six seven eight "
    "nine ten \n"
)
WORDS = sorted(set(re.findall(r"\s|[^\s]+", TEXT)))
SPECIALS = [
    "[gMASK]",
    "sop",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|im_start|>",
    "<|im_end|>",
]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# ChatGLM3's format written as a chat template: no end-of-turn token, the next role token ends a reply.
GLM_STYLE = (
    "[gMASK]sop{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_tokenizer(chat_template: str | None = None) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["[UNK]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s|[^\s]+"), behavior="isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>", eos_token="</s>")
    fast.add_special_tokens({"additional_special_tokens": SPECIALS})
    if chat_template:
        fast.chat_template = chat_template
    return fast


@pytest.fixture
def tok() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture
def chatml_tok() -> PreTrainedTokenizerFast:
    return make_tokenizer(CHATML)


@pytest.fixture
def glm_style_tok() -> PreTrainedTokenizerFast:
    return make_tokenizer(GLM_STYLE)


@pytest.fixture
def make_tok():
    """The factory itself, for tests that need a custom chat template."""
    return make_tokenizer


@pytest.fixture
def conv2() -> list[dict]:
    """Two turns with a system prompt."""
    return [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "how are you"},
        {"role": "assistant", "content": "fine thanks"},
    ]
