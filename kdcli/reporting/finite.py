"""JSON for numbers that are not finite. JSON has no NaN or infinity: Python's ``json`` writes the tokens ``NaN`` and
``Infinity``, which other parsers (``jq``, JavaScript) refuse, and pydantic writes ``null``, which reads as "no
value". kdcli writes them as the strings ``"nan"``, ``"inf"`` and ``"-inf"`` instead: the document stays valid JSON,
the value is not mistaken for a missing one, and ``float()``, pydantic and kdcli's own readers take the strings back
as the numbers."""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic_core import to_jsonable_python

NON_FINITE = ("nan", "inf", "-inf")
"""The strings a number that is not finite is written as."""


def _spelled(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def finite_json(value: Any, where: str = "") -> tuple[Any, list[str]]:
    """``value`` (dicts, lists and tuples of JSON values, walked) with every float that is not finite replaced by
    ``"nan"``, ``"inf"`` or ``"-inf"``; and where each was with what it became, as ``results[0].nll = "inf"``."""
    if isinstance(value, float) and not math.isfinite(value):
        spelled = _spelled(value)
        return spelled, [f'{where or "the value"} = "{spelled}"']
    if isinstance(value, dict):
        found: list[str] = []
        cleaned: dict[Any, Any] = {}
        for key, item in value.items():
            cleaned[key], inner = finite_json(item, f"{where}.{key}" if where else str(key))
            found += inner
        return cleaned, found
    if isinstance(value, list | tuple):
        found = []
        items = []
        for index, item in enumerate(value):
            clean, inner = finite_json(item, f"{where}[{index}]")
            items.append(clean)
            found += inner
        return items, found
    return value, []


def dumps(value: Any, indent: int | None = 2) -> tuple[str, list[str]]:
    """One JSON document (non-finite numbers as strings, see the module) and where such numbers were."""
    cleaned, found = finite_json(value)
    return json.dumps(cleaned, indent=indent, allow_nan=False, default=to_jsonable_python), found


def described(found: list[str], limit: int = 3) -> str:
    """A one-line note of what ``dumps`` reports: ``not finite, so written as a string in the JSON: results[0].nll =
    "inf" and 2 more``."""
    shown = ", ".join(found[:limit]) + (f" and {len(found) - limit} more" if len(found) > limit else "")
    return f"not finite, so written as a string in the JSON: {shown}"
