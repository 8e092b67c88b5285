"""The chat page's files over HTTP (``_web.py``): what is served, with which headers.

The page itself runs in a browser in ``test_web_browser.py``; here, without one: the set of
files, their content types, the Content-Security-Policy, and that a non-editable install ships
them (pyproject's package-data globs cover every file).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from actorchat.node import Node
from actorchat.node._web import ASSETS_PREFIX, content_security_policy, load_assets

WEB = Path(__file__).resolve().parents[3] / "actorchat" / "web"


async def _get(port: int, target: str, method: str = "GET", extra: str = "") -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(f"{method} {target} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{extra}\r\n"
                          .encode())
    data = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            data += chunk
    await stream.aclose()
    return data


def _head(reply: bytes) -> dict[str, str]:
    head = reply.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in head)}


def test_every_file_of_the_page_is_served_and_the_page_also_at_the_root() -> None:
    assets = load_assets()
    on_disk = {
        f"{ASSETS_PREFIX}/{p.relative_to(WEB).as_posix()}" for p in WEB.rglob("*") if p.is_file()
    }
    assert set(assets) - {"/"} == on_disk
    assert assets["/"] is assets[f"{ASSETS_PREFIX}/index.html"]
    assert assets[f"{ASSETS_PREFIX}/js/main.js"].content_type.startswith("text/javascript")
    assert assets[f"{ASSETS_PREFIX}/app.css"].content_type.startswith("text/css")


def test_every_module_and_file_the_page_names_exists() -> None:
    """No build step: the imports and links in the files are the URLs the browser asks for."""
    assets = load_assets()
    for path, asset in assets.items():
        text = asset.body.decode()
        if path.endswith(".js"):
            for name in re.findall(r'from "(\./[^"]+)"', text):
                target = (Path(path).parent / name).as_posix()
                assert target in assets, f"{path} imports {name}"
        if path.endswith(".html"):
            for url in re.findall(r'(?:href|src)="(/[^"]*)"', text):
                assert url in assets, f"{path} names {url}"


def test_the_package_data_globs_ship_every_file() -> None:
    pyproject = tomllib.loads((WEB.parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["actorchat"]
    for p in WEB.rglob("*"):
        if p.is_file():
            relative = p.relative_to(WEB.parent).as_posix()
            assert any(fnmatch.fnmatch(relative, g) for g in globs), relative


def test_the_policy_connects_only_to_the_host_it_was_asked_by() -> None:
    policy = content_security_policy("chat.example:8080")
    assert "connect-src 'self' ws://chat.example:8080 wss://chat.example:8080" in policy
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "img-src 'self' blob: data:" in policy
    for host in ("[::1]:80", "127.0.0.1", "localhost:1"):
        assert f"ws://{host} " in content_security_policy(host)
    # A Host header that is not a host is not repeated: 'self' alone.
    for bad in ("evil; script-src *", "a b", "", None, "x" * 300):
        assert "connect-src 'self';" in content_security_policy(bad)


async def test_the_node_serves_the_page(start_node: Callable[..., Awaitable[Node]]) -> None:
    node = await start_node()
    assert node.port
    reply = await _get(node.port, "/")
    headers = _head(reply)
    assert reply.startswith(b"HTTP/1.1 200")
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert f"ws://127.0.0.1:{node.port}" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert b'<script type="module" src="/app/js/main.js">' in reply

    reply = await _get(node.port, "/app/js/main.js?v=1")
    assert reply.startswith(b"HTTP/1.1 200")
    assert _head(reply)["content-type"] == "text/javascript; charset=utf-8"
    etag = _head(reply)["etag"]
    reply = await _get(node.port, "/app/js/main.js", extra=f"if-none-match: {etag}\r\n")
    assert reply.startswith(b"HTTP/1.1 304")

    for target in ("/app/nope.js", "/app/../pyproject.toml", "/app/js/../../_web.py", "/index"):
        assert (await _get(node.port, target)).startswith(b"HTTP/1.1 404"), target
    reply = await _get(node.port, "/", method="POST", extra="content-length: 0\r\n")
    assert reply.startswith(b"HTTP/1.1 405") and _head(reply)["allow"] == "GET, HEAD"
    # The routes of other features are untouched.
    assert (await _get(node.port, "/healthz")).startswith(b"HTTP/1.1 200")
