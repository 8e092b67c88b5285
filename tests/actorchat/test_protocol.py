"""actorchat.protocol: frames, the never-raising decoder, the encoder, the session rules."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import actorchat.protocol as p
from actorchat.protocol import ErrorCode, ErrorEvent, FrameError, ServerSession, SessionLimits

MAX_FRAME = 64 * 1024
MAX_BODY = 16 * 1024


def decode(data: Any, **limits: int) -> p.ClientFrame | FrameError:
    limits = {"max_frame_bytes": MAX_FRAME, "max_body_bytes": MAX_BODY, **limits}
    return p.decode_client_frame(data, **limits)


def decode_json(obj: Any, **limits: int) -> p.ClientFrame | FrameError:
    return decode(json.dumps(obj), **limits)


# -- every client frame ----------------------------------------------------------------------

MEDIA = {"id": "m1", "mime": "image/png", "size": 1234}
CLIENT_EXAMPLES: list[tuple[dict[str, Any], p.ClientFrame]] = [
    ({"type": "register", "user": "alice", "password": "pw"},
     p.Register(user="alice", password="pw")),
    ({"type": "login", "user": "a.b-c_9", "password": "pw"},
     p.Login(user="a.b-c_9", password="pw")),
    ({"type": "resume", "token": "T"}, p.Resume(token="T")),
    ({"type": "ping"}, p.Ping()),
    ({"type": "send", "id": "i1", "to": "bob", "body": "hi"},
     p.Send(id="i1", to="bob", body="hi")),
    ({"type": "send", "id": "i2", "group": "g1", "body": "hi all"},
     p.Send(id="i2", group="g1", body="hi all")),
    ({"type": "send", "id": "i3", "to": "bob", "body": "", "media": MEDIA},
     p.Send(id="i3", to="bob", media=p.Media(id="m1", mime="image/png", size=1234))),
    ({"type": "ack", "mids": ["m1", "m2"]}, p.Ack(mids=["m1", "m2"])),
    ({"type": "read", "mids": ["m1"]}, p.Read(mids=["m1"])),
    ({"type": "group_create", "name": "friends", "members": ["bob", "carol"]},
     p.GroupCreate(name="friends", members=["bob", "carol"])),
    ({"type": "group_add", "group": "g1", "users": ["dave"]},
     p.GroupAdd(group="g1", users=["dave"])),
    ({"type": "group_remove", "group": "g1", "users": ["dave"]},
     p.GroupRemove(group="g1", users=["dave"])),
    ({"type": "group_leave", "group": "g1"}, p.GroupLeave(group="g1")),
    ({"type": "subscribe", "users": ["bob"]}, p.Subscribe(users=["bob"])),
    ({"type": "unsubscribe", "users": ["bob"]}, p.Unsubscribe(users=["bob"])),
    ({"type": "typing", "to": "bob", "state": "composing"}, p.Typing(to="bob", state="composing")),
    ({"type": "typing", "group": "g1", "state": "paused"}, p.Typing(group="g1", state="paused")),
]


@pytest.mark.parametrize(("obj", "expected"), CLIENT_EXAMPLES, ids=lambda x: str(x)[:40])
def test_decodes_every_client_frame(obj: dict[str, Any], expected: p.ClientFrame) -> None:
    assert decode_json(obj) == expected


def test_examples_cover_every_client_frame_type() -> None:
    assert {obj["type"] for obj, _ in CLIENT_EXAMPLES} == p.CLIENT_FRAME_TYPES


def test_unknown_optional_fields_are_ignored() -> None:
    obj = {"type": "send", "id": "i", "to": "bob", "body": "b", "x-future": {"a": [1]}}
    assert decode_json(obj) == p.Send(id="i", to="bob", body="b")


def test_any_frame_may_carry_an_id_that_errors_quote() -> None:
    assert decode_json({"type": "ping", "id": "p1"}) == p.Ping(id="p1")


# -- every decoder error ---------------------------------------------------------------------

BAD_FRAMES: list[tuple[Any, str | None]] = [
    ("not json", None),
    ("", None),
    ('{"type": "ping"', None),
    ("[1, 2]", None),
    ('"ping"', None),
    ("null", None),
    ("{}", None),  # no type
    ('{"type": 5}', None),
    ('{"type": null, "id": "r"}', "r"),
    ('{"type": "send", "id": 5, "to": "bob", "body": "b"}', None),
    ('{"type": "send", "id": "r", "to": "bob", "body": 5}', "r"),
    ('{"type": "send", "id": "r", "to": "bad name", "body": "b"}', "r"),
    ('{"type": "send", "id": "r", "to": "bob\\n", "body": "b"}', "r"),
    ('{"type": "send", "id": "r", "to": "", "body": "b"}', "r"),
    ('{"type": "send", "id": "r", "to": "' + "a" * 65 + '", "body": "b"}', "r"),
    ('{"type": "send", "id": "r", "to": "bob", "group": "g", "body": "b"}', "r"),
    ('{"type": "send", "id": "r", "body": "b"}', "r"),
    ('{"type": "send", "id": "", "to": "bob", "body": "b"}', None),
    ('{"type": "send", "id": "' + "i" * 129 + '", "to": "bob"}', None),
    ('{"type": "send", "to": "bob", "body": "b"}', None),
    ('{"type": "send", "id": "r", "to": "bob", "media": {"id": "m", "mime": "x", "size": -1}}',
     "r"),
    ('{"type": "send", "id": "r", "to": "bob", "media": {"id": "m"}}', "r"),
    ('{"type": "register", "user": "alice"}', None),
    ('{"type": "login", "user": "alice", "password": ""}', None),
    ('{"type": "resume", "token": 7}', None),
    ('{"type": "ack", "mids": "m1"}', None),
    ('{"type": "ack", "mids": [1]}', None),
    ('{"type": "ack", "mids": ' + json.dumps(["m"] * 1001) + "}", None),
    ('{"type": "read"}', None),
    ('{"type": "group_create", "name": "", "members": []}', None),
    ('{"type": "group_create", "name": "g", "members": ' + json.dumps(["u"] * 1025) + "}", None),
    ('{"type": "group_add", "group": "g", "users": ["no spaces"]}', None),
    ('{"type": "group_leave", "id": "r"}', "r"),
    ('{"type": "subscribe", "users": null}', None),
    ('{"type": "typing", "to": "bob", "state": "shouting"}', None),
    ('{"type": "typing", "state": "paused"}', None),
    ('{"type": "ping", "id": 12}', None),
    ('{"type": "ping", "x": ' + "[" * 30000 + "]" * 30000 + "}", None),
    ('{"type": "ping", "id": ' + "[" * 30000 + "]" * 30000 + "}", None),
    ('{"type": "send", "id": "r", "to": "bob", "media": {"id": "m", "mime": "x", "size": 1e999}}',
     "r"),
    ('{"type": "ping", "x": "\\ud800"}', None),
    ('{"type": "ping", "x": "\ud800"}', None),  # a str holding a lone surrogate
    (b'{"type": "ping"}', None),  # a binary frame, even of valid JSON
    (None, None),
]


@pytest.mark.parametrize(("data", "ref"), BAD_FRAMES, ids=lambda x: repr(x)[:50])
def test_bad_frame(data: Any, ref: str | None) -> None:
    result = decode(data)
    assert isinstance(result, FrameError)
    assert result.code is ErrorCode.BAD_FRAME
    assert result.ref == ref
    assert result.message


def test_bad_user_name_message_says_what_a_user_name_is() -> None:
    result = decode_json({"type": "send", "id": "r", "to": "a b", "body": ""})
    assert isinstance(result, FrameError)
    assert "user name (1 to 64" in result.message and "$.to" in result.message


@pytest.mark.parametrize("obj", [{"type": "nope"}, {"type": "SEND", "id": "r"}, {"type": ""}])
def test_unknown_type(obj: dict[str, Any]) -> None:
    result = decode_json(obj)
    assert isinstance(result, FrameError)
    assert result.code is ErrorCode.UNKNOWN_TYPE
    assert result.ref == obj.get("id")


def test_frame_over_the_limit_is_too_large_before_parsing() -> None:
    result = decode("x" * 101, max_frame_bytes=100)  # not even JSON: never parsed
    assert result == FrameError(ErrorCode.TOO_LARGE, "frame is over 100 bytes")


def test_frame_limit_counts_utf8_bytes() -> None:
    text = json.dumps({"type": "send", "id": "i", "to": "bob", "body": "é" * 40},
                      ensure_ascii=False)
    assert len(text) <= 100 < len(text.encode())
    assert decode(text, max_frame_bytes=100).code is ErrorCode.TOO_LARGE  # type: ignore[union-attr]
    assert isinstance(decode(text, max_frame_bytes=len(text.encode())), p.Send)


def test_body_over_the_limit_is_too_large_with_ref() -> None:
    ok = decode_json({"type": "send", "id": "i", "to": "bob", "body": "€" * 5}, max_body_bytes=15)
    assert isinstance(ok, p.Send)
    big = decode_json({"type": "send", "id": "i", "to": "bob", "body": "€" * 6}, max_body_bytes=15)
    assert big == FrameError(ErrorCode.TOO_LARGE, "body is over 15 bytes", "i")


# -- fuzzing: the decoder never raises --------------------------------------------------------

KNOWN_CODES = {ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_TYPE, ErrorCode.TOO_LARGE}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


def assert_frame_or_known_error(result: object) -> None:
    if isinstance(result, FrameError):
        assert result.code in KNOWN_CODES
        assert isinstance(result.message, str) and result.message
        assert result.ref is None or isinstance(result.ref, str)
    else:
        assert isinstance(result, p.ClientFrame)


@given(st.text())
def test_decoder_never_raises_on_text(data: str) -> None:
    assert_frame_or_known_error(decode(data))


@given(st.binary())
def test_decoder_never_raises_on_bytes(data: bytes) -> None:
    assert decode(data).code is ErrorCode.BAD_FRAME  # type: ignore[union-attr]


@given(json_values)
def test_decoder_never_raises_on_json_values(value: Any) -> None:
    assert_frame_or_known_error(decode(json.dumps(value)))


@given(
    st.sampled_from([obj for obj, _ in CLIENT_EXAMPLES]),
    st.lists(st.tuples(st.sampled_from(["drop", "set", "add"]), st.text(max_size=8), json_values),
             max_size=3),
)
def test_decoder_never_raises_on_mutated_frames(
    frame: dict[str, Any], mutations: list[tuple[str, str, Any]]
) -> None:
    obj = dict(frame)
    for action, new_key, value in mutations:
        key = sorted(obj)[len(new_key) % len(obj)] if obj else new_key
        if action == "drop":
            obj.pop(key, None)
        elif action == "set":
            obj[key] = value
        else:
            obj[new_key] = value
    assert_frame_or_known_error(decode(json.dumps(obj), max_frame_bytes=4096, max_body_bytes=16))


# -- encoding server frames -------------------------------------------------------------------

SERVER_EXAMPLES: list[tuple[p.ServerFrame, dict[str, Any]]] = [
    (p.Registered(user="alice"), {"type": "registered", "user": "alice"}),
    (p.Welcome(user="alice", token="T"), {"type": "welcome", "user": "alice", "token": "T"}),
    (p.Pong(), {"type": "pong"}),
    (p.Accepted(ids=["i1", "i2"]), {"type": "accepted", "ids": ["i1", "i2"]}),
    (p.Deliver(messages=[
        p.Delivery(mid="m1", id="i1", from_="alice", to="bob", body="hi", ts=1.5),
        p.Delivery(mid="m2", id="i2", from_="alice", to="bob", body="", ts=2.0, group="g1",
                   media=p.Media(id="b1", mime="image/png", size=3)),
    ]), {"type": "deliver", "messages": [
        {"mid": "m1", "id": "i1", "from": "alice", "to": "bob", "body": "hi", "ts": 1.5},
        {"mid": "m2", "id": "i2", "from": "alice", "to": "bob", "body": "", "ts": 2.0,
         "group": "g1", "media": {"id": "b1", "mime": "image/png", "size": 3}},
    ]}),
    (p.Receipt(status="delivered", by="bob", ids=["i1"]),
     {"type": "receipt", "status": "delivered", "by": "bob", "ids": ["i1"]}),
    (p.Receipt(status="read", by="bob", ids=["i1"], group="g1"),
     {"type": "receipt", "status": "read", "by": "bob", "ids": ["i1"], "group": "g1"}),
    (p.ErrorFrame(code="bad_frame", message="m", ref=None),
     {"type": "error", "code": "bad_frame", "message": "m", "ref": None}),
    (p.ErrorFrame(code=ErrorCode.NOT_MEMBER, message="m", ref="i1"),
     {"type": "error", "code": "not_member", "message": "m", "ref": "i1"}),
    (p.Group(group="g1", name="n", owner="alice", members=["alice", "bob"]),
     {"type": "group", "group": "g1", "name": "n", "owner": "alice", "members": ["alice", "bob"]}),
    (p.GroupRemoved(group="g1"), {"type": "group_removed", "group": "g1"}),
    (p.Presence(user="bob", status="offline", last_seen=None),
     {"type": "presence", "user": "bob", "status": "offline", "last_seen": None}),
    (p.Presence(user="bob", status="online", last_seen=12.5),
     {"type": "presence", "user": "bob", "status": "online", "last_seen": 12.5}),
    (p.TypingNotice(from_="alice", state="composing"),
     {"type": "typing", "from": "alice", "state": "composing"}),
    (p.TypingNotice(from_="alice", state="paused", group="g1"),
     {"type": "typing", "from": "alice", "state": "paused", "group": "g1"}),
]


@pytest.mark.parametrize(("frame", "expected"), SERVER_EXAMPLES, ids=lambda x: str(x)[:40])
def test_encodes_server_frames_as_protocol_spells_them(
    frame: p.ServerFrame, expected: dict[str, Any]
) -> None:
    text = p.encode(frame)
    assert isinstance(text, str)
    assert json.loads(text) == expected
    assert p.decode_server_frame(text) == frame


def test_examples_cover_every_server_frame_type() -> None:
    assert {obj["type"] for _, obj in SERVER_EXAMPLES} == {
        msgspec.inspect.type_info(t).tag for t in p.ServerFrame.__args__  # type: ignore[attr-defined]
    }


def test_client_frames_round_trip() -> None:
    for obj, frame in CLIENT_EXAMPLES:
        assert decode(p.encode(frame)) == frame
        # Only fields left at their default are omitted.
        assert json.loads(p.encode(frame)).items() <= obj.items()


# -- errors ------------------------------------------------------------------------------------


def test_error_codes_are_exactly_the_protocols() -> None:
    assert {c.value for c in ErrorCode} == {
        "bad_frame", "unknown_type", "too_large", "not_authenticated", "bad_credentials",
        "user_exists", "no_such_user", "rate_limited", "unavailable", "not_member", "not_allowed",
        "no_such_group",
    }


def test_errors_become_error_frames() -> None:
    exc = p.ProtocolError(ErrorCode.NOT_ALLOWED, "owner only", "i9")
    assert str(exc) == "not_allowed: owner only"
    expected = {"type": "error", "code": "not_allowed", "message": "owner only", "ref": "i9"}
    assert json.loads(p.encode(exc.to_frame())) == expected
    error = FrameError(ErrorCode.BAD_FRAME, "nope")
    assert json.loads(p.encode(error.to_frame()))["ref"] is None
    event = ErrorEvent(ErrorCode.RATE_LIMITED, "slow down", "i1", close=False)
    assert json.loads(p.encode(event.to_frame()))["code"] == "rate_limited"


# -- session rules -----------------------------------------------------------------------------

SEND = '{"type": "send", "id": "i", "to": "bob", "body": "b"}'
TYPING = '{"type": "typing", "to": "bob", "state": "composing"}'


def logged_in(limits: SessionLimits | None = None) -> ServerSession:
    session = ServerSession(limits)
    session.authenticated("alice")
    return session


def test_only_session_frames_before_welcome() -> None:
    session = ServerSession()
    assert session.user is None
    for data in ('{"type": "ping"}', '{"type": "resume", "token": "t"}',
                 '{"type": "login", "user": "alice", "password": "pw"}',
                 '{"type": "register", "user": "alice", "password": "pw"}'):
        assert not isinstance(session.receive(data, 0.0), ErrorEvent)
    event = session.receive(SEND, 0.0)
    assert event == ErrorEvent(ErrorCode.NOT_AUTHENTICATED, "log in first", "i")
    session.authenticated("alice")
    assert session.user == "alice"
    assert session.receive(SEND, 0.0) == p.Send(id="i", to="bob", body="b")


def test_too_many_frames_before_welcome_close() -> None:
    session = ServerSession(SessionLimits(max_unauthenticated_frames=3))
    for _ in range(3):
        assert session.receive('{"type": "ping"}', 0.0) == p.Ping()
    event = session.receive('{"type": "ping"}', 0.0)
    assert isinstance(event, ErrorEvent) and event.close
    assert event.code is ErrorCode.NOT_AUTHENTICATED


def test_welcome_lifts_the_unauthenticated_frame_limit() -> None:
    session = ServerSession(SessionLimits(max_unauthenticated_frames=1))
    session.receive('{"type": "ping"}', 0.0)
    session.authenticated("alice")
    assert all(session.receive('{"type": "ping"}', 0.0) == p.Ping() for _ in range(5))


def test_repeated_bad_frames_close_but_a_good_one_resets_the_count() -> None:
    session = logged_in(SessionLimits(max_bad_frames=3))
    for _ in range(2):
        event = session.receive("junk", 0.0)
        assert isinstance(event, ErrorEvent) and not event.close
    assert session.receive('{"type": "ping"}', 0.0) == p.Ping()
    for _ in range(2):
        assert not session.receive('{"type": "nope"}', 0.0).close  # type: ignore[union-attr]
    event = session.receive(b"binary", 0.0)
    assert event == ErrorEvent(ErrorCode.BAD_FRAME, event.message, None, close=True)  # type: ignore[union-attr]
    # Once closing, it stays closing, whatever comes next.
    assert session.receive('{"type": "ping"}', 0.0) is event


def test_an_error_that_is_not_a_bad_frame_keeps_the_connection() -> None:
    session = logged_in()
    event = session.receive('{"type": "send", "id": "i", "to": "bob", "body": "' + "x" * 20000
                            + '"}', 0.0)
    assert event == ErrorEvent(ErrorCode.TOO_LARGE, "body is over 16384 bytes", "i", close=False)


def test_send_rate_limit_with_burst_and_refill() -> None:
    session = logged_in(SessionLimits(messages_per_second=2.0, message_burst=3))
    assert all(isinstance(session.receive(SEND, 10.0), p.Send) for _ in range(3))
    event = session.receive(SEND, 10.0)
    assert event == ErrorEvent(ErrorCode.RATE_LIMITED, event.message, "i", close=False)  # type: ignore[union-attr]
    assert isinstance(session.receive(SEND, 10.4), ErrorEvent)  # 0.8 of a token: not yet
    assert isinstance(session.receive(SEND, 10.5), p.Send)  # one token back after 0.5 s
    assert isinstance(session.receive(SEND, 10.5), ErrorEvent)
    # Other frames are not limited, and a long pause refills only up to the burst.
    assert session.receive('{"type": "ack", "mids": ["m"]}', 10.5) == p.Ack(mids=["m"])
    results = [session.receive(SEND, 1000.0) for _ in range(4)]
    assert [isinstance(r, p.Send) for r in results] == [True, True, True, False]


def test_typing_has_its_own_bucket() -> None:
    session = logged_in(SessionLimits(typing_per_second=1.0, typing_burst=1, message_burst=1))
    assert isinstance(session.receive(TYPING, 0.0), p.Typing)
    assert session.receive(TYPING, 0.0).code is ErrorCode.RATE_LIMITED  # type: ignore[union-attr]
    assert isinstance(session.receive(SEND, 0.0), p.Send)
    assert isinstance(session.receive(TYPING, 1.0), p.Typing)


def test_buckets_are_made_on_first_use_and_limit_as_if_made_at_the_start() -> None:
    # Memory per idle user: no buckets until a send or typing frame; a full bucket made late
    # is the same as one made with the session.
    session = logged_in(SessionLimits(messages_per_second=1.0, message_burst=2))
    assert session._sends is None and session._typing is None
    assert session.receive('{"type": "ack", "mids": ["m"]}', 0.0) == p.Ack(mids=["m"])
    assert session._sends is None and session._typing is None
    assert [isinstance(session.receive(SEND, 50.0), p.Send) for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert session._typing is None


def test_token_bucket_ignores_a_clock_going_back() -> None:
    bucket = p.TokenBucket(rate=1.0, burst=1)
    assert bucket.take(5.0)
    assert not bucket.take(4.0)
    assert not bucket.take(5.5)
    assert bucket.take(6.0)
    with pytest.raises(ValueError):
        p.TokenBucket(rate=0, burst=1)


def test_exports() -> None:
    public = {name for name in dir(p) if not name.startswith("_")}
    for name in public - {"annotations"}:
        assert getattr(p, name) is not None
    assert {"decode_client_frame", "encode", "ServerSession", "ErrorCode", "ProtocolError",
            "FrameError", "ErrorEvent", "Send", "Deliver", "Delivery"} <= public


@settings(max_examples=50)
@given(st.lists(st.sampled_from([SEND, TYPING, "junk", '{"type": "ping"}', b"x"]), max_size=40))
def test_session_never_raises(frames: list[str | bytes]) -> None:
    session = ServerSession()
    for i, data in enumerate(frames):
        if i == 3:
            session.authenticated("alice")
        event = session.receive(data, i * 0.01)
        assert isinstance(event, ErrorEvent | p.ClientFrame)
