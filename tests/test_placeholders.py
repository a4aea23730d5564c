"""Placeholder rendering: types kept for whole-string placeholders, text inside strings,
percent-encoding in paths, and a named error for a missing value."""

from __future__ import annotations

import pytest

from sagas.placeholders import MissingValue, render, render_path

CONTEXT = {
    "payload": {"n": 7, "user": {"id": "u 1/x", "tags": ["a", "b"]}, "flag": False},
    "steps": {"a": {"id": 5, "deep": {"list": [{"v": "w"}]}}},
    "saga": {"id": "S1", "correlation_id": "C1", "type": "t"},
}


def test_whole_placeholder_keeps_json_type() -> None:
    """`"{{payload.n}}"` renders as the number 7, objects stay objects, false stays false."""
    assert render(
        {"n": "{{payload.n}}", "u": "{{ payload.user }}", "f": "{{payload.flag}}"}, CONTEXT
    ) == {"n": 7, "u": CONTEXT["payload"]["user"], "f": False}


def test_placeholders_go_deep_and_into_lists() -> None:
    """Deep paths and list indexes resolve; text inside a longer string."""
    assert render(
        [
            "{{steps.a.output.deep.list.0.v}}",
            "id={{steps.a.output.id}}/{{saga.id}}",
            "{{payload.user.tags}}!",
        ],
        CONTEXT,
    ) == ["w", "id=5/S1", '["a","b"]!']


def test_path_values_are_percent_encoded() -> None:
    """A value in a path cannot add segments, a query or a fragment."""
    assert render_path("/users/{{payload.user.id}}?n={{payload.n}}", CONTEXT) == (
        "/users/u%201%2Fx?n=7"
    )


@pytest.mark.parametrize(
    "text",
    [
        "{{steps.b.output.id}}",
        "{{steps.a.output.nope}}",
        "{{payload.user.x}}",
        "{{payload.user.tags.5}}",
    ],
)
def test_missing_value_names_the_placeholder(text: str) -> None:
    """A placeholder without a value raises MissingValue naming it."""
    with pytest.raises(MissingValue) as caught:
        render({"x": text}, CONTEXT)
    assert caught.value.text == text.strip("{}")
