"""``alignkit sft`` and ``alignkit pretrain``."""

from alignkit.config import PretrainConfig, SFTConfig
from alignkit.configs import RecipeSpec

COMMANDS = [
    RecipeSpec(
        "sft",
        SFTConfig,
        "alignkit.recipes.sft:run_sft",
        "Supervised fine-tuning on demonstrations (full, LoRA, frozen layers; sequential stages).",
    ),
    RecipeSpec(
        "pretrain",
        PretrainConfig,
        "alignkit.recipes.pretrain:run_pretrain",
        "Causal-LM training on plain text: a new model from an architecture config, or continued.",
    ),
]
