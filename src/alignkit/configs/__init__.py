"""Recipe registry: one small module per command, holding only its pydantic config.

Each module here defines ``COMMAND = RecipeSpec(...)``. The CLI discovers them, so adding a
recipe never touches ``cli.py``, and ``alignkit --help`` stays fast (these modules import only
pydantic; the runner, with torch and transformers, is imported when the command runs).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class RecipeSpec:
    name: str  # the CLI command and the YAML `recipe:` key
    config: type[BaseModel]
    runner: str  # "module:function" taking the validated config
    summary: str  # one line for --help
    # Short options: ``--model X`` means ``model.path=X`` when flags = {"model": "model.path"}.
    flags: dict[str, str] = field(default_factory=dict, hash=False)

    def run(self, cfg: BaseModel) -> Any:
        module, fn = self.runner.split(":")
        return getattr(importlib.import_module(module), fn)(cfg)


def all_recipes() -> dict[str, RecipeSpec]:
    found: dict[str, RecipeSpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for spec in getattr(mod, "COMMANDS", [getattr(mod, "COMMAND", None)]):
            if spec is not None:
                found[spec.name] = spec
    return found
