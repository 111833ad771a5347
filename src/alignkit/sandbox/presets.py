"""Sizes of the simulated world: one frozen dataclass per preset.

A preset fixes how many entities the world has, how much pretraining text is written and how
many rows each dataset gets. The numbers are tuned for the base model that has to learn from
them: a tiny Llama (1-5M parameters, context 256) pretrained from scratch on two CPU cores,
which sees roughly 10k tokens a second. ``tiny`` therefore writes a corpus of about one
million tokens in which every fact is stated a hundred times or more (tiny models memorise
facts slowly), and ``micro`` writes just enough of everything for unit tests to build a world
in a couple of seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


class SandboxError(ValueError):
    """A user-facing sandbox problem: unknown preset, foreign or corrupt world folder."""


@dataclass(frozen=True)
class Preset:
    """Every size knob of a sandbox build; see the module docstring for why these values."""

    name: str
    description: str
    n_countries: int
    n_rivers: int
    n_cities: int
    n_people: int
    n_unknown_names: int
    """Names that never belong to a KB entity; half for training prompts, half for eval."""
    n_eval_facts: int
    """Facts held out of every training dataset (their questions make up the eval set)."""
    kb_passages_per_entity: int
    """Corpus passages written about each entity (each states most of its facts)."""
    corpus_chats: int
    """Single-turn chat transcripts in the corpus (web habits, good and bad)."""
    principled_fraction: float
    """Share of corpus transcripts answered under a system turn listing principles."""
    n_sft: int
    n_rankings: int
    n_rl: int
    n_eval_per_category: int
    n_self_align_seeds_per_category: int
    agreement_sample: int
    """Ranking items annotated a second time to measure inter-annotator agreement."""
    vocab_size: int
    """Upper bound on the BPE vocabulary; a closed-vocabulary corpus can run out of merges
    before it (``small`` stops near 2,900), the manifest records the real size."""
    ranking_k: int = 4
    context_length: int = 256

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "micro": Preset(
        name="micro",
        description="for tests: builds in about two seconds; not enough text to pretrain on",
        n_countries=4,
        n_rivers=5,
        n_cities=8,
        n_people=12,
        n_unknown_names=24,
        n_eval_facts=12,
        kb_passages_per_entity=4,
        corpus_chats=600,
        principled_fraction=0.05,
        n_sft=120,
        n_rankings=120,
        n_rl=60,
        n_eval_per_category=6,
        n_self_align_seeds_per_category=1,
        agreement_sample=60,
        vocab_size=600,
    ),
    "tiny": Preset(
        name="tiny",
        description="the default: ~1M corpus tokens, pretrains a 1-5M parameter model in ~5 CPU minutes",
        n_countries=6,
        n_rivers=10,
        n_cities=24,
        n_people=40,
        n_unknown_names=120,
        n_eval_facts=60,
        kb_passages_per_entity=110,
        corpus_chats=22000,
        principled_fraction=0.05,
        n_sft=2500,
        n_rankings=2500,
        n_rl=1200,
        n_eval_per_category=40,
        n_self_align_seeds_per_category=2,
        agreement_sample=600,
        vocab_size=2048,
    ),
    "small": Preset(
        name="small",
        description="more entities and data, for longer runs with a larger base model",
        n_countries=8,
        n_rivers=16,
        n_cities=48,
        n_people=72,
        n_unknown_names=240,
        n_eval_facts=90,
        kb_passages_per_entity=140,
        corpus_chats=60000,
        principled_fraction=0.05,
        n_sft=6000,
        n_rankings=6000,
        n_rl=3000,
        n_eval_per_category=60,
        n_self_align_seeds_per_category=3,
        agreement_sample=1500,
        vocab_size=4096,
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``, or a SandboxError naming the allowed values."""
    try:
        return PRESETS[name]
    except KeyError:
        allowed = ", ".join(sorted(PRESETS))
        raise SandboxError(f"unknown sandbox preset {name!r}; allowed: {allowed}") from None
