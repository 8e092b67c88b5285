"""The public API of actorchat.store is exactly ``__all__``, and each name is defined in
a private module (re-exported, never written in ``__init__``)."""

from __future__ import annotations

import actorchat.store as store


def test_all_names_are_exported_and_documented() -> None:
    public = {name for name in dir(store) if not name.startswith("_")}
    assert public == set(store.__all__)
    for name in store.__all__:
        value = getattr(store, name)
        assert value.__module__.startswith("actorchat.store._"), name
        assert value.__doc__, name
