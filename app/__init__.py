"""The REST API (HTTP only). Its endpoints arrive with issue 3; see ../shared/CONTRACT.md."""
