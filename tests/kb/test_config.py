import pytest
import yaml

from kb.config import Config, load_config, parse_overrides
from kb.errors import ConfigError


def test_defaults_validate():
    cfg = load_config(data={})
    assert cfg.retrieval.k == 5 and cfg.chunk.size > cfg.chunk.overlap


def test_unknown_key_names_the_path():
    with pytest.raises(ConfigError, match=r"retrieval\.kk"):
        load_config(data={"retrieval": {"kk": 3}})


def test_bad_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"chunk\.size.*'big'"):
        load_config(overrides=["chunk.size=big"])


def test_overrides_are_typed():
    cfg = load_config(overrides=["retrieval.k=8", "answer.support_check=false", "ingest.suffixes=.md,.txt"])
    assert cfg.retrieval.k == 8 and cfg.answer.support_check is False
    assert cfg.ingest.suffixes == [".md", ".txt"]


def test_invalid_value_rejected():
    with pytest.raises(ConfigError, match="chunk.overlap"):
        load_config(data={"chunk": {"size": 100, "overlap": 100}})


def test_yaml_file_and_dump_round_trip(tmp_path):
    f = tmp_path / "kb.yaml"
    f.write_text("retrieval:\n  k: 7\n")
    cfg = load_config(f)
    out = tmp_path / "resolved.yaml"
    cfg.dump(out)
    again = load_config(data=yaml.safe_load(out.read_text()))
    assert again == cfg and again.retrieval.k == 7


def test_parse_overrides_nested():
    assert parse_overrides(["a.b=1", "c=x"]) == {"a": {"b": 1}, "c": "x"}
    with pytest.raises(ConfigError):
        parse_overrides(["novalue"])
    assert isinstance(Config(), Config)
