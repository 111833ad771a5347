"""Reward and cost functions named by tests as `module:function` (a user's reward plugin)."""

from __future__ import annotations


def count_one(prompts, responses, records):
    """Reward the word 'one': learnable by a tiny random model within a few iterations."""
    return [float(r.count("one")) - 0.02 * len(r) for r in responses]


def cost_long(prompts, responses, records):
    """+1 (unsafe) for long responses, −1 otherwise: a toy cost with a threshold to hold."""
    return [1.0 if len(r) > 12 else -1.0 for r in responses]


def count_e(prompts, responses, records):
    """Dense toy reward: the number of letters 'e'. Random tokens vary in it, so even a random
    tiny model gets a gradient signal from the first iteration."""
    return [float(r.count("e")) for r in responses]
