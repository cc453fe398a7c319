"""``flipseg serve`` as a process: the printed address, raw request paths that a client
library would have cleaned up, the token on a public address, one-line errors."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from .conftest import LiveServer, make_data2d


def _raw(url: str, path: str, headers: dict | None = None) -> tuple[int, str]:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    body = r.read().decode("utf-8", "replace")
    conn.close()
    return r.status, body


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    data = make_data2d(root / "data")
    (root / "secret.txt").write_text("private")
    srv = LiveServer(str(data), "--out", str(root / "out"), "--method", "ellipse")
    yield srv
    srv.kill()


@pytest.mark.parametrize("path", [
    "/files/out/../secret.txt", "/files/out/../../secret.txt", "/files/data/../../../../../etc/passwd",
    "/files/out/%2e%2e/secret.txt", "/files/out/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "/files/out/..%2fsecret.txt",
    "/files/out/%2fetc%2fpasswd", "/files/out//etc/passwd", "/files/out/..%5csecret.txt",
    "/files/out/%00", "/files/out/%252e%252e/secret.txt", "/static/../session.py",
])
def test_raw_paths_never_leave_the_folders(live, path):
    status, body = _raw(live.url, path)
    print(f"GET {path} -> {status} {body}")
    assert status in (403, 404) and "private" not in body and "root:" not in body
    assert json.loads(body)["error"]


def test_default_address_is_loopback(live):
    assert live.url.startswith("http://127.0.0.1:")
    status, body = _raw(live.url, "/api/info")
    assert status == 200 and json.loads(body)["items"] == 4


def test_public_address_needs_the_printed_token(tmp_path):
    data = make_data2d(tmp_path / "data")
    srv = LiveServer(str(data), "--out", str(tmp_path / "out"), "--method", "ellipse", "--host", "0.0.0.0")
    try:
        printed = "".join(srv.lines)
        assert "every request needs the token" in printed and "?token=" in srv.url
        token = srv.url.split("?token=")[1]
        base = srv.url.split("?")[0]
        status, body = _raw(base, "/api/info")
        print(f"no token -> {status} {body}")
        assert status == 401 and "token" in json.loads(body)["error"]
        assert _raw(base, "/api/info", {"X-Flipseg-Token": token + "x"})[0] == 401
        assert _raw(base, "/api/info", {"X-Flipseg-Token": token})[0] == 200
        status, _ = _raw(base, f"/?token={token}")
        assert status == 303
    finally:
        srv.kill()


@pytest.mark.parametrize("argv, words", [
    (["serve", "NOPE"], "DATA not found"),
    (["serve", "DATA", "--port", "70000"], "--port 70000"),
    (["serve", "DATA", "--token", "short"], "at least 8"),
    (["serve", "DATA", "--method", "grabcut-nope"], "not a box method"),
    (["serve", "DATA", "--boxes", "missing.csv"], "--boxes file not found"),
])
def test_cli_errors_are_one_line(tmp_path, argv, words):
    data = make_data2d(tmp_path / "data")
    names = {"DATA": str(data), "NOPE": str(tmp_path / "NOPE"), "missing.csv": str(tmp_path / "missing.csv")}
    argv = [names.get(a, a) for a in argv]
    r = subprocess.run([sys.executable, "-m", "flipseg.cli", *argv, "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
