"""Which routes need the admin token, and which error statuses each documents: one table for the middleware.

Kept apart from ``app.py`` so the route definitions stay a list of calls, and so the auth and
OpenAPI middleware read the same table the routes are declared from.
"""

from ecosystem.settings import Settings

READS = {"/predict", "/status", "/lineage", "/export", "/niches", "/ancestry", "/samples"}
# Reads too (documented by FastAPI).
OPENAI = {"/v1/completions", "/v1/chat/completions", "/v1/images/generations", "/v1/models"}
WRITES = {"/register", "/register_path", "/tasks", "/feedback", "/promote", "/rollback", "/evolve"}
ROUTES = READS | WRITES  # the BentoML routes: their request bodies are parsed by BentoML

# The error statuses each BentoML route answers besides 500, as its OpenAPI entry lists them.
_ERRORS: dict[str, set[int]] = {
    "/predict": {413, 422, 503},
    "/status": {413},
    "/lineage": {404, 413, 422},
    "/export": {404, 409, 413, 422},
    "/niches": {413},
    "/ancestry": {404, 413, 422},
    "/samples": {413, 422, 503},
    "/register": {409, 413, 422},
    "/register_path": {409, 413, 422},
    "/tasks": {409, 413, 422},
    "/feedback": {404, 413, 422},
    "/promote": {404, 409, 413, 422},
    "/rollback": {409, 413, 422},
    "/evolve": {413, 422},
}


def protected(settings: Settings) -> set[str]:
    """The routes that need ``Authorization: Bearer <admin token>``: writes, and reads too if the settings say so."""
    return WRITES | READS | OPENAI if settings.service.protect_reads else set(WRITES)


def errors(settings: Settings) -> dict[str, set[int]]:
    """Each BentoML route's documented error statuses, with 401/403 where the token is needed."""
    needs_token = protected(settings)
    return {route: codes | ({401, 403} if route in needs_token else set()) for route, codes in _ERRORS.items()}
