"""The prefix votes of diff-keys' rename search, counted by groups of prefixes that hold the same rests."""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence


def _vote_rank(item: tuple[tuple[str, str, str], int]) -> tuple[int, int, tuple[str, str, str]]:
    """How `_candidate_renames` ranks a vote ((kind, old, new), count): most votes first, then the shorter new
    name, then by the text."""
    return -item[1], len(item[0][2]), item[0]


def _numbered(prefix: str) -> bool:
    """Whether a dotted prefix has a number among its components (`model.layers.3.`)."""
    return any(map(str.isdigit, prefix.split(".")))


def _inside_a_layer(prefix: str, siblings: Mapping[tuple[str, ...], int]) -> bool:
    """Whether a dotted prefix names a module inside one numbered item of a list of alike items (`blocks.0.norm1.`
    beside `blocks.1.norm1.`, not `features.0.`): such a prefix renamed onto a prefix with no number
    (`vit.layernorm.`) takes one layer's module out of a stack of alike layers onto a module of the model's own, a
    pairing by shape alone. A timm ViT's `blocks.0.norm1.` was offered as transformers' final `vit.layernorm.` (both
    one 1-D norm of the hidden size), which loads layer 0's norm into the last one without a word; the final
    `norm.` is the one it takes. `siblings`: `_sibling_patterns` of the sampled prefixes. A module that no other
    item of its list holds is no lookalike (review 83): a pipeline-parallel save numbers every stage of one list,
    the embedding and the final norm included (`sequential.0.word_embeddings.`, `sequential.5.norm.` for
    GPT-NeoX's `gpt_neox.embed_in.` and `gpt_neox.final_layer_norm.`), and those renames were no longer offered."""
    return any(siblings.get(pattern, 0) > 1 for pattern in _numbers_hidden(prefix))


def _numbers_hidden(prefix: str) -> list[tuple[str, ...]]:
    """`prefix`'s components with one number before its last component put as "#", for each such number
    (`blocks.0.norm1.` -> [("blocks", "#", "norm1")])."""
    parts = prefix.rstrip(".").split(".")
    return [(*parts[:index], "#", *parts[index + 1:]) for index, part in enumerate(parts[:-1]) if part.isdigit()]


def _sibling_patterns(prefixes: Collection[str]) -> Counter[tuple[str, ...]]:
    """How many of `prefixes` each `_numbers_hidden` pattern stands for."""
    return Counter(pattern for prefix in prefixes for pattern in _numbers_hidden(prefix))


def top_prefix_votes(sample_splits: Sequence[Sequence[tuple[str, str]]], by_rest: Mapping[str, Collection[str]],
                     limit: int) -> list[tuple[tuple[str, str, str], int]]:
    """The `limit` best prefix votes, ranked as `_vote_rank` ranks them: each sampled name's (prefix, rest) split
    votes ("prefix", prefix, target prefix) for every target prefix `by_rest` gives its rest, other than its own.

    Casting the votes one by one is quadratic in layers: a block of 1,000 renumbered layers casts a million
    (`model.layers.0.` onto each of `model.layers.1000.` to `...1999.`, and so on), a second of a 4-second run. A
    prefix's count against a target prefix depends only on the rests each holds, so prefixes holding the same rests
    are counted once as a group, and each pair of groups gives its own best few pairs (ranked by the new name's
    length, then the old name, then the new) without listing the others.

    Example:
        >>> splits = [[("", "a.w"), ("a.", "w")], [("", "b.w"), ("b.", "w")]]
        >>> top_prefix_votes(splits, {"w": {"c.", "a."}}, 3)
        [(('prefix', 'a.', 'c.'), 1), (('prefix', 'b.', 'a.'), 1), (('prefix', 'b.', 'c.'), 1)]
    """
    rests_of: dict[str, Counter[str]] = defaultdict(Counter)  # prefix -> its rests that some target has
    for splits in sample_splits:
        for prefix, rest in splits:
            if rest in by_rest:
                rests_of[prefix][rest] += 1
    siblings = _sibling_patterns({prefix for splits in sample_splits for prefix, _ in splits})
    prefix_groups: dict[tuple[frozenset[tuple[str, int]], bool], list[str]] = defaultdict(list)
    for prefix, rests in rests_of.items():
        prefix_groups[(frozenset(rests.items()), _inside_a_layer(prefix, siblings))].append(prefix)
    held_by: dict[str, set[str]] = defaultdict(set)  # target prefix -> the wanted rests it holds
    for rest, target_prefixes in by_rest.items():
        for target_prefix in target_prefixes:
            held_by[target_prefix].add(rest)
    target_groups: dict[tuple[frozenset[str], bool], list[str]] = defaultdict(list)
    for target_prefix, rests in held_by.items():
        target_groups[(frozenset(rests), _numbered(target_prefix))].append(target_prefix)
    # Each group of target prefixes by its number; rest -> the groups that hold it.
    target_lists = [sorted(group, key=lambda prefix: (len(prefix), prefix)) for group in target_groups.values()]
    groups_of_rest: dict[str, list[int]] = defaultdict(list)
    numbered_targets = [numbered for _, numbered in target_groups]
    for index, (rests, _) in enumerate(target_groups):
        for rest in rests:
            groups_of_rest[rest].append(index)
    best: list[tuple[tuple[str, str, str], int]] = []
    for (rests, inside_a_layer), prefixes in prefix_groups.items():
        counts: Counter[int] = Counter()
        for rest, times in rests:
            for index in groups_of_rest[rest]:
                if inside_a_layer and not numbered_targets[index]:
                    continue  # one layer's module onto a module of no list: a lookalike (see _inside_a_layer)
                counts[index] += times
        prefixes.sort()
        for index, count in counts.items():
            best += _best_pairs(prefixes, target_lists[index], count, limit)
    return heapq.nsmallest(limit, best, key=_vote_rank)


def _best_pairs(prefixes: Sequence[str], target_prefixes: Sequence[str], count: int,
                limit: int) -> list[tuple[tuple[str, str, str], int]]:
    """The first `limit` votes (prefix, target prefix) of two groups, every pair of them with `count` votes but a
    prefix with itself (no vote), in `_vote_rank`'s order: by the target prefix's length, then the prefix, then the
    target prefix. `prefixes` are sorted, `target_prefixes` sorted by length then text."""
    found: list[tuple[tuple[str, str, str], int]] = []
    start = 0
    while start < len(target_prefixes) and len(found) < limit:
        length = len(target_prefixes[start])
        end = start
        while end < len(target_prefixes) and len(target_prefixes[end]) == length:
            end += 1
        # Pairs within one length, by prefix then target: a prefix pairs with at most one target of its own name,
        # so at most limit + 1 pairs are looked at before `limit` are found.
        for prefix in prefixes:
            for target_prefix in target_prefixes[start:end]:
                if target_prefix != prefix:
                    found.append((("prefix", prefix, target_prefix), count))
                    if len(found) == limit:
                        return found
        start = end
    return found
