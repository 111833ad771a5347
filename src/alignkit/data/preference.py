"""Preference data as training groups: format detection, rankings → pairs, pairs → KTO.

Pure transformations of tokenised :class:`~alignkit.data.pairs.Group` objects, shared by the
direct-preference recipe's offline and online paths. A group holds one prompt's token ids and
its responses; these functions decide *which* responses stand together in a forward pass.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

from alignkit.data.pairs import Group
from alignkit.data.readers import DataError, iter_rows
from alignkit.data.records import Ranking


def detect_format(path: str, split: str | None) -> str:
    """The preference record kind of a file, from the fields of its first row."""
    row = next(iter(iter_rows(path, split)), None)
    if row is None:
        raise DataError(f"{path}: no records found")
    d = row.data
    if "responses" in d:
        return "ranking"
    if "chosen" in d or "response_0" in d:
        return "pairwise"
    if "completion" in d and "label" in d:
        return "unpaired"
    raise DataError(
        f"{row.where()}: cannot tell the preference format from fields {sorted(d)}: expected "
        "prompt+chosen+rejected (pairwise), prompt+responses+ranking|scores (ranking) or "
        "prompt+completion+label (unpaired); or set data.format"
    )


def distinct_ranking(r: Ranking) -> Ranking | None:
    """Drop repeated responses (keeping the better-ranked copy); None if fewer than two remain.
    Sampled rankings often repeat a response, and a pair of identical texts teaches nothing."""
    seen: set[str] = set()
    keep = []
    for i in r.ranking:
        key = json.dumps(r.responses[i])
        if key not in seen:
            seen.add(key)
            keep.append(i)
    if len(keep) < 2:
        return None
    return Ranking(r.prompt, [r.responses[i] for i in keep], list(range(len(keep))), r.annotator)


def ranked_pairs(g: Group) -> list[tuple[int, int]]:
    """(winner, loser) response indices of every pair a ranked group implies, best first:
    ``order`` [2, 0, 1] gives (2, 0), (2, 1), (0, 1). A group without an order is a pair
    (chosen, rejected)."""
    o = g.order or list(range(len(g.responses)))
    return [(o[i], o[j]) for i in range(len(o)) for j in range(i + 1, len(o))]


def pair_groups(groups: Sequence[Group], mode: str) -> list[Group]:
    """Ranked K-groups → (winner, loser) groups: all C(K, 2) pairs or best vs worst; in
    ``grouped`` mode the K-groups stay whole (the loss forms their pairs, ``ranked_pairs``)."""
    if mode == "grouped":
        return list(groups)
    out = []
    for g in groups:
        pairs = [(g.order[0], g.order[-1])] if mode == "best_worst" else ranked_pairs(g)
        for w, l_ in pairs:
            out.append(Group(g.prompt_ids, [g.responses[w], g.responses[l_]], [0, 1]))
    return out


def pairs_to_singles(groups: Sequence[Group]) -> list[Group]:
    """Pairs → labelled singles for KTO: chosen is desirable, rejected undesirable (deduped)."""
    seen: set[tuple[int, ...]] = set()
    out = []
    for g in groups:
        for resp, label in ((g.responses[g.order[0]], 1.0), (g.responses[g.order[1]], 0.0)):
            key = (int(label), len(g.prompt_ids), *g.prompt_ids, *resp)
            if key not in seen:
                seen.add(key)
                out.append(Group(g.prompt_ids, [resp], [0], labels=[label]))
    return out


def kto_groups(singles: Sequence[Group], seed: int, max_length: int) -> list[Group]:
    """Each labelled response plus a *mismatched* one (another example's completion after this
    prompt): their log-ratios give KTO's z₀ estimate of KL(π‖π_ref). The mismatch is a fixed
    function of the data and seed, so its reference log-probs can be precomputed too."""
    order = list(range(len(singles)))
    random.Random(seed).shuffle(order)
    partner = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}
    out = []
    for i, g in enumerate(singles):
        room = max(1, max_length - len(g.prompt_ids))
        other = singles[partner[i]].responses[0][:room]
        out.append(Group(g.prompt_ids, [g.responses[0], other], [0], labels=list(g.labels)))
    return out


__all__ = [
    "detect_format",
    "distinct_ranking",
    "kto_groups",
    "pair_groups",
    "pairs_to_singles",
    "ranked_pairs",
]
