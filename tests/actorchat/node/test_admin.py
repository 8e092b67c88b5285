"""The admin listener (``_admin.py``): its token check, and the tree it serves."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest
import trio

from actorchat.config import Settings, SettingsError
from actorchat.node._admin import authorized, limit_children

TOKEN = "admin-token-0123456789"


def test_authorized_needs_the_bearer_token() -> None:
    assert authorized({"authorization": f"Bearer {TOKEN}"}, TOKEN)
    assert authorized({"authorization": f"bearer  {TOKEN} "}, TOKEN)
    assert not authorized({}, TOKEN)
    assert not authorized({"authorization": TOKEN}, TOKEN)
    assert not authorized({"authorization": f"Basic {TOKEN}"}, TOKEN)
    assert not authorized({"authorization": f"Bearer {TOKEN}x"}, TOKEN)
    assert not authorized({"authorization": "Bearer "}, TOKEN)


def test_limit_children_says_how_many_it_left_out() -> None:
    leaf = {"id": "user", "children": []}
    tree = {"id": "n", "children": [{"id": "users", "children": [leaf] * 5}, leaf]}
    limited = limit_children(tree, 3)
    assert [len(c["children"]) for c in limited["children"]] == [3, 0]
    assert limited["children"][0]["omitted"] == 2 and "omitted" not in limited
    assert limit_children(tree, 0) == tree


def test_admin_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="admin_port: the admin listener needs a token"):
        Settings(admin_port=9000)
    with pytest.raises(SettingsError, match="admin_token: must be at least 16"):
        Settings(admin_port=9000, admin_token="short")
    with pytest.raises(SettingsError, match="admin_port: must differ"):
        Settings(port=9000, admin_port=9000, admin_token=TOKEN)
    assert "admin_token" not in repr(Settings(admin_port=0, admin_token=TOKEN)).split("(")[1]
    assert TOKEN not in repr(Settings(admin_port=0, admin_token=TOKEN))


async def request(
    port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], Any]:
    def go() -> tuple[int, dict[str, str], Any]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            body = response.read()
            head = {k.lower(): v for k, v in response.getheaders()}
            is_json = head.get("content-type") == "application/json"
            return response.status, head, json.loads(body) if is_json else body
        finally:
            connection.close()

    return await trio.to_thread.run_sync(go)


async def test_admin_endpoint_refuses_requests_without_its_token(start_node: Any) -> None:
    node = await start_node(admin_port=0, admin_token=TOKEN)
    port = node.admin_port
    assert port and port != node.port
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                    {"Authorization": TOKEN}):
        status, head, body = await request(port, "/admin/tree", headers)
        assert status == 401 and body["error"] == "unauthorized", headers
        assert head["www-authenticate"].startswith("Bearer")
    # Unknown paths are not even admitted to exist without the token.
    assert (await request(port, "/nope"))[0] == 401
    assert (await request(port, "/nope", bearer))[0] == 404
    assert (await request(port, "/admin/tree", bearer, "POST"))[0] == 405
    # The public port does not serve the admin endpoint.
    assert (await request(node.port, "/admin/tree", bearer))[0] == 404

    status, _, body = await request(port, "/admin/tree", bearer)
    assert status == 200 and body["node"] == "test"
    tree = body["tree"]
    assert (tree["id"], tree["kind"], tree["state"]) == (
        "test", "supervisor:rest_for_one", "running"
    )
    ids = [child["id"] for child in tree["children"]]
    assert ids[:2] == ["store", "storefront"] and ids[-1] == "admin"
    store = tree["children"][0]
    assert (store["kind"], store["restarts"], store["mailbox_depth"]) == ("thread", 0, 0)


async def test_admin_listener_is_off_without_a_port(start_node: Any) -> None:
    node = await start_node()
    assert node.admin_port is None
    assert node.sup is not None and node.sup.whereis("admin") is None
