// The chat page: a client of docs/protocol.md like any other, over one WebSocket to the node
// that served it. Wiring of the DOM, the connection (connection.js) and the chat's data
// (state.js); pictures through media.js.
//
// The rules it keeps (docs/protocol.md): resume with the stored token after every drop; resend
// every message not yet `accepted`, with the same id; store, then `ack`, every delivered mid
// (duplicates too: they are dropped by (from, id), but must still be acknowledged); `read` what
// the open conversation shows while the page is visible.

import { Connection } from "./connection.js";
import { MediaCache, upload } from "./media.js";
import { ChatState, userKey } from "./state.js";
import { avatar, clock, el, lastSeen, sizeText, ticks } from "./view.js";

const TOKEN = "actorchat:token";
const USER = "actorchat:user";
const USER_NAME = /^[A-Za-z0-9_.\-]{1,64}$/;
const TYPING_PAUSE = 3000;
const RETRY_LATER = new Set(["unavailable", "rate_limited"]);

const $ = (id) => document.getElementById(id);

class App {
  constructor() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.connection = new Connection(`${scheme}//${location.host}/`);
    this.state = null;
    this.open = null; // key of the conversation on screen
    this.pendingAuth = null; // {kind: "login" | "register", user, password} until welcome
    this.media = new MediaCache(() => localStorage.getItem(TOKEN));
    this.rendered = new Map(); // message key -> <li> of the open conversation
    this.typingSent = null; // {key, at} while we told someone we are composing
    this.typingTimer = null;
    this.retryTimer = null;
    this.frameSeq = 0;
    this.features = { presence: true };

    this.connection.addEventListener("open", () => this.hello());
    this.connection.addEventListener("frame", (e) => this.onFrame(e.detail));
    this.connection.addEventListener("state", () => this.renderConnection());
    this.bindDom();

    const token = localStorage.getItem(TOKEN);
    const user = localStorage.getItem(USER);
    if (token && user) {
      this.enter(user); // show the chat kept on this device at once; resume in the background
      this.connection.start();
    } else {
      this.showAuth();
    }
  }

  // -- session -------------------------------------------------------------------------------
  hello() {
    const auth = this.pendingAuth;
    if (auth) {
      this.connection.write({ type: auth.kind, user: auth.user, password: auth.password });
      return;
    }
    const token = localStorage.getItem(TOKEN);
    if (token) this.connection.write({ type: "resume", token });
  }

  enter(user) {
    if (!this.state || this.state.user !== user) {
      this.state = new ChatState(user);
      this.open = null;
      this.media.clear();
      this.rendered.clear();
      $("messages").replaceChildren();
    }
    $("auth").hidden = true;
    $("chat").hidden = false;
    $("me-name").textContent = user;
    avatar($("me-avatar"), user);
    this.renderList();
    this.renderOpen();
    this.renderConnection();
  }

  showAuth(message = "") {
    $("chat").hidden = true;
    $("auth").hidden = false;
    $("auth-error").textContent = message;
    $("auth-user").focus();
  }

  authenticate(kind) {
    const user = $("auth-user").value.trim();
    const password = $("auth-password").value;
    if (!USER_NAME.test(user)) {
      $("auth-error").textContent = "A name is 1 to 64 letters, digits, _ - or .";
      return;
    }
    if (!password) {
      $("auth-error").textContent = "Enter a password.";
      return;
    }
    $("auth-error").textContent = "";
    this.pendingAuth = { kind, user, password };
    this.connection.stop();
    this.connection.start();
  }

  welcome(frame) {
    localStorage.setItem(TOKEN, frame.token);
    localStorage.setItem(USER, frame.user);
    this.pendingAuth = null;
    $("auth-password").value = "";
    this.enter(frame.user);
    const state = this.state;
    // Everything not yet accepted goes again, with the same ids: the node drops repeats.
    this.flushOutbox();
    const peers = state.peers();
    if (peers.length && this.features.presence) this.subscribe(peers);
    this.markRead();
    this.resumeUploads();
  }

  logout() {
    this.connection.stop();
    if (this.state) this.state.clear();
    this.state = null;
    this.open = null;
    this.media.clear();
    this.rendered.clear();
    $("messages").replaceChildren();
    localStorage.removeItem(TOKEN);
    localStorage.removeItem(USER);
    $("conversations").replaceChildren();
    this.showAuth();
  }

  // -- frames from the node ------------------------------------------------------------------
  onFrame(frame) {
    const state = this.state;
    switch (frame.type) {
      case "registered":
        if (this.pendingAuth) {
          this.pendingAuth = { ...this.pendingAuth, kind: "login" };
          this.hello();
        }
        return;
      case "welcome":
        this.welcome(frame);
        return;
      case "error":
        this.onError(frame);
        return;
    }
    if (!state) return;
    switch (frame.type) {
      case "accepted":
        state.accepted(frame.ids);
        this.renderOpen();
        break;
      case "receipt":
        state.receipt(frame);
        this.renderOpen();
        break;
      case "deliver": {
        const fresh = state.deliver(frame.messages);
        // Stored first (state.deliver saved them), then acknowledged: every mid, repeats too.
        const mids = frame.messages.map((m) => m.mid);
        for (let i = 0; i < mids.length; i += 1000) {
          this.connection.send({ type: "ack", mids: mids.slice(i, i + 1000) });
        }
        if (this.features.presence && fresh.some((m) => !m.group && !state.presence.has(m.from))) {
          this.subscribe([...new Set(fresh.filter((m) => !m.group).map((m) => m.from))]);
        }
        this.markRead();
        this.renderList();
        this.renderOpen();
        break;
      }
      case "typing":
        this.onTyping(frame);
        break;
      case "presence":
        this.features.presence = true;
        state.setPresence(frame);
        this.renderHeader();
        break;
      case "group":
        state.group(frame);
        this.renderList();
        this.renderOpen();
        break;
      case "group_removed":
        state.groupRemoved(frame.group);
        this.renderList();
        this.renderOpen();
        break;
      default:
        console.debug("actorchat: frame not shown", frame);
    }
  }

  onError(frame) {
    const ref = frame.ref || "";
    if (!this.connection.welcomed && RETRY_LATER.has(frame.code)) {
      // The node cannot open a session now (its store is down): try again with backoff.
      this.connection.drop();
      return;
    }
    if (!this.connection.welcomed) {
      // Register, login or resume failed: back to the form.
      if (this.pendingAuth || frame.code === "bad_credentials") {
        const resumed = !this.pendingAuth;
        this.pendingAuth = null;
        this.connection.stop();
        if (resumed) {
          localStorage.removeItem(TOKEN);
          this.showAuth("Your session has expired: log in again.");
        } else {
          this.showAuth(
            frame.code === "user_exists" ? "That name is taken."
              : frame.code === "bad_credentials" ? "Wrong name or password."
                : frame.message,
          );
        }
        return;
      }
    }
    if (ref.startsWith("sub-") || ref.startsWith("typ-")) {
      if (ref.startsWith("sub-") && (frame.code === "not_allowed" || frame.code === "unknown_type")) {
        this.features.presence = false; // the node has no presence
      }
      console.debug("actorchat:", frame.code, frame.message);
      return;
    }
    if (this.state && this.state.mine.has(ref)) {
      if (RETRY_LATER.has(frame.code)) {
        this.scheduleRetry();
      } else {
        this.state.failed(ref, frame.code, frame.message);
        this.toast(`Not sent: ${frame.message}`);
      }
      this.renderOpen();
      return;
    }
    this.toast(frame.message || frame.code);
  }

  onTyping(frame) {
    const key = this.state.setTyping(frame);
    this.renderList();
    if (key === this.open) this.renderHeader();
    // A composing notice runs out by itself if its "paused" never comes.
    setTimeout(() => {
      if (this.state && !this.state.typingIn(key)) {
        this.renderList();
        if (key === this.open) this.renderHeader();
      }
    }, 6100);
  }

  // -- sending -------------------------------------------------------------------------------
  nextRef(prefix) {
    this.frameSeq += 1;
    return `${prefix}-${this.frameSeq}`;
  }

  subscribe(users) {
    if (!users.length) return;
    this.connection.send({ type: "subscribe", users, id: this.nextRef("sub") });
  }

  flushOutbox() {
    for (const frame of this.state.pendingFrames()) {
      if (!this.connection.send(frame)) return; // the socket went: the next welcome resends
    }
  }

  scheduleRetry() {
    if (this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.state) this.flushOutbox();
    }, 2000);
  }

  sendText(body) {
    if (!this.open || !body) return;
    const msg = this.state.compose(this.open, body);
    this.stopTyping();
    const frame = this.state.sendFrame(msg.id);
    this.connection.send(frame); // if offline it waits in the outbox for the next welcome
    this.renderList();
    this.renderOpen(true);
  }

  async sendPicture(file) {
    if (!this.open || !file) return;
    const state = this.state;
    const msg = state.compose(this.open, "", {
      picture: true,
      uploading: true,
      file,
      localUrl: URL.createObjectURL(file),
      localMime: file.type,
    });
    this.renderList();
    this.renderOpen(true);
    await this.uploadOne(msg);
  }

  async uploadOne(msg) {
    if (msg.busy) return; // already on its way
    const state = this.state;
    const token = localStorage.getItem(TOKEN);
    msg.busy = true;
    try {
      msg.media = await upload(msg.file, token);
    } catch (e) {
      if (e.status === 0) return; // offline: tried again after the next welcome
      state.failed(msg.id, "media", e.message);
      this.toast(`Picture not sent: ${e.message}`);
      this.renderOpen();
      return;
    } finally {
      msg.busy = false;
    }
    msg.uploading = false;
    msg.file = null;
    state.save();
    this.media.urls.set(msg.media.id, Promise.resolve(msg.localUrl));
    this.connection.send(state.sendFrame(msg.id));
  }

  resumeUploads() {
    for (const id of this.state.outbox) {
      const msg = this.state.mine.get(id);
      if (msg && msg.uploading && msg.file) this.uploadOne(msg);
    }
    this.renderOpen();
  }

  retry(msg) {
    if (msg.status !== "failed") return;
    if (msg.picture && !msg.media && !msg.file) {
      this.toast("The picture is no longer here: send it again.");
      return;
    }
    this.state.retry(msg.id);
    const li = this.rendered.get(`${msg.from}\n${msg.id}`);
    if (li) li.removeAttribute("title");
    if (msg.picture && !msg.media) {
      msg.uploading = true;
      this.uploadOne(msg);
    } else {
      this.connection.send(this.state.sendFrame(msg.id));
    }
    this.renderOpen();
  }

  typingTarget(key) {
    return key.startsWith("g:") ? { group: key.slice(2) } : { to: key.slice(2) };
  }

  composing() {
    const key = this.open;
    if (!key) return;
    const now = Date.now();
    if (!$("text").value) {
      this.stopTyping();
      return;
    }
    if (!this.typingSent || this.typingSent.key !== key || now - this.typingSent.at > TYPING_PAUSE) {
      this.stopTyping();
      const sent = this.connection.send({
        type: "typing", state: "composing", id: this.nextRef("typ"), ...this.typingTarget(key),
      });
      if (sent) this.typingSent = { key, at: now };
    }
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => this.stopTyping(), TYPING_PAUSE);
  }

  stopTyping() {
    clearTimeout(this.typingTimer);
    const sent = this.typingSent;
    this.typingSent = null;
    if (sent) {
      this.connection.send({
        type: "typing", state: "paused", id: this.nextRef("typ"), ...this.typingTarget(sent.key),
      });
    }
  }

  markRead() {
    const key = this.open;
    if (!key || !this.state || document.visibilityState !== "visible") return;
    if (!this.connection.welcomed) return; // read after the next welcome
    const mids = this.state.takeUnread(key);
    for (let i = 0; i < mids.length; i += 1000) {
      this.connection.send({ type: "read", mids: mids.slice(i, i + 1000) });
    }
    if (mids.length) this.renderList();
  }

  // -- conversations -------------------------------------------------------------------------
  openConversation(key) {
    if (this.open !== key) this.stopTyping();
    this.open = key;
    const conv = this.state.conversation(key);
    if (conv.kind === "user" && this.features.presence && !this.state.presence.has(conv.peer)) {
      this.subscribe([conv.peer]);
    }
    this.rendered.clear();
    $("messages").replaceChildren();
    this.markRead();
    this.renderList();
    this.renderOpen(true);
    $("text").focus();
  }

  createGroup(name, members) {
    this.connection.send({
      type: "group_create", name, members, id: this.nextRef("grp"),
    }) || this.toast("Offline: try again when connected.");
  }

  // -- rendering -----------------------------------------------------------------------------
  renderConnection() {
    const node = $("conn");
    const state = this.connection.state;
    node.dataset.state = state;
    node.replaceChildren();
    if (state === "online") node.textContent = "online";
    else if (state === "connecting") node.textContent = "connecting…";
    else if (state === "replaced") {
      node.append("open in another window ");
      node.append(el("button", {
        class: "link", text: "use here", onclick: () => this.connection.start(),
      }));
    } else {
      node.append("offline, reconnecting ");
      node.append(el("button", {
        class: "link", text: "now", onclick: () => this.connection.soon(),
      }));
    }
  }

  renderList() {
    if (!this.state) return;
    const list = $("conversations");
    const items = this.state.sortedConversations().map((conv) => {
      const last = conv.msgs[conv.msgs.length - 1];
      const typing = this.state.typingIn(conv.key);
      let preview = "";
      if (typing) preview = conv.kind === "group" ? `${typing.from} is typing…` : "typing…";
      else if (last) {
        const who = last.out ? "" : conv.kind === "group" ? `${last.from}: ` : "";
        preview = who + (last.body || (last.media || last.localUrl ? "Picture" : ""));
      } else if (conv.left) preview = "You left";
      const face = el("div", { class: "avatar" });
      avatar(face, conv.name, conv.kind === "group");
      return el(
        "li",
        {
          class: `conv${conv.key === this.open ? " active" : ""}`,
          "data-key": conv.key,
          onclick: () => this.openConversation(conv.key),
        },
        face,
        el(
          "div",
          { class: "grow" },
          el("div", { class: "row" },
            el("span", { class: "name", text: conv.name }),
            el("span", { class: "time", text: last ? clock(last.ts) : "" })),
          el("div", { class: "row" },
            el("span", { class: `preview${typing ? " typing" : ""}`, text: preview }),
            conv.unread && conv.key !== this.open
              ? el("span", { class: "badge", text: String(conv.unread) }) : null),
        ),
      );
    });
    list.replaceChildren(...items);
  }

  renderHeader() {
    const key = this.open;
    if (!key || !this.state) return;
    const conv = this.state.conversation(key);
    $("peer-name").textContent = conv.name;
    avatar($("peer-avatar"), conv.name, conv.kind === "group");
    const typing = this.state.typingIn(key);
    const status = $("peer-status");
    status.classList.toggle("typing", Boolean(typing));
    if (typing) {
      status.textContent = conv.kind === "group" ? `${typing.from} is typing…` : "typing…";
    } else if (conv.kind === "group") {
      status.textContent = conv.left ? "you are no longer a member"
        : conv.members.map((u) => (u === this.state.user ? "you" : u)).join(", ");
    } else {
      const p = this.state.presence.get(conv.peer);
      status.textContent = !p ? "" : p.status === "online" ? "online" : lastSeen(p.last_seen);
    }
    status.dataset.presence = typing ? "typing" : (this.state.presence.get(conv.peer) || {}).status || "";
    const menu = $("group-menu");
    menu.hidden = conv.kind !== "group" || conv.left;
    if (conv.kind === "group") {
      $("group-members").textContent = `Members: ${conv.members.join(", ")}`;
      $("group-add-form").hidden = conv.owner !== this.state.user;
    }
  }

  renderOpen(scroll = false) {
    const key = this.open;
    $("empty").hidden = Boolean(key);
    $("conversation").hidden = !key;
    if (!key || !this.state) return;
    this.renderHeader();
    const conv = this.state.conversation(key);
    $("text").disabled = conv.left;
    $("attach").disabled = conv.left;
    const list = $("messages");
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
    let appended = false;
    for (const msg of conv.msgs) {
      const mkey = `${msg.from}\n${msg.id}`;
      let li = this.rendered.get(mkey);
      if (!li) {
        li = this.renderMessage(conv, msg);
        this.rendered.set(mkey, li);
        list.append(li);
        appended = true;
      } else if (msg.out && li.dataset.status !== msg.status) {
        li.dataset.status = msg.status;
        li.querySelector(".ticks").replaceWith(ticks(msg.status));
        if (msg.error) li.title = `${msg.error} (click to try again)`;
      }
      if (li.dataset.waiting === "1" && !msg.uploading) this.fillMedia(li, msg);
    }
    if (scroll || (appended && nearBottom)) list.scrollTop = list.scrollHeight;
  }

  renderMessage(conv, msg) {
    const meta = el("span", { class: "meta" }, el("time", { text: clock(msg.ts) }));
    if (msg.out) meta.append(ticks(msg.status));
    const li = el(
      "li",
      {
        class: `msg ${msg.out ? "out" : "in"}`,
        "data-id": msg.id,
        "data-from": msg.from,
        "data-status": msg.out ? msg.status : undefined,
        title: msg.error ? `${msg.error} (click to try again)` : undefined,
        onclick: msg.out ? () => msg.status === "failed" && this.retry(msg) : undefined,
      },
      conv.kind === "group" && !msg.out ? el("div", { class: "author", text: msg.from }) : null,
    );
    if (msg.media || msg.localUrl) {
      li.append(el("div", { class: "media" }));
      this.fillMedia(li, msg);
    }
    if (msg.body) li.append(el("span", { class: "body", text: msg.body }));
    li.append(meta);
    return li;
  }

  fillMedia(li, msg) {
    const box = li.querySelector(".media");
    const mime = (msg.media && msg.media.mime) || msg.localMime || "";
    const show = (url) => {
      li.dataset.waiting = "";
      if (mime.startsWith("image/")) {
        box.replaceChildren(el("img", { src: url, alt: "picture", class: "picture" }));
      } else {
        box.replaceChildren(el("a", {
          href: url, download: msg.media ? msg.media.id : "file",
          text: `file${msg.media ? `, ${sizeText(msg.media.size)}` : ""}`,
        }));
      }
    };
    if (msg.localUrl) {
      show(msg.localUrl);
      return;
    }
    if (!msg.media) {
      box.replaceChildren(el("span", { class: "muted", text: "picture not sent" }));
      return;
    }
    li.dataset.waiting = "1";
    box.replaceChildren(el("span", { class: "muted", text: "loading picture…" }));
    this.media.url(msg.media.id).then(show, (e) => {
      box.replaceChildren(el("span", {
        class: "muted", text: e.status === 404 ? "picture not available" : "picture not loaded yet",
      }));
    });
  }

  toast(text) {
    const node = $("toast");
    node.textContent = text;
    node.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => { node.hidden = true; }, 4000);
  }

  // -- DOM events ----------------------------------------------------------------------------
  bindDom() {
    $("auth-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.authenticate("login");
    });
    $("register").addEventListener("click", () => this.authenticate("register"));
    $("logout").addEventListener("click", () => this.logout());
    $("back").addEventListener("click", () => {
      this.stopTyping();
      this.open = null;
      this.renderList();
      this.renderOpen();
    });
    $("new-chat").addEventListener("submit", (e) => {
      e.preventDefault();
      const user = $("new-chat-user").value.trim();
      if (!USER_NAME.test(user) || user === this.state.user) return;
      $("new-chat-user").value = "";
      this.openConversation(userKey(user));
    });
    $("new-group-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const name = $("new-group-name").value.trim();
      const members = $("new-group-members").value.split(",").map((u) => u.trim())
        .filter((u) => USER_NAME.test(u));
      if (!name) return;
      this.createGroup(name, members);
      $("new-group-name").value = "";
      $("new-group-members").value = "";
      $("new-group").open = false;
    });
    $("group-add-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const user = $("group-add-user").value.trim();
      if (!USER_NAME.test(user) || !this.open) return;
      this.connection.send({
        type: "group_add", group: this.open.slice(2), users: [user], id: this.nextRef("grp"),
      }) || this.toast("Offline: try again when connected.");
      $("group-add-user").value = "";
    });
    $("group-leave").addEventListener("click", () => {
      if (!this.open) return;
      this.connection.send({ type: "group_leave", group: this.open.slice(2), id: this.nextRef("grp") })
        || this.toast("Offline: try again when connected.");
      $("group-menu").open = false;
    });
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      const body = $("text").value;
      if (!body.trim()) return;
      $("text").value = "";
      this.sendText(body);
    });
    $("text").addEventListener("input", () => this.composing());
    $("attach").addEventListener("change", () => {
      const file = $("attach").files[0];
      $("attach").value = "";
      if (file) this.sendPicture(file);
    });
    document.addEventListener("visibilitychange", () => this.markRead());
    window.addEventListener("focus", () => this.markRead());
  }
}

window.actorchat = new App();
