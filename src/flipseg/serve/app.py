"""The web application of ``flipseg serve`` (Starlette): the page, its static files and a
small JSON API over :class:`~flipseg.serve.session.Session`.

============================================  =============================================
``GET /``                                      the page
``GET /static/{name}``                         its script and style sheet
``GET /api/info``                              data, output folder, methods, formats
``GET /api/items``                             every item: state, version, quality, box
``GET /api/queue``                             proposed masks, worst quality score first
``GET /api/items/{id}``                        one item with its mask and voters (run lengths)
``GET /api/items/{id}/image``                  its grey levels, uint8, C order (``X-Shape``)
``POST /api/items/{id}/segment``               ``{version, box?, method?}``: a new proposal
``PUT /api/items/{id}``                        ``{version, state?, box?, mask?}``: a change
``POST|GET|DELETE /api/segment-all``           start, follow, stop "segment every box"
``POST /api/export``                           ``{formats: [...]}``: the accepted masks
``GET /files/{data|out}/{path}``               a file under the data or output folder
============================================  =============================================

Every answer that is not a file is JSON; an error is ``{"error": message}`` with a 4xx
status (404 unknown item, 409 a stale version or a busy job, 413 too large). Segmentation
runs on the session's worker thread, the other blocking work on the thread pool, so the
event loop keeps answering while a box is segmented.
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from flipseg.errors import FlipsegError
from flipseg.serve.security import Guard, PathRefused, safe_file
from flipseg.serve.session import Busy, Session
from flipseg.serve.store import StaleVersion

__all__ = ["MAX_BODY", "create_app"]

#: The largest request body (a corrected mask of a large volume fits).
MAX_BODY = 64 * 1024 * 1024
_STATIC = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}


def _static(name: str) -> bytes:
    return (resources.files("flipseg.serve") / "static" / name).read_bytes()


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    """The request's JSON object, read with a size limit."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BadRequest(413, f"request body over the limit of {limit} bytes")
        chunks.append(chunk)
    try:
        doc = json.loads(b"".join(chunks) or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _BadRequest(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _BadRequest(400, "the body must be a JSON object")
    return doc


def _version(doc: dict[str, Any]) -> int:
    v = doc.get("version")
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise _BadRequest(400, f"version {v!r}: give the item's version (an integer) as last read")
    return v


def _item(session: Session, request: Request) -> int:
    item = request.path_params["item"]
    if not 0 <= item < len(session.cases):
        raise _BadRequest(404, f"no item {item} (there are {len(session.cases)})")
    return item


def create_app(session: Session, *, token: str | None = None, host: str = "127.0.0.1",
               max_body: int = MAX_BODY) -> Starlette:
    """The application serving ``session``, behind the :class:`Guard` (token, Host, sizes)."""

    async def page(request: Request) -> Response:
        return Response(_static("index.html"), media_type="text/html")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC or name == "index.html":
            raise _BadRequest(404, f"no static file {name!r}")
        return Response(_static(name), media_type=_STATIC[name])

    async def info(request: Request) -> Response:
        return JSONResponse(session.info())

    async def items(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(session.items))

    async def queue(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(session.queue))

    async def item(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(session.detail, _item(session, request)))

    async def image(request: Request) -> Response:
        data, shape = await run_in_threadpool(session.image_bytes, _item(session, request))
        return Response(data, media_type="application/octet-stream",
                        headers={"X-Shape": ",".join(map(str, shape))})

    async def segment(request: Request) -> Response:
        i = _item(session, request)
        doc = await _json_body(request, max_body)
        method = doc.get("method")
        if method is not None and not isinstance(method, str):
            raise _BadRequest(400, f"method {method!r}: give a method name")
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(session.executor, session.segment, i, doc.get("box"),
                                            method, _version(doc))
        return JSONResponse(result)

    async def save(request: Request) -> Response:
        i = _item(session, request)
        doc = await _json_body(request, max_body)
        unknown = sorted(set(doc) - {"version", "state", "box", "mask"})
        if unknown:
            raise _BadRequest(400, f"unknown field(s) {', '.join(unknown)}; give version, state, "
                                   "box, mask")
        result = await run_in_threadpool(session.save, i, _version(doc), state=doc.get("state"),
                                         box=doc.get("box"), mask=doc.get("mask"))
        return JSONResponse(result)

    async def segment_all(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(session.job.as_dict())
        if request.method == "DELETE":
            session.job.cancel = True
            return JSONResponse(session.job.as_dict())
        doc = await _json_body(request, max_body)
        method = doc.get("method")
        if method is not None and not isinstance(method, str):
            raise _BadRequest(400, f"method {method!r}: give a method name")
        return JSONResponse(session.start_job(method), status_code=202)

    async def export(request: Request) -> Response:
        doc = await _json_body(request, max_body)
        return JSONResponse(await run_in_threadpool(session.export, doc.get("formats")))

    async def files(request: Request) -> Response:
        roots = session.roots()
        root = request.path_params["root"]
        if root not in roots:
            raise _BadRequest(404, f"no folder {root!r}: use /files/data/... or /files/out/...")
        path = safe_file(roots[root], request.path_params["path"])
        return FileResponse(path)

    routes = [
        Route("/", page),
        Route("/static/{name}", static),
        Route("/api/info", info),
        Route("/api/items", items),
        Route("/api/queue", queue),
        Route("/api/items/{item:int}", item),
        Route("/api/items/{item:int}", save, methods=["PUT"]),
        Route("/api/items/{item:int}/image", image),
        Route("/api/items/{item:int}/segment", segment, methods=["POST"]),
        Route("/api/segment-all", segment_all, methods=["GET", "POST", "DELETE"]),
        Route("/api/export", export, methods=["POST"]),
        Route("/files/{root}/{path:path}", files),
    ]

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def on_http(request: Request, exc: HTTPException) -> Response:
        text = {404: f"no such address: {request.url.path}",
                405: f"{request.method} is not allowed on {request.url.path}"}
        return error(exc.status_code, text.get(exc.status_code, str(exc.detail)))

    async def on_bad(request: Request, exc: Exception) -> Response:
        return error(getattr(exc, "status", 400), str(exc))

    async def on_flipseg(request: Request, exc: FlipsegError) -> Response:
        status = 409 if isinstance(exc, (StaleVersion, Busy)) else 400
        return error(status, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    async def on_crash(request: Request, exc: Exception) -> Response:
        return error(500, f"internal error ({type(exc).__name__}); the server's log has the details")

    handlers = {HTTPException: on_http, _BadRequest: on_bad, PathRefused: on_bad,
                FlipsegError: on_flipseg, Exception: on_crash}
    app = Starlette(routes=routes, exception_handlers=handlers,
                    middleware=[Middleware(Guard, token=token, host=host, max_body=max_body)])
    app.state.session = session
    return app
