// The chat as data: conversations, messages, the outbox, presence, typing. No DOM, no socket.
//
// What must survive a dropped network or a reloaded page is kept in localStorage under the
// user's name: the conversations with their messages, and the outbox (messages sent but not yet
// `accepted`, resent with the same id after every welcome until they are). Incoming messages
// are stored here *before* they are acknowledged, and deduplicated by (from, id), so a message
// delivered again after a reconnect is never shown twice.

const STORE_PREFIX = "actorchat:v1:";
const MAX_KEPT = 500; // messages kept per conversation in storage

// The ticks, in the only order they may move: a status never goes back.
export const STATUS_RANK = { pending: 0, sent: 1, delivered: 2, read: 3 };

export function newId() {
  // crypto.randomUUID needs a secure context; getRandomValues works on plain http too.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export const userKey = (user) => `u:${user}`;
export const groupKey = (group) => `g:${group}`;
const seenKey = (from, id) => `${from}\n${id}`;

export class ChatState {
  constructor(user, storage = window.localStorage) {
    this.user = user;
    this.storage = storage;
    this.convs = new Map(); // key -> conversation
    this.outbox = []; // ids of my messages not yet accepted, in the order sent
    this.mine = new Map(); // my message id -> message
    this.seen = new Set(); // seenKey(from, id) of every incoming message shown
    this.presence = new Map(); // user -> {status, last_seen}
    this.typing = new Map(); // conversation key -> {from, until}
    this.load();
  }

  // -- storage ---------------------------------------------------------------------------------
  load() {
    let saved = null;
    try {
      saved = JSON.parse(this.storage.getItem(STORE_PREFIX + this.user) || "null");
    } catch {
      saved = null;
    }
    if (!saved) return;
    for (const conv of saved.convs || []) {
      this.convs.set(conv.key, conv);
      for (const msg of conv.msgs) this.index(msg);
    }
    const pending = new Set(saved.outbox || []);
    for (const id of pending) {
      const msg = this.mine.get(id);
      if (!msg) continue;
      if (!msg.media && msg.uploading) {
        // The picture was still uploading when the page went away: its bytes are gone.
        msg.uploading = false;
        msg.status = "failed";
        msg.error = "the upload was interrupted";
        continue;
      }
      this.outbox.push(id);
    }
  }

  save() {
    const convs = [...this.convs.values()].map((conv) => ({
      ...conv,
      msgs: conv.msgs.slice(-MAX_KEPT).map(({ file, localUrl, busy, ...kept }) => kept),
    }));
    try {
      this.storage.setItem(
        STORE_PREFIX + this.user,
        JSON.stringify({ convs, outbox: this.outbox }),
      );
    } catch (e) {
      console.warn("actorchat: could not save the chat locally", e);
    }
  }

  clear() {
    this.storage.removeItem(STORE_PREFIX + this.user);
  }

  index(msg) {
    if (msg.out) this.mine.set(msg.id, msg);
    else this.seen.add(seenKey(msg.from, msg.id));
  }

  // -- conversations ---------------------------------------------------------------------------
  conversation(key, init = {}) {
    let conv = this.convs.get(key);
    if (!conv) {
      const group = key.startsWith("g:");
      conv = {
        key,
        kind: group ? "group" : "user",
        name: key.slice(2),
        peer: group ? null : key.slice(2),
        group: group ? key.slice(2) : null,
        members: [],
        owner: null,
        left: false,
        msgs: [],
        unread: 0,
        last: 0,
        ...init,
      };
      this.convs.set(key, conv);
    }
    return conv;
  }

  sortedConversations() {
    return [...this.convs.values()].sort((a, b) => b.last - a.last || a.name.localeCompare(b.name));
  }

  peers() {
    return [...this.convs.values()].filter((c) => c.kind === "user").map((c) => c.peer);
  }

  // -- my messages -----------------------------------------------------------------------------
  /** A new message of mine; it waits in the outbox until `accepted`. */
  compose(key, body, extra = {}) {
    const conv = this.conversation(key);
    const msg = {
      id: newId(),
      out: true,
      from: this.user,
      to: conv.peer,
      group: conv.group,
      body,
      ts: Date.now() / 1000,
      status: "pending",
      deliveredBy: [],
      readBy: [],
      ...extra,
    };
    conv.msgs.push(msg);
    conv.last = msg.ts;
    this.mine.set(msg.id, msg);
    this.outbox.push(msg.id);
    this.save();
    return msg;
  }

  /** The `send` frame of an outbox entry, or null while its picture is still uploading. */
  sendFrame(id) {
    const msg = this.mine.get(id);
    if (!msg || msg.uploading) return null;
    const frame = { type: "send", id: msg.id, body: msg.body };
    if (msg.group) frame.group = msg.group;
    else frame.to = msg.to;
    if (msg.media) frame.media = { id: msg.media.id, mime: msg.media.mime, size: msg.media.size };
    return frame;
  }

  pendingFrames() {
    return this.outbox.map((id) => this.sendFrame(id)).filter(Boolean);
  }

  advance(msg, status) {
    if (msg.status === "failed" || STATUS_RANK[status] <= STATUS_RANK[msg.status]) return false;
    msg.status = status;
    return true;
  }

  accepted(ids) {
    const done = new Set(ids);
    this.outbox = this.outbox.filter((id) => !done.has(id));
    for (const id of ids) {
      const msg = this.mine.get(id);
      if (msg) this.advance(msg, "sent");
    }
    this.save();
  }

  /** A `receipt`: in a group, delivered (read) once every other member has. */
  receipt(frame) {
    for (const id of frame.ids) {
      const msg = this.mine.get(id);
      if (!msg) continue;
      const list = frame.status === "read" ? msg.readBy : msg.deliveredBy;
      if (!list.includes(frame.by)) list.push(frame.by);
      if (frame.status === "read" && !msg.deliveredBy.includes(frame.by)) {
        msg.deliveredBy.push(frame.by);
      }
      if (!msg.group) {
        this.advance(msg, frame.status);
        continue;
      }
      const conv = this.convs.get(groupKey(msg.group));
      const others = (conv ? conv.members : []).filter((u) => u !== this.user);
      if (others.every((u) => msg.readBy.includes(u))) this.advance(msg, "read");
      else if (others.every((u) => msg.deliveredBy.includes(u))) this.advance(msg, "delivered");
    }
    this.save();
  }

  /** An `error` about one of my messages: retried later, or given up with the reason. */
  failed(id, code, message) {
    const msg = this.mine.get(id);
    if (!msg) return false;
    this.outbox = this.outbox.filter((x) => x !== id);
    msg.status = "failed";
    msg.error = `${code}: ${message}`;
    this.save();
    return true;
  }

  /** Try a failed message again, with the same id (the node would drop a repeat). */
  retry(id) {
    const msg = this.mine.get(id);
    if (!msg || msg.status !== "failed") return null;
    msg.status = "pending";
    delete msg.error;
    if (!this.outbox.includes(id)) this.outbox.push(id);
    this.save();
    return msg;
  }

  // -- their messages ----------------------------------------------------------------------
  /** A `deliver` frame: the messages not seen before, stored before the caller acks them. */
  deliver(items) {
    const fresh = [];
    for (const item of items) {
      const key = item.group ? groupKey(item.group) : userKey(item.from);
      const k = seenKey(item.from, item.id);
      if (this.seen.has(k)) {
        // Delivered again after a reconnect: same message, maybe a new mid to read with.
        const conv = this.convs.get(key);
        const old = conv && conv.msgs.find((m) => !m.out && m.from === item.from && m.id === item.id);
        if (old) old.mid = item.mid;
        continue;
      }
      this.seen.add(k);
      const conv = this.conversation(key);
      const msg = {
        id: item.id,
        mid: item.mid,
        out: false,
        from: item.from,
        to: item.to,
        group: item.group || null,
        body: item.body,
        ts: item.ts,
        media: item.media || null,
        readSent: false,
      };
      conv.msgs.push(msg);
      conv.last = Math.max(conv.last, item.ts);
      conv.unread += 1;
      const typing = this.typing.get(key);
      if (typing && typing.from === item.from) this.typing.delete(key);
      fresh.push(msg);
    }
    if (fresh.length) this.save();
    return fresh;
  }

  /** The mids to send in a `read` for this conversation (and mark them so). */
  takeUnread(key) {
    const conv = this.convs.get(key);
    if (!conv) return [];
    const mids = [];
    for (const msg of conv.msgs) {
      if (!msg.out && !msg.readSent && msg.mid) {
        msg.readSent = true;
        mids.push(msg.mid);
      }
    }
    if (mids.length || conv.unread) {
      conv.unread = 0;
      this.save();
    }
    return mids;
  }

  // -- groups, presence, typing ------------------------------------------------------------
  group(frame) {
    const conv = this.conversation(groupKey(frame.group));
    conv.name = frame.name;
    conv.owner = frame.owner;
    conv.members = frame.members;
    conv.left = !frame.members.includes(this.user);
    if (!conv.last) conv.last = Date.now() / 1000;
    this.save();
    return conv;
  }

  groupRemoved(group) {
    const conv = this.conversation(groupKey(group));
    conv.left = true;
    this.save();
    return conv;
  }

  setPresence(frame) {
    this.presence.set(frame.user, { status: frame.status, last_seen: frame.last_seen });
  }

  setTyping(frame, now = Date.now()) {
    const key = frame.group ? groupKey(frame.group) : userKey(frame.from);
    if (frame.state === "composing") this.typing.set(key, { from: frame.from, until: now + 6000 });
    else this.typing.delete(key);
    return key;
  }

  typingIn(key, now = Date.now()) {
    const t = this.typing.get(key);
    if (t && t.until <= now) this.typing.delete(key);
    return t && t.until > now ? t : null;
  }
}
