"""Extensions, created unbound and bound in `create_app`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask_smorest import Api as _Api
from flask_smorest import Blueprint as _Blueprint

from app.jsonbody import JSONBodyParser
from app.openapi import ContractMarshmallowPlugin, ContractPlugin
from app.schemas import ErrorSchema


def _flatten(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested errors as flat paths, like the engine's: `steps[0].action.path`."""
    flat: dict[str, list[str]] = {}
    if isinstance(errors, Mapping):
        for key, value in errors.items():
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                path = f"{prefix}[{key}]"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            flat.update(_flatten(value, path))
    elif isinstance(errors, list) and all(isinstance(e, str) for e in errors):
        flat[prefix or "$"] = list(errors)
    else:
        flat[prefix or "$"] = [str(errors)]
    return flat


class Blueprint(_Blueprint):  # type: ignore[misc]
    """flask-smorest's Blueprint whose JSON bodies go through `app.jsonbody` (depth, numbers,
    surrogates refused with a 400 or a 422 naming the field). Every blueprint is one."""

    ARGUMENTS_PARSER = JSONBodyParser()


class Api(_Api):  # type: ignore[misc]
    """flask-smorest's Api; every error body has a message and flat field paths, and the
    OpenAPI document is finished by `app.openapi`'s plugins."""

    ERROR_SCHEMA = ErrorSchema

    def init_app(self, app: Any, **options: Any) -> None:
        # Fresh plugins per app (tests build several): each keeps state about its spec.
        plugins = {
            "marshmallow_plugin": ContractMarshmallowPlugin(),
            "extra_plugins": [ContractPlugin()],
        }
        super().init_app(app, spec_kwargs={**plugins, **(options.get("spec_kwargs") or {})})

    def register_blueprint(self, blp: Any, **options: Any) -> None:
        if not isinstance(blp, Blueprint):  # its bodies would skip app.jsonbody's checks
            raise TypeError(f"blueprint {blp.name!r} must be an app.extensions.Blueprint")
        super().register_blueprint(blp, **options)

    def handle_http_exception(self, error: Any) -> Any:
        payload, *rest = super().handle_http_exception(error)
        if "errors" in payload:
            payload["errors"] = {
                location: _flatten(errors) if isinstance(errors, Mapping | list) else errors
                for location, errors in payload["errors"].items()
            }
        if "errors" in payload and error.code == 422:
            # Name the first problem in the message too, for humans reading a log line.
            location = next(iter(payload["errors"].values()), {})
            if isinstance(location, Mapping) and location:
                field, problems = next(iter(location.items()))
                payload["message"] = f"invalid {field}: {' '.join(problems)}"
        elif error.code == 400 and "errors" in payload and "message" not in payload:
            payload["message"] = "malformed JSON body"
        payload.setdefault("message", error.description or error.name)
        return (payload, *rest)


api = Api()
