"""The sandbox: a seeded simulated alignment world with a gold oracle (see docs/sandbox.md).

No pretrained LLM can be downloaded on the machines alignkit targets, so the sandbox writes its
own world: fictional entities and facts, prompts in nine categories that mirror what alignment
is about, a deterministic gold oracle that scores any response, simulated annotators that rank
responses noisily, a pretraining corpus with the habits of web text, a tokenizer, and every
dataset of the pipeline in the formats of DESIGN.md.
"""

from alignkit.sandbox.annotators import Annotator, AnnotatorPool, agreement_report
from alignkit.sandbox.build import build_world, load_world, read_manifest, verify_tokenizer
from alignkit.sandbox.corpus import (
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    render_chat,
)
from alignkit.sandbox.evaluate import evaluate_responses, win_rate
from alignkit.sandbox.oracle import GoldOracle, OracleScore
from alignkit.sandbox.presets import PRESETS, Preset, SandboxError, get_preset
from alignkit.sandbox.responses import (
    RESPONSE_KINDS,
    ideal_response,
    make_response,
    split_principled_answer,
)
from alignkit.sandbox.world import CATEGORIES, HELPFUL_CATEGORIES, PromptFactory, World

__all__ = [
    "CATEGORIES",
    "HELPFUL_CATEGORIES",
    "CHAT_TEMPLATE",
    "PRESETS",
    "RESPONSE_KINDS",
    "SPECIAL_TOKENS",
    "Annotator",
    "AnnotatorPool",
    "GoldOracle",
    "OracleScore",
    "Preset",
    "PromptFactory",
    "SandboxError",
    "World",
    "agreement_report",
    "build_world",
    "evaluate_responses",
    "get_preset",
    "ideal_response",
    "load_world",
    "make_response",
    "read_manifest",
    "render_chat",
    "split_principled_answer",
    "verify_tokenizer",
    "win_rate",
]
