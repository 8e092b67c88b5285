"""Peer 2: a Django Channels chat consumer on the channels_redis layer (see serve.py)."""
