"""What a question offers to choose between, and the queries that rank its clips."""

from __future__ import annotations

from models.offered import offered_alternatives, selection_queries


def test_offered_alternatives_are_the_two_phrases():
    ask = offered_alternatives
    assert ask("Which came first, the cyan square moving right or the orange diamond growing?") == [
        "cyan square moving right",
        "orange diamond growing",
    ]
    assert ask("Which was shown before the other: a Red Star or an orange circle?") == [
        "red star",
        "orange circle",
    ]
    assert ask("How many times does a green square appear?") == []
    assert ask("The red circle or the red circle?") == []  # not two distinct ones


def test_selection_queries_are_the_alternatives_else_the_question():
    question = "When does a red circle move left?"
    assert selection_queries(question) == [question]
    assert selection_queries("Which came first, the blue star or the red circle?") == [
        "blue star",
        "red circle",
    ]
