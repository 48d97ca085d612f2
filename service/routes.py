"""Which routes need the admin token, and which error statuses each documents: one table for the middleware.

Kept apart from ``app.py`` so the route definitions stay a list of calls, and so the auth and
OpenAPI middleware read the same table the routes are declared from.
"""

from typing import Any

from ecosystem.settings import Settings

READS = {"/predict", "/status", "/lineage", "/export", "/niches", "/ancestry", "/samples"}
OPENAI_POSTS = {"/v1/completions", "/v1/chat/completions", "/v1/images/generations"}
OPENAI = OPENAI_POSTS | {"/v1/models"}  # reads too (documented by FastAPI)
WRITES = {"/register", "/register_path", "/tasks", "/feedback", "/promote", "/rollback", "/evolve"}
ROUTES = READS | WRITES  # the BentoML routes: their request bodies are parsed by BentoML

# Every BentoML route answers these: a malformed body or media type, an oversized body, invalid input.
_ANY_ROUTE = {400, 413, 415, 422}
# The error statuses each BentoML route answers besides those and 500, as its OpenAPI entry lists them.
_ERRORS: dict[str, set[int]] = {
    "/predict": {503},
    "/status": set(),
    "/lineage": {404},
    "/export": {404, 409},
    "/niches": set(),
    "/ancestry": {404},
    "/samples": {503},
    "/register": {409},
    "/register_path": {409},
    "/tasks": {409},
    "/feedback": {404},
    "/promote": {404, 409},
    "/rollback": {409},
    "/evolve": set(),
}


def protected(settings: Settings) -> set[str]:
    """The routes that need ``Authorization: Bearer <admin token>``: writes, and reads too if the settings say so."""
    return WRITES | READS | OPENAI if settings.service.protect_reads else set(WRITES)


def errors(settings: Settings) -> dict[str, set[int]]:
    """Each BentoML route's documented error statuses, with 401/403 where the token is needed."""
    needs_token = protected(settings)
    return {
        route: codes | _ANY_ROUTE | ({401, 403} if route in needs_token else set()) for route, codes in _ERRORS.items()
    }


def media_types(service: Any) -> dict[str, str]:
    """The one request media type each POST route takes: as each BentoML API declares it, JSON for /v1."""
    declared = {api.route: api.input_spec.mime_type() for api in service.apis.values()}
    return declared | dict.fromkeys(OPENAI_POSTS, "application/json")


def file_fields(service: Any) -> dict[str, set[str]]:
    """The fields of each BentoML route that must be uploaded as files."""
    return {api.route: set(api.input_spec.multipart_fields) for api in service.apis.values()}
