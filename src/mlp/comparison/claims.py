"""Claims a compare can check (``compare: {claim: NAME}`` in its config): each turns the
summary's numbers into sentences that head the findings.  None is defined here yet."""

from __future__ import annotations

from typing import Any

KNOWN_CLAIMS: tuple[str, ...] = ()


def evaluate_claim(claim: str, summary: dict[str, Any]) -> list[str]:
    """The sentences that say whether ``claim`` holds in ``summary`` (none for an unknown claim)."""
    return []
