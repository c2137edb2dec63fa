"""Synthetic instruction data from the knowledge base: RAFT-style question/answer pairs for fine-tuning.

    from ingest.synth import synthesize
    report = synthesize(cfg, Store.open(cfg.kb_dir), generator, out_dir=Path("data/synth"), use_llm=False)
    print(report.summary())

See pipeline.py for the flow, rules.py / llm.py for the question generators, filters.py for what is
kept, raft.py for the training conversations and the split.
"""

from ingest.synth.base import QA_GENERATORS, Candidate, ChunkView, QAGenerator, get_qa_generator
from ingest.synth.pipeline import SynthReport, sample_pairs, synthesize
from ingest.synth.raft import REFUSAL_REPLY, Shares

__all__ = [
    "QA_GENERATORS",
    "REFUSAL_REPLY",
    "Candidate",
    "ChunkView",
    "QAGenerator",
    "Shares",
    "SynthReport",
    "get_qa_generator",
    "sample_pairs",
    "synthesize",
]
