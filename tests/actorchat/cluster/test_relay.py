"""When the relay may drop a row: the mailbox has the message for good (``in_custody``)."""

from __future__ import annotations

from actorchat.cluster._relay import in_custody
from actorchat.node import DeliveryQueue


def test_custody_follows_the_queue() -> None:
    queue = DeliveryQueue("bob", bound=2)
    assert in_custody(None, "a", "1")  # the mailbox stopped: only when all was stored
    assert not in_custody(queue, "a", "1")  # never taken
    queue.attach(0.0)
    fx = queue.incoming("a", "1", "x", 1.0)
    (item,) = fx.deliver
    assert not in_custody(queue, "a", "1")  # delivered, not acknowledged, not stored
    queue.ack([item.mid], 2.0)
    assert in_custody(queue, "a", "1")  # acknowledged
    queue.detach()
    fx = queue.incoming("a", "2", "y", 3.0)
    assert not in_custody(queue, "a", "2")  # waiting for its write
    queue.stored(fx.store, 4.0)
    assert in_custody(queue, "a", "2")  # stored
    for i in range(3, 6):  # over the bound: spill-only items leave memory once written
        fx = queue.incoming("a", str(i), "z", 5.0)
        queue.stored(fx.store, 6.0)
    assert all(in_custody(queue, "a", str(i)) for i in range(3, 6))
