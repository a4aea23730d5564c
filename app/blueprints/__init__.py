"""One blueprint per resource, each with its marshmallow schemas beside it."""
