"""The chat page (``actorchat/web/``) in real headless Chromium, driven by Playwright.

One node runs as a subprocess (``python -m actorchat``) for the module; each test opens one
browser context per user (separate storage, like two people on two machines) and registers
fresh users through the page itself. Waits are Playwright's auto-waiting expectations, never
sleeps. Screenshots go to ``tests/artifacts/`` (not committed).

The browser is Debian's Chromium (``/usr/bin/chromium``; a browser download does not work
here). Where none is installed the tests skip, saying so, unless ``ACTORCHAT_REQUIRE_BROWSER=1``
(set by ``.ci/run`` where it could install one): then they fail.

Presence, groups and media are tested only where the node serves them: each test asks the node
first (a ``subscribe`` answered by ``presence``, a ``group_create`` answered by ``group``, a
``POST /media`` that is not 404) and skips with the reason otherwise.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import struct
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from node_harness import ROOT, NodeProcess
from websockets.sync.client import connect

from actorchat.config import Settings

ARTIFACTS = ROOT / "tests" / "artifacts"
REQUIRE_ENV = "ACTORCHAT_REQUIRE_BROWSER"
READ_BLUE = "rgb(83, 189, 235)"  # --blue in app.css: the read ticks

try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
    # Room for a loaded machine (each wait still ends as soon as its condition holds).
    expect.set_options(timeout=10_000)
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]

pytestmark = pytest.mark.slow


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _no_browser(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires the browser tests to run")
    pytest.skip(f"{reason} (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        _no_browser("the Python package playwright is not installed")
    executable = _chromium()
    if executable is None:
        _no_browser("no Chromium at /usr/bin/chromium or on PATH")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    tmp = tmp_path_factory.mktemp("web")
    options: dict[str, Any] = {"media_dir": str(tmp / "media")}
    if hasattr(Settings(), "presence_grace"):
        options["presence_grace"] = 1.0  # "last seen" within a second of leaving
    proc = NodeProcess(tmp / "web.db", tmp / "node.log", **options)
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def url(node: NodeProcess) -> str:
    return f"http://127.0.0.1:{node.port}/"


_names = itertools.count(1)


def _name(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 10000}x{next(_names)}"


@dataclass
class User:
    name: str
    context: BrowserContext
    page: Page
    errors: list[str]

    def open_chat(self, key: str) -> None:
        """Open a conversation: ``u:NAME`` or ``g:GROUP`` (from the list, or started by name)."""
        item = self.page.locator(f'li.conv[data-key="{key}"]')
        if key.startswith("u:") and item.count() == 0:
            self.page.fill("#new-chat-user", key[2:])
            self.page.press("#new-chat-user", "Enter")
        else:
            item.click()
        expect(self.page.locator("#peer-name")).to_be_visible()

    def send(self, text: str) -> None:
        self.page.fill("#text", text)
        self.page.press("#text", "Enter")

    def bubble(self, text: str, *, out: bool) -> Any:
        kind = "out" if out else "in"
        return self.page.locator(f"li.msg.{kind}", has_text=text)

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


@pytest.fixture
def users(browser: Browser, url: str) -> Iterator[Any]:
    """``users(prefix)``: a new user registered through the page in a context of its own."""
    made: list[User] = []

    def make(prefix: str) -> User:
        context = browser.new_context(viewport={"width": 1000, "height": 620})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # The page's frames in and out, shown by pytest when a test fails.
        context.add_init_script("window.actorchatDebug = true")
        name = _name(prefix)
        page.on("console", lambda m: print(f"{time.monotonic():.3f} [{name}] {m.text}"))
        page.goto(url)
        page.fill("#auth-user", name)
        page.fill("#auth-password", f"pw-{name}")
        page.click("#register")
        expect(page.locator("#conn")).to_have_attribute("data-state", "online")
        expect(page.locator("#me-name")).to_have_text(name)
        user = User(name, context, page, errors)
        made.append(user)
        return user

    yield make
    for user in made:
        user.context.close()
    # An uncaught exception in the page's JavaScript fails the test.
    assert [e for user in made for e in user.errors] == []


# -- what the node serves (presence, groups and media land with their own issues) --------------
def _login(ws: Any) -> str:
    name = _name("probe")
    for frame in (
        {"type": "register", "user": name, "password": "pw"},
        {"type": "login", "user": name, "password": "pw"},
    ):
        ws.send(json.dumps(frame))
        json.loads(ws.recv(timeout=5))
    return name


def _answer(ws: Any, frame: dict[str, Any], wanted: str) -> bool:
    """Send ``frame``: True if ``wanted`` comes back before an error about it."""
    ws.send(json.dumps(frame))
    while True:
        reply = json.loads(ws.recv(timeout=5))
        if reply["type"] == wanted:
            return True
        if reply["type"] == "error" and reply.get("ref") == frame["id"]:
            return False


@pytest.fixture(scope="module")
def features(node: NodeProcess) -> dict[str, bool]:
    with connect(f"ws://127.0.0.1:{node.port}/", open_timeout=5) as ws:
        name = _login(ws)
        presence = _answer(ws, {"type": "subscribe", "id": "p", "users": [name]}, "presence")
        groups = _answer(
            ws, {"type": "group_create", "id": "g", "name": "probe", "members": []}, "group"
        )
    try:
        urllib.request.urlopen(
            urllib.request.Request(f"http://127.0.0.1:{node.port}/media", b"x", method="POST"),
            timeout=5,
        )
        media = True
    except urllib.error.HTTPError as e:
        media = e.code != 404
    return {"presence": presence, "groups": groups, "media": media}


def _needs(features: dict[str, bool], feature: str) -> None:
    if not features[feature]:
        pytest.skip(f"the node does not serve {feature} yet")


# -- 1:1 messages, ticks, typing, reconnect ---------------------------------------------------
def test_ticks_go_from_sent_to_delivered_to_read(users: Any, url: str) -> None:
    alice, bob = users("alice"), users("bob")
    # Bob goes away: Alice's message is stored, so accepted, but not delivered (one tick).
    bob.page.goto("about:blank")
    alice.open_chat(f"u:{bob.name}")
    alice.send("Hello Bob!")
    mine = alice.bubble("Hello Bob!", out=True)
    expect(mine).to_have_attribute("data-status", "sent")
    expect(mine.locator("svg.ticks")).to_have_attribute("aria-label", "sent")
    alice.shot("ticks-1-sent")

    # Bob comes back: the page resumes with its stored token, gets the message and acks it.
    bob.page.goto(url)
    expect(bob.page.locator("#conn")).to_have_attribute("data-state", "online")
    expect(mine).to_have_attribute("data-status", "delivered")
    expect(mine.locator("svg.ticks")).to_have_attribute("aria-label", "delivered")
    conv = bob.page.locator(f'li.conv[data-key="u:{alice.name}"]')
    expect(conv.locator(".badge")).to_have_text("1")
    alice.shot("ticks-2-delivered")

    # Bob opens the conversation: read, and Alice's ticks turn blue.
    bob.open_chat(f"u:{alice.name}")
    expect(mine).to_have_attribute("data-status", "read")
    expect(mine.locator("svg.ticks")).to_have_css("fill", READ_BLUE)
    expect(conv.locator(".badge")).to_have_count(0)
    expect(bob.bubble("Hello Bob!", out=False)).to_have_count(1)

    # And back: Bob is looking, Alice is not (she has the chat open too: read at once).
    bob.send("Hi Alice, how are you?")
    theirs = bob.bubble("Hi Alice", out=True)
    expect(theirs).to_have_attribute("data-status", "read")
    expect(alice.bubble("Hi Alice, how are you?", out=False)).to_have_count(1)
    alice.shot("ticks-3-read")


def test_typing_is_shown_while_composing_and_cleared(users: Any) -> None:
    alice, bob = users("alice"), users("bob")
    alice.open_chat(f"u:{bob.name}")
    alice.send("ping")
    expect(bob.page.locator(f'li.conv[data-key="u:{alice.name}"]')).to_be_visible()
    bob.open_chat(f"u:{alice.name}")

    alice.page.locator("#text").press_sequentially("I am wri")
    expect(bob.page.locator("#peer-status")).to_have_text("typing…")
    expect(bob.page.locator(f'li.conv[data-key="u:{alice.name}"] .preview')).to_have_text(
        "typing…"
    )
    bob.shot("typing")
    # Clearing the field says "paused"; sending would too.
    alice.page.fill("#text", "")
    expect(bob.page.locator("#peer-status")).not_to_have_text("typing…")
    alice.page.locator("#text").press_sequentially("done")
    expect(bob.page.locator("#peer-status")).to_have_text("typing…")
    alice.page.press("#text", "Enter")
    expect(bob.page.locator("#peer-status")).not_to_have_text("typing…")
    expect(bob.bubble("done", out=False)).to_have_count(1)


def test_the_page_resumes_after_its_socket_drops_without_losing_or_repeating(
    users: Any,
) -> None:
    alice, bob = users("alice"), users("bob")
    alice.open_chat(f"u:{bob.name}")
    alice.send("before the drop")
    expect(alice.bubble("before the drop", out=True)).to_have_attribute("data-status", "delivered")
    bob.open_chat(f"u:{alice.name}")

    # The network goes, and the socket with it.
    alice.context.set_offline(True)
    alice.page.evaluate("window.actorchat.connection.drop()")
    expect(alice.page.locator("#conn")).to_have_attribute("data-state", "offline")
    # Written while offline: kept in the outbox, a clock for a tick.
    alice.send("written offline")
    offline = alice.bubble("written offline", out=True)
    expect(offline).to_have_attribute("data-status", "pending")
    # Meanwhile Bob writes: stored for Alice (one tick on his side).
    for text in ("are you there?", "hello?"):
        bob.send(text)
        expect(bob.bubble(text, out=True)).to_have_attribute("data-status", "sent")
    alice.shot("reconnect-1-offline")

    # The network comes back: resume with the token, resend the outbox with the same id.
    alice.context.set_offline(False)
    expect(alice.page.locator("#conn")).to_have_attribute("data-state", "online")
    expect(offline).to_have_attribute("data-status", "read")
    expect(bob.bubble("written offline", out=False)).to_have_count(1)
    for text in ("are you there?", "hello?"):
        expect(alice.bubble(text, out=False)).to_have_count(1)
        expect(bob.bubble(text, out=True)).to_have_attribute("data-status", "read")
    expect(alice.page.locator("#auth")).to_be_hidden()
    alice.shot("reconnect-2-resumed")

    # Twice more, quickly: still nothing lost, nothing twice.
    for i in range(2):
        alice.page.evaluate("window.actorchat.connection.drop()")
        alice.send(f"burst {i}")
        bob.send(f"reply {i}")
    for i in range(2):
        expect(alice.bubble(f"burst {i}", out=True)).to_have_attribute("data-status", "read")
        expect(bob.bubble(f"burst {i}", out=False)).to_have_count(1)
        expect(alice.bubble(f"reply {i}", out=False)).to_have_count(1)

    # A reload keeps the conversation (stored on the device) and shows nothing twice.
    alice.page.reload()
    expect(alice.page.locator("#conn")).to_have_attribute("data-state", "online")
    alice.open_chat(f"u:{bob.name}")
    expect(alice.page.locator("li.msg")).to_have_count(8)
    expect(bob.page.locator("li.msg")).to_have_count(8)


def test_a_bad_password_and_a_taken_name_are_said_on_the_form(browser: Browser, url: str,
                                                               users: Any) -> None:
    alice = users("alice")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url)
        page.fill("#auth-user", alice.name)
        page.fill("#auth-password", "wrong")
        page.click("#login")
        expect(page.locator("#auth-error")).to_have_text("Wrong name or password.")
        page.click("#register")
        expect(page.locator("#auth-error")).to_have_text("That name is taken.")
        expect(page.locator("#chat")).to_be_hidden()
    finally:
        context.close()


def test_a_message_to_nobody_is_marked_not_sent(users: Any) -> None:
    alice = users("alice")
    alice.open_chat(f"u:{_name('nobody')}")
    alice.send("anyone?")
    mine = alice.bubble("anyone?", out=True)
    expect(mine).to_have_attribute("data-status", "failed")
    expect(mine).to_have_attribute("title", re.compile(r"^no_such_user: "))
    expect(alice.page.locator("#toast")).to_contain_text("Not sent")


def test_a_second_window_takes_the_session_over_and_the_first_does_not_fight_back(
    browser: Browser, url: str, users: Any
) -> None:
    alice = users("alice")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url)
        page.fill("#auth-user", alice.name)
        page.fill("#auth-password", f"pw-{alice.name}")
        page.click("#login")
        expect(page.locator("#conn")).to_have_attribute("data-state", "online")
        # The first window is told (close code 4001) and waits to be asked: no reconnect loop.
        conn = alice.page.locator("#conn")
        expect(conn).to_have_attribute("data-state", "replaced")
        expect(conn).to_contain_text("open in another window")
        expect(page.locator("#conn")).to_have_attribute("data-state", "online")
        # "use here" takes it back.
        conn.get_by_role("button", name="use here").click()
        expect(conn).to_have_attribute("data-state", "online")
        expect(page.locator("#conn")).to_have_attribute("data-state", "replaced")
    finally:
        context.close()


# -- presence, groups, media: run once the node serves them -----------------------------------
def test_presence_shows_online_then_last_seen(users: Any, features: dict[str, bool]) -> None:
    _needs(features, "presence")
    alice, bob = users("alice"), users("bob")
    bob.open_chat(f"u:{alice.name}")
    status = bob.page.locator("#peer-status")
    expect(status).to_have_text("online")
    alice.page.close()
    # After the node's grace period (a few seconds) Alice is offline with her last seen time.
    last_seen = re.compile(r"^last seen (today|yesterday) at \d\d:\d\d$")
    expect(status).to_have_text(last_seen, timeout=20_000)
    bob.shot("presence-last-seen")


def test_a_group_conversation(users: Any, features: dict[str, bool]) -> None:
    _needs(features, "groups")
    alice, bob, carol = users("alice"), users("bob"), users("carol")
    alice.page.click("#new-group summary")
    alice.page.fill("#new-group-name", "Weekend")
    alice.page.fill("#new-group-members", f"{bob.name}, {carol.name}")
    alice.page.click("#new-group-form button")
    for user in (alice, bob, carol):
        expect(user.page.locator("li.conv", has_text="Weekend")).to_have_count(1)
    group_key = alice.page.locator("li.conv", has_text="Weekend").get_attribute("data-key")
    assert group_key and group_key.startswith("g:")
    alice.open_chat(group_key)
    expect(alice.page.locator("#peer-status")).to_contain_text(bob.name)
    alice.send("Hike on Saturday?")
    mine = alice.bubble("Hike on Saturday?", out=True)
    expect(mine).to_have_attribute("data-status", "delivered")
    # Read by one member is not read by the group: blue only when both have read it.
    bob.open_chat(group_key)
    expect(bob.bubble("Hike on Saturday?", out=False).locator(".author")).to_have_text(alice.name)
    expect(mine).to_have_attribute("data-status", "delivered")
    carol.open_chat(group_key)
    expect(mine).to_have_attribute("data-status", "read")
    bob.page.locator("#text").press_sequentially("Sure")
    expect(carol.page.locator("#peer-status")).to_have_text(f"{bob.name} is typing…")
    bob.page.press("#text", "Enter")
    expect(carol.bubble("Sure", out=False)).to_have_count(1)
    expect(alice.bubble("Sure", out=False)).to_have_count(1)
    carol.shot("group")


def _png(width: int, height: int) -> bytes:
    """A small picture (a sunset over the sea), made here: no image library needed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    def pixel(x: int, y: int) -> bytes:
        horizon = height * 0.62
        if (x - width / 2) ** 2 + (y - horizon) ** 2 < (height / 5) ** 2 and y < horizon:
            return bytes((255, 214, 90))
        if y < horizon:
            t = y / horizon
            return bytes((255, int(94 + 110 * t), int(58 + 54 * t)))
        t = (y - horizon) / (height - horizon)
        return bytes((int(40 - 20 * t), int(60 - 30 * t), int(120 - 40 * t)))

    rows = b"".join(
        b"\x00" + b"".join(pixel(x, y) for x in range(width)) for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_a_picture_goes_through_media(users: Any, features: dict[str, bool]) -> None:
    _needs(features, "media")
    alice, bob = users("alice"), users("bob")
    alice.open_chat(f"u:{bob.name}")
    alice.send("Look at this sunset!")
    alice.page.set_input_files(
        "#attach",
        files=[{"name": "sunset.png", "mimeType": "image/png", "buffer": _png(240, 160)}],
    )
    mine = alice.page.locator("li.msg.out").last
    expect(mine.locator("img.picture")).to_be_visible()
    expect(mine).to_have_attribute("data-status", "delivered")
    bob.open_chat(f"u:{alice.name}")
    picture = bob.page.locator("li.msg.in img.picture")
    expect(picture).to_be_visible()
    # Fetched with the bearer token into a blob: URL, and decoded (so the bytes were right).
    expect(picture).to_have_attribute("src", re.compile(r"^blob:"))
    expect(picture).to_have_js_property("naturalWidth", 240)
    expect(mine).to_have_attribute("data-status", "read")
    bob.send("Wow, beautiful! Where is that?")
    expect(alice.bubble("Wow, beautiful!", out=False)).to_have_count(1)
    bob.page.locator("#text").press_sequentially("On the")
    expect(alice.page.locator("#peer-status")).to_have_text("typing…")
    bob.shot("media")
    alice.shot("chat-page")  # the README's picture (docs/chat-page.png)


STATE_RULES = """async () => {
  const { ChatState } = await import("/app/js/state.js");
  const { backoffDelay } = await import("/app/js/connection.js");
  const storage = new Map();
  const fake = {
    getItem: (k) => storage.get(k) ?? null,
    setItem: (k, v) => storage.set(k, v),
    removeItem: (k) => storage.delete(k),
  };
  const out = {};
  let s = new ChatState("me", fake);
  const item = { mid: "1", id: "a", from: "bob", to: "me", body: "hi", ts: 1 };
  out.first = s.deliver([item]).length;
  out.again = s.deliver([{ ...item, mid: "7" }]).length;
  out.shown = s.convs.get("u:bob").msgs.length;
  out.newMid = s.convs.get("u:bob").msgs[0].mid;
  out.read = s.takeUnread("u:bob");
  out.readAgain = s.takeUnread("u:bob");

  const m = s.compose("u:bob", "yo");
  out.frame = s.sendFrame(m.id);
  s.receipt({ status: "read", by: "bob", ids: [m.id] });
  s.accepted([m.id]);
  out.neverBack = m.status;
  const p = s.compose("u:bob", "later");
  s.compose("u:bob", "", { uploading: true, file: {} });
  s = new ChatState("me", fake); // the page reloaded
  out.outbox = s.pendingFrames().map((f) => f.body);
  out.interrupted = s.convs.get("u:bob").msgs.at(-1).status;
  out.stillSeen = s.deliver([item]).length;
  s.accepted([p.id]);
  out.afterAccept = s.pendingFrames().length;

  s.group({ group: "G", name: "g", owner: "me", members: ["me", "x", "y"] });
  const g = s.compose("g:G", "all");
  out.groupFrame = s.sendFrame(g.id);
  s.accepted([g.id]);
  s.receipt({ status: "delivered", by: "x", ids: [g.id], group: "G" });
  out.oneOfTwo = g.status;
  s.receipt({ status: "read", by: "y", ids: [g.id], group: "G" });
  out.twoOfTwo = g.status;
  s.receipt({ status: "read", by: "x", ids: [g.id], group: "G" });
  out.allRead = g.status;
  out.backoff = [0, 1, 2, 10].map((n) => [backoffDelay(n, () => 0), backoffDelay(n, () => 1)]);
  return out;
}"""


def test_the_page_state_rules(browser: Browser, url: str) -> None:
    """state.js's rules, run in the page: dedupe by (from, id), ticks that never go back, the
    outbox kept across a reload, group ticks that wait for every member, the backoff."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url)
        out = page.evaluate(STATE_RULES)
    finally:
        context.close()
    assert (out["first"], out["again"], out["shown"], out["newMid"]) == (1, 0, 1, "7")
    assert (out["read"], out["readAgain"]) == (["7"], [])
    assert out["frame"] == {"type": "send", "id": out["frame"]["id"], "body": "yo", "to": "bob"}
    assert out["neverBack"] == "read"
    assert out["outbox"] == ["later"] and out["interrupted"] == "failed"
    assert out["stillSeen"] == 0 and out["afterAccept"] == 0
    assert "group" in out["groupFrame"] and "to" not in out["groupFrame"]
    assert (out["oneOfTwo"], out["twoOfTwo"], out["allRead"]) == ("sent", "delivered", "read")
    assert out["backoff"] == [[250, 500], [500, 1000], [1000, 2000], [15000, 30000]]


def test_the_content_security_policy_holds(browser: Browser, url: str) -> None:
    """The page runs only its own files: a script injected inline is refused."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url)
        expect(page.locator("#auth")).to_be_visible()
        with page.expect_console_message(lambda m: "Content Security Policy" in m.text):
            page.evaluate(
                "() => { const s = document.createElement('script');"
                " s.textContent = 'window.injected = 1'; document.body.append(s); }"
            )
        assert page.evaluate("window.injected") is None
    finally:
        context.close()
