"""The web page at ``/ui``: static files shipped with the package, and the one setting the page must know.

No build step and no CDN (the machines serving it are often offline): plain HTML, CSS and
JavaScript drawing with SVG and canvas, reading the JSON routes (``/status``, ``/niches``,
``/ancestry``, ``/samples``). The files themselves hold no data, so they are served without the
token; ``/ui/config.json`` tells the page whether the reading routes want one
(``M2N2_SERVICE__PROTECT_READS``), so it asks for the token before its first call instead of
failing it.
"""

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ecosystem.settings import Settings

STATIC = Path(__file__).parent / "static"


def app(settings: Settings) -> Starlette:
    """The ASGI app mounted at ``/ui``: ``config.json``, then the static files (``/ui/`` is ``index.html``)."""

    async def config(request: Request) -> JSONResponse:
        return JSONResponse({"protect_reads": settings.service.protect_reads})

    return Starlette(routes=[Route("/config.json", config), Mount("/", StaticFiles(directory=STATIC, html=True))])
