"""The link's handshake and sealed frames, on bytes only (``actorchat/cluster/_link.py``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorchat.cluster._link import (
    Accepting,
    Control,
    Dialing,
    Frame,
    LinkRefused,
    MailItem,
    NoteItem,
    Opener,
    Refusal,
    Sealer,
)

SECRET = b"s" * 32


def handshake(
    dial_secret: bytes = SECRET, accept_secret: bytes = SECRET
) -> tuple[Sealer, Opener, Accepting]:
    accepting = Accepting(accept_secret)
    dialing = Dialing(dial_secret, "n1", 7)
    answer = accepting.check_hello(dialing.hello(accepting.challenge()))
    dialing.check_answer(answer)
    return dialing.sealer(), accepting.opener(), accepting


def test_handshake_names_the_dialer_and_frames_round_trip_in_order() -> None:
    sealer, opener, accepting = handshake()
    assert accepting.peer == ("n1", 7)
    frames = [
        Frame(mail=[MailItem("a", "1", "b", "hi"), MailItem("a", "2", "b", "", "g", "{}")]),
        Frame(notes=[NoteItem("a", "accepted", ["1", "2"])], refused=[Refusal("a", "3", "b",
                                                                              "moved")]),
        Frame(control=[Control("release", 1, "b", "n2", 9)]),
        Frame(),
    ]
    assert [opener.open(sealer.seal(f)) for f in frames] == frames


def test_a_dialer_without_the_secret_is_refused() -> None:
    with pytest.raises(LinkRefused, match="cluster secret"):
        handshake(dial_secret=b"x" * 32)


def test_an_acceptor_without_the_secret_is_refused_by_the_dialer() -> None:
    accepting = Accepting(b"x" * 32)
    dialing = Dialing(SECRET, "n1", 7)
    hello = dialing.hello(accepting.challenge())
    with pytest.raises(LinkRefused):
        accepting.check_hello(hello)
    with pytest.raises(LinkRefused):
        dialing.check_answer(b"\0" * 32)


def test_a_recorded_hello_does_not_open_a_new_link() -> None:
    first = Accepting(SECRET)
    hello = Dialing(SECRET, "n1", 7).hello(first.challenge())
    first.check_hello(hello)
    with pytest.raises(LinkRefused):
        Accepting(SECRET).check_hello(hello)  # a fresh challenge: the old MAC is wrong


@pytest.mark.parametrize(
    "challenge", [b"", "text", b"actorchat-link-1:short", b"other-protocol:" + b"0" * 16]
)
def test_a_bad_challenge_is_refused(challenge: bytes | str) -> None:
    with pytest.raises(LinkRefused):
        Dialing(SECRET, "n1", 1).hello(challenge)


@pytest.mark.parametrize("hello", [b"", "text", b"\x93\x01\x02", b"\xc1"])
def test_a_malformed_hello_is_refused(hello: bytes | str) -> None:
    with pytest.raises(LinkRefused):
        Accepting(SECRET).check_hello(hello)


def test_forged_replayed_reordered_and_malformed_frames_are_refused() -> None:
    sealer, opener, _ = handshake()
    first, second = sealer.seal(Frame()), sealer.seal(Frame(mail=[MailItem("a", "1", "b", "")]))
    with pytest.raises(LinkRefused, match="out of order"):
        opener.open(second)  # skips frame 1
    opener.open(first)
    with pytest.raises(LinkRefused, match="out of order"):
        opener.open(first)  # replayed
    forged = second[:-1] + bytes([second[-1] ^ 1])
    with pytest.raises(LinkRefused, match="MAC"):
        opener.open(forged)
    with pytest.raises(LinkRefused):
        opener.open("text")
    with pytest.raises(LinkRefused):
        opener.open(b"short")
    assert opener.open(second).mail[0].id == "1"  # the refused ones changed nothing


def test_a_frame_from_another_link_is_refused() -> None:
    sealer, _, _ = handshake()
    _, other, _ = handshake()
    with pytest.raises(LinkRefused, match="MAC"):
        other.open(sealer.seal(Frame()))


def test_an_authentic_frame_with_a_malformed_payload_is_refused() -> None:
    import hashlib
    import hmac

    sealer, opener, _ = handshake()
    seq = (1).to_bytes(8, "big")
    payload = b"\x92\xa1x"  # msgpack, but not a Frame
    mac = hmac.new(sealer._key, seq + payload, hashlib.sha256).digest()
    with pytest.raises(LinkRefused, match="malformed"):
        opener.open(seq + mac + payload)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_open_and_never_raise_anything_else(data: bytes) -> None:
    _, opener, _ = handshake()
    with pytest.raises(LinkRefused):
        opener.open(data)
    assert opener.seq == 0
