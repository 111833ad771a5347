"""``python -m alignkit`` (also what ``accelerate launch -m alignkit`` runs)."""

from alignkit.cli import main

main()
