"""``flipseg serve``: a local web page that turns boxes into masks and lets a person review
them (see ``docs/serve.md``).

``run_serve(args)`` reads the data as ``flipseg label`` does, starts the server (uvicorn,
Starlette) on ``--host``/``--port`` and prints the address to open. The web framework is
the ``serve`` extra (``pip install flipseg[serve]``); nothing here is imported by
``flipseg --help``.
"""

from __future__ import annotations

import argparse
import secrets
import socket
from typing import Any

from flipseg.errors import FlipsegError

__all__ = ["bind", "run_serve"]


def _need_framework() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise FlipsegError(f"flipseg serve needs {exc.name}: pip install 'flipseg[serve]'") from None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise FlipsegError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int, token: str | None) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def run_serve(args: argparse.Namespace) -> int:
    """``flipseg serve DATA``: serve the review page until Ctrl+C."""
    from pathlib import Path

    from flipseg.devices import resolve_device
    from flipseg.serve.security import is_loopback

    _need_framework()
    import uvicorn

    from flipseg.serve.app import create_app
    from flipseg.serve.session import Session

    if not 0 <= args.port <= 65535:
        raise FlipsegError(f"--port {args.port}: give 0-65535 (0: any free port)")
    if args.token is not None and len(args.token) < 8:
        raise FlipsegError("--token: give at least 8 characters")
    device = resolve_device(getattr(args, "device", None))
    token = args.token
    if token is None and not is_loopback(args.host):
        token = secrets.token_urlsafe(18)
    data = Path(args.data).resolve()
    out = args.out or str(data.parent / f"{data.name.split('.')[0] or 'data'}-review")
    session = Session(args.data, out=out, boxes=args.boxes, data_opts=args.data_opt or [],
                      method=args.method, quality_model=args.quality_model, seed=args.seed,
                      device=device)
    session.executor.submit(session.segmenter, session.method)  # loaded while the page opens
    app = create_app(session, token=token, host=args.host,
                     max_body=int(args.max_upload_mb * 1024 * 1024))
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    note = f"; {session.quality_note}" if session.quality_note else ""
    print(f"flipseg serve: {len(session.cases)} item(s) from {args.data}, state in "
          f"{session.out}{note}", flush=True)
    if token is not None and args.token is None:
        print(f"flipseg serve: listening on {args.host}: every request needs the token "
              f"{token}", flush=True)
    print(f"flipseg serve: open {_url(args.host, port, token)}  (Ctrl+C stops)", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server: Any = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        session.close()
        sock.close()
    return 0
