"""The chat node: its supervision tree and the actors in it."""

from ._node import Node as Node
from ._node import _safe_url
from ._node import run_until_signal as run_until_signal
from ._queue import DeliveryQueue as DeliveryQueue
from ._queue import Effects as Effects
from ._queue import Item as Item

safe_url = _safe_url
