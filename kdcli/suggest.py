"""'Did you mean' suggestions for names users type: architectures, presets, methods, configuration keys."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions), case-insensitive."""
    a, b = a.lower(), b.lower()
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` candidates that look like ``word``, the fewest edits away first (difflib finds them)."""
    unique = list(dict.fromkeys(candidates))
    found = difflib.get_close_matches(word, unique, n=20, cutoff=0.6)
    return sorted(found, key=lambda c: (edit_distance(word, c), found.index(c)))[:n]


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3) -> str:
    """``"did you mean a, b? "`` or an empty string."""
    found = close_matches(word, candidates, n)
    return f"did you mean {', '.join(found)}? " if found else ""
