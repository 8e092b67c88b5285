"""``/metrics``: pure helpers, then a live node scraped as traffic flows (scrape, send, scrape
again), the way Prometheus sees it (the text format, parsed by prometheus_client's parser)."""

from __future__ import annotations

import urllib.request
from typing import Any

import trio
from client import Client, new_id
from node_harness import restarted
from prometheus_client.parser import text_string_to_metric_families

import supervisors as sv
from actorchat.node._metrics import (
    cumulate,
    histogram_buckets,
    metric_name,
    supervisor_stats,
)


# -- pure -------------------------------------------------------------------------------------
def test_metric_names_are_prometheus_names() -> None:
    assert metric_name("received") == "actorchat_received"
    assert metric_name("link frames/sent") == "actorchat_link_frames_sent"
    assert metric_name("__") == "actorchat_unnamed"


def test_histogram_buckets_are_cumulative_with_inf() -> None:
    buckets, total = histogram_buckets([0, 1, 3, 7, 100], (0, 1, 5, 10))
    assert buckets == [("0.0", 1), ("1.0", 2), ("5.0", 3), ("10.0", 4), ("+Inf", 5)]
    assert total == 111
    assert histogram_buckets([], (1,)) == ([("1.0", 0), ("+Inf", 0)], 0.0)
    assert cumulate([1, 0, 2], (0.5, 1.0)) == [("0.5", 1), ("1.0", 1), ("+Inf", 3)]


def test_supervisor_stats_add_up_supervisors_of_one_template() -> None:
    stats = [
        sv.SupervisorStats(("n1",), 1, 2, (1, 0)),
        sv.SupervisorStats(("n1", "users"), 4, 2, (3, 0)),
        sv.SupervisorStats(("n1", "rooms"), 0, 2, (0, 0)),
        sv.SupervisorStats(("n1", "rooms", "room"), 2, 1, (5,)),
        sv.SupervisorStats(("n1", "rooms", "room"), 1, 1, (0,)),
    ]
    per_sup, depths = supervisor_stats(stats)
    assert per_sup == {"root": (1, 2), "users": (4, 2), "rooms": (0, 2), "rooms/room": (3, 2)}
    assert depths == {"root": [1, 0], "users": [3, 0], "rooms": [0, 0], "rooms/room": [5, 0]}


# -- a live node ------------------------------------------------------------------------------
async def scrape(port: int) -> dict[str, float]:
    """Sample name{labels} -> value, over real HTTP (a blocking client, in a thread)."""

    def get() -> tuple[str, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return r.headers["content-type"], r.read().decode()

    content_type, text = await trio.to_thread.run_sync(get)
    assert content_type.startswith("text/plain; version=0.0.4")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


async def poll(predicate: Any, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def both(alice: Client, bob: Client, ids: list[str]) -> None:
    """bob reads (and acks) until he has ``ids``; alice until she has their receipts."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bob.until, lambda: set(bob.delivered_ids()) >= set(ids))
        nursery.start_soon(
            alice.until, lambda: {i for _, i in alice.receipts["delivered"]} >= set(ids)
        )


def moved(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


async def test_metrics_follow_traffic(start_node: Any) -> None:
    node = await start_node(user_linger=600.0)
    async with Client.connect(node.port) as c:
        await c.register("alice")
        await c.register("bob")
    first = await scrape(node.port)
    for name in ("received", "accepted", "delivered", "stored", "drained"):
        assert first[f"actorchat_{name}_total"] == 0, name
    assert first['actorchat_node_info{node=test,version=' + _version() + '}'] == 1
    assert first["actorchat_users_online"] == 0
    assert first["actorchat_store_up"] == 1
    assert first["actorchat_supervisor_restarts_total{supervisor=users}"] == 0

    async with Client.connect(node.port) as alice:
        await alice.login("alice")
        async with Client.connect(node.port) as bob:
            await bob.login("bob")
            online = await scrape(node.port)
            assert online["actorchat_users_online"] == 2
            assert online["actorchat_connections"] == 2
            ids = [await alice.send_message("bob", f"m{i}") for i in range(3)]
            await both(alice, bob, ids)
            after = await scrape(node.port)
            assert moved(online, after, "actorchat_received_total") == 3
            assert moved(online, after, "actorchat_accepted_total") == 3
            assert moved(online, after, "actorchat_delivered_total") == 3
            assert moved(online, after, "actorchat_stored_total") == 0  # acked in time
            # Every live mailbox is in the depth histogram (2 of them, holding nothing now).
            assert after["actorchat_mailbox_depth_count"] == after["actorchat_mailboxes"] == 2

        # bob is offline: his mail goes to the store, and his mailbox holds it meanwhile.
        await poll(lambda: node.registry.connections.keys() == {"alice"})
        ids = [new_id() for _ in range(2)]
        for id in ids:
            await alice.send_message("bob", "offline", id=id)
        await alice.until(lambda: set(alice.accepted) >= set(ids))
        offline = await scrape(node.port)
        assert offline["actorchat_users_online"] == 1
        assert moved(after, offline, "actorchat_stored_total") == 2
        assert moved(after, offline, "actorchat_store_batch_rows_count") >= 1
        assert moved(after, offline, "actorchat_store_batch_seconds_count") >= 1
        assert offline["actorchat_store_batch_rows_sum"] >= 2
        assert offline["actorchat_mailbox_depth_sum"] == offline["actorchat_mailbox_depth_max"] == 2
        assert offline['actorchat_mailbox_depth_bucket{le=1.0}'] == 1  # alice's, empty
        assert offline['actorchat_mailbox_depth_bucket{le=2.0}'] == 2  # and bob's

        # bob comes back: delivered from memory, acknowledged, and the stored rows drained.
        async with Client.connect(node.port) as bob:
            await bob.login("bob")
            await both(alice, bob, ids)
            back = await scrape(node.port)
            assert moved(offline, back, "actorchat_delivered_total") == 2
            assert moved(offline, back, "actorchat_drained_total") == 2
            assert back["actorchat_mailbox_depth_sum"] == 0

            # A crash of bob's mailbox actor: the users supervisor counts the restart.
            node.registry.mailboxes["bob"].kill(sv.Error(RuntimeError("injected")))
            await poll(lambda: restarted(node) == [("test/users/user", 1)])
            crashed = await scrape(node.port)
            assert moved(back, crashed, "actorchat_supervisor_restarts_total{supervisor=users}") \
                == 1
            assert crashed["actorchat_supervisor_restarts_total{supervisor=root}"] == 0


async def test_feature_keys_of_node_metrics_are_exported_generically(start_node: Any) -> None:
    node = await start_node()
    node.metrics["link_frames_sent"] += 7
    node.metrics["link_peers"] = 2
    node.metric_gauges.add("link_peers")
    got = await scrape(node.port)
    assert got["actorchat_link_frames_sent_total"] == 7
    assert got["actorchat_link_peers"] == 2


def _version() -> str:
    from importlib.metadata import version

    return version("actorchat")
