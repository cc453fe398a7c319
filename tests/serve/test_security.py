"""The guards of ``flipseg serve`` (``flipseg.serve.security``): token, Host and Origin, JSON
only for changes, sizes, and files only from under the data and output folders."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from flipseg.serve.security import PathRefused, is_loopback, safe_file

from .conftest import make_client

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def guarded(session2d):
    from flipseg.serve.app import create_app

    with make_client(create_app(session2d, token=TOKEN, host="0.0.0.0"),
                     base_url="http://192.0.2.10:8000", follow_redirects=False) as c:
        yield c


@pytest.fixture
def small(session2d):
    from flipseg.serve.app import create_app

    with make_client(create_app(session2d, max_body=2000)) as c:
        yield c


def _err(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert "Traceback" not in r.text
    return r.json()["error"]


# ------------------------------------------------------------------ paths
@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("a")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "out-link.txt")
    os.symlink(tmp_path, root / "out-dir")
    os.symlink(root / "sub" / "a.txt", root / "in-link.txt")
    return root


@pytest.mark.parametrize("rel", [
    "../secret.txt", "sub/../../secret.txt", "/etc/passwd", "//etc/passwd", "out-link.txt",
    "out-dir/secret.txt", "..\\secret.txt", "sub/a.txt\x00.png", "", "sub/../..",
])
def test_safe_file_refuses_leaving_the_folder(tree, rel):
    with pytest.raises(PathRefused) as exc:
        safe_file(tree, rel)
    assert exc.value.status == 403


def test_safe_file_serves_inside(tree):
    assert safe_file(tree, "sub/a.txt").read_text() == "a"
    assert safe_file(tree, "in-link.txt").read_text() == "a"  # a link that stays inside is fine
    with pytest.raises(PathRefused) as exc:
        safe_file(tree, "sub/missing.txt")
    assert exc.value.status == 404
    with pytest.raises(PathRefused) as exc:
        safe_file(tree, "sub")  # a folder is no file
    assert exc.value.status == 404


def test_files_endpoint(client, session2d, tmp_path):
    (session2d.out / "note.txt").write_text("hello")
    assert client.get("/files/out/note.txt").text == "hello"
    assert client.get("/files/data/boxes.csv").text.startswith("case_id")
    outside = tmp_path / "outside.txt"
    outside.write_text("private")
    os.symlink(outside, session2d.out / "link.txt")
    print("symlink to a file outside the output folder:", _err(client.get("/files/out/link.txt"), 403))
    for path in ["/files/out/%2e%2e/outside.txt", "/files/out/..%2foutside.txt",
                 "/files/out/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/files/out/%2Fetc%2Fpasswd",
                 "/files/data/..%5c..%5coutside.txt", "/files/out/note.txt%00"]:
        assert "refused" in _err(client.get(path), 403), path
    double = client.get("/files/out/%252e%252e/outside.txt")  # double-encoded: never the file
    assert double.status_code in (403, 404) and "private" not in double.text
    assert "no folder" in _err(client.get("/files/etc/passwd"), 404)
    _err(client.get("/static/..%2fsession.py"), 404)
    _err(client.get("/static/__init__.py"), 404)


# ------------------------------------------------------------------ token
def test_token_required_on_every_request(guarded):
    for path in ["/", "/api/info", "/api/items", "/static/app.js", "/files/out/x"]:
        assert "token" in _err(guarded.get(path), 401)
    assert "token" in _err(guarded.post("/api/items/0/segment", json={"version": 0}), 401)
    assert guarded.get("/api/info", headers={"X-Flipseg-Token": "wrong"}).status_code == 401
    assert guarded.get("/api/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/api/info", headers={"X-Flipseg-Token": TOKEN}).status_code == 200
    assert guarded.get("/api/info", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert guarded.get("/api/info", headers={"Cookie": "flipseg_token=wrong"}).status_code == 401
    assert guarded.get("/api/info", headers={"Cookie": 'bad"cookie; ==='}).status_code == 401


def test_token_in_the_address_sets_a_cookie(guarded):
    assert guarded.get("/?token=wrong").status_code == 401
    r = guarded.get(f"/?token={TOKEN}&x=1")
    assert r.status_code == 303 and r.headers["location"] == "/?x=1"
    cookie = r.headers["set-cookie"]
    assert f"flipseg_token={TOKEN}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert guarded.get("/api/info", headers={"Cookie": f"flipseg_token={TOKEN}"}).status_code == 200
    # a token in the address of a change is not taken
    guarded.cookies.clear()
    assert guarded.post(f"/api/items/0/segment?token={TOKEN}", json={"version": 0}).status_code == 401


def test_loopback_defaults():
    from flipseg.cli import build_parser

    args = build_parser().parse_args(["serve", "data"])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.token is None
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


# ------------------------------------------------------------------ requests from elsewhere
def test_host_and_origin_checks(client):
    assert "Host" in _err(client.get("/api/info", headers={"Host": "evil.example"}), 400)
    assert client.get("/api/info", headers={"Host": "localhost:8000"}).status_code == 200
    r = client.post("/api/items/0/segment", json={"version": 0}, headers={"Origin": "http://evil.example"})
    assert "refused" in _err(r, 403)
    ok = client.post("/api/items/0/segment", json={"version": 0}, headers={"Origin": "http://127.0.0.1:8000"})
    assert ok.status_code == 200


def test_changes_must_be_json(client):
    r = client.post("/api/items/0/segment", content=b"version=0", headers={"Content-Type":
                                                                            "application/x-www-form-urlencoded"})
    assert "JSON" in _err(r, 415)
    assert "JSON" in _err(client.post("/api/items/0/segment", content=b"{}",
                                      headers={"Content-Type": "text/plain"}), 415)


@pytest.mark.parametrize("body", [b"{", b"[1, 2]", b"\xff\xfe", b"null", b'"text"', b"{\"version\": 0,}"])
def test_malformed_json_is_400(client, body):
    for method, path in [("POST", "/api/items/0/segment"), ("PUT", "/api/items/0"),
                         ("POST", "/api/segment-all"), ("POST", "/api/export")]:
        r = client.request(method, path, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (path, body, r.text)
        assert _err(r, 400)


def test_body_size_limit(small):
    big = b'{"version": 0, "pad": "' + b"x" * 5000 + b'"}'
    assert "limit" in _err(small.post("/api/items/0/segment", content=big,
                                      headers={"Content-Type": "application/json"}), 413)

    def chunks():  # no Content-Length: the limit applies while reading
        yield b'{"version": 0, "pad": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    assert "limit" in _err(small.post("/api/items/0/segment", content=chunks(),
                                      headers={"Content-Type": "application/json"}), 413)
    assert _err(small.post("/api/items/0/segment", content=b"{}", headers={
        "Content-Type": "application/json", "Content-Length": "abc"}), 400)


def test_security_headers(client):
    r = client.get("/")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    assert _err(client.get("/api/nothing"), 404)


def test_a_crash_is_a_json_500(client, session2d, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(session2d, "items", boom)
    msg = _err(client.get("/api/items"), 500)
    assert "internal error" in msg and "secret detail" not in msg


def test_no_shell_no_pickle_in_the_server():
    src = Path(__file__).resolve().parents[2] / "src" / "flipseg" / "serve"
    code = "\n".join(p.read_text() for p in src.rglob("*.py"))
    for bad in [r"\bsubprocess\b", r"os\.system", r"\bpickle\b", r"allow_pickle\s*=\s*True", r"\beval\(",
                r"\bexec\(", r"shell\s*=\s*True", r"torch\.load"]:
        assert not re.search(bad, code), bad
