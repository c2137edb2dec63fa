"""Generators: one interface, a dict registry chosen by `generator.name`."""

from kb.generate.base import GENERATORS, Generator, get_generator

__all__ = ["GENERATORS", "Generator", "get_generator"]
