"""Placeholder rendering: types kept for whole-string placeholders, text inside strings,
percent-encoding in paths, and a named error for a missing value."""

from __future__ import annotations

import pytest

from sagas.placeholders import MissingValue, RenderError, UnsafeValue, render, render_path

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


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{{steps.b.output.id}}", "step 'b' left no output"),
        (
            "{{steps.a.output.user_id}}",
            "the output of step 'a' has no field 'user_id' (its fields: deep, id)",
        ),
        ("{{payload.user.tags.5}}", "payload.user.tags is a list of 2, without index '5'"),
        ("{{payload.n.x}}", "payload.n is int, not an object with 'x'"),
    ],
)
def test_missing_value_says_where_the_lookup_stopped(text: str, why: str) -> None:
    """The person who must repair a failed undo learns what is there instead: an output that
    has other fields is not an output that is missing."""
    with pytest.raises(MissingValue) as caught:
        render({"x": text}, CONTEXT)
    assert caught.value.why == why
    assert str(caught.value).endswith(f"has no value: {why}")


@pytest.mark.parametrize(
    ("path", "value", "text"),
    [
        ("/invoices/{{payload.v}}", "..", "payload.v"),
        ("/invoices/{{payload.v}}/x", ".", "payload.v"),
        ("/invoices/{{payload.v}}", "", "payload.v"),
        ("/invoices/.{{payload.v}}", ".", "payload.v"),
        ("/invoices/%2e{{payload.v}}?q=1", ".", "payload.v"),
        ("/invoices/{{payload.v}}{{steps.a.output.dot}}", ".", "payload.v"),
        ("/x/{{steps.a.output.dots}}/y", None, "steps.a.output.dots"),
    ],
)
def test_render_path_refuses_a_value_that_makes_a_dot_or_empty_segment(
    path: str, value: str | None, text: str
) -> None:
    """A rendered path segment holding a value is never '.', '..' or empty: UnsafeValue."""
    context = {**CONTEXT, "payload": {"v": value}, "steps": {"a": {"dot": ".", "dots": ".."}}}
    with pytest.raises(UnsafeValue) as caught:
        render_path(path, context)
    assert caught.value.text == text
    assert text in str(caught.value)


@pytest.mark.parametrize("value", ["...", "a..b", ".hidden", "..x", "%2e%2e", "%2E"])
def test_render_path_keeps_values_that_only_look_like_dots(value: str) -> None:
    """Values with dots that are not a whole '.'/'..' segment, and encoded dots, still render."""
    rendered = render_path("/x/{{payload.v}}", {**CONTEXT, "payload": {"v": value}})
    assert rendered.startswith("/x/") and rendered.count("/") == 2
    assert rendered not in ("/x/.", "/x/..")


def test_dot_values_in_the_query_are_fine() -> None:
    """The query is not a path: '..' after the '?' renders as text."""
    assert render_path("/x?q={{payload.v}}", {**CONTEXT, "payload": {"v": ".."}}) == "/x?q=.."


def test_render_errors_share_a_base_naming_the_placeholder() -> None:
    """MissingValue and UnsafeValue are RenderErrors (LookupErrors) with a `text`."""
    assert issubclass(MissingValue, RenderError) and issubclass(UnsafeValue, RenderError)
    assert issubclass(RenderError, LookupError)
    for error in (MissingValue("payload.a"), UnsafeValue("payload.a", "..")):
        assert error.text == "payload.a"
