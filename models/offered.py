"""What a question offers to choose between: "Which came first, the X or the Y?".

A question that names two alternatives needs evidence of both. The selection shares its K
clips between them (each alternative ranks the clips by its own phrase), and the answerer
chooses between their names (``MemoryAnswerer.offered_choices``).
"""

from __future__ import annotations

import re

SELECTION_PARTS = 2  # the most selection queries a question has (two alternatives)
# "... the X or the Y ..." (also a/an): the two alternatives a question offers
OFFERED = re.compile(r"\b(?:the|an?) ([a-z0-9 ]+?) or (?:the|an?) ([a-z0-9 ]+)")


def offered_alternatives(question: str) -> list[str]:
    """The two phrases a question offers ("the red square moving up or the blue star?" ->
    ["red square moving up", "blue star"]), lower case; [] unless it offers two distinct ones."""
    found = OFFERED.search(question.lower())
    if found is None:
        return []
    sides = [side.strip() for side in found.groups()]
    return sides if all(sides) and sides[0] != sides[1] else []


def selection_queries(question: str) -> list[str]:
    """The texts that rank clips for a question: each offered alternative, else the question."""
    return offered_alternatives(question) or [question]
