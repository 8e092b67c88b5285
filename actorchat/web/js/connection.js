// One WebSocket to the node that comes back by itself.
//
// Events (EventTarget): "open" (a socket is up: say who you are), "frame" (detail: a server
// frame), "state" (detail: offline | connecting | online | replaced), "closed" (detail: the
// close event). After an unexpected close the connection retries with exponential backoff and
// jitter (0.5 s doubling to 30 s); the browser's "online" event and the page becoming visible
// retry at once. A socket that says nothing for PING_EVERY * 2 is taken for dead and replaced.
// Close code 4001 (another connection took the session over) is not retried: that would take
// it back, and the two would fight.

const PING_EVERY = 20000;
const OPEN_TIMEOUT = 10000;
const BACKOFF_FIRST = 500;
const BACKOFF_MAX = 30000;

export function backoffDelay(attempt, random = Math.random) {
  const cap = Math.min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** attempt);
  return cap / 2 + (random() * cap) / 2;
}

export class Connection extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
    this.state = "offline";
    this.welcomed = false;
    this.wanted = false; // false after stop(): no reconnecting
    this.attempt = 0;
    this.retryAt = null;
    this.timer = null;
    this.heartbeat = null;
    this.lastHeard = 0;
    window.addEventListener("online", () => this.soon());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.soon();
    });
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  /** Connect, and keep connecting after drops until stop(). */
  start() {
    this.wanted = true;
    this.attempt = 0;
    this.open();
  }

  stop() {
    this.wanted = false;
    clearTimeout(this.timer);
    this.timer = null;
    this.retryAt = null;
    const ws = this.ws;
    this.ws = null;
    this.welcomed = false;
    this.stopHeartbeat();
    if (ws) ws.close(1000, "bye");
    this.setState("offline");
  }

  /** Retry now if we are waiting to: the network came back or the page is looked at. */
  soon() {
    if (this.wanted && !this.ws && this.state !== "replaced") {
      clearTimeout(this.timer);
      this.open();
    }
  }

  open() {
    clearTimeout(this.timer);
    this.timer = null;
    this.retryAt = null;
    this.welcomed = false;
    this.setState("connecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      console.warn("actorchat: cannot open a WebSocket", e);
      this.retry();
      return;
    }
    this.ws = ws;
    const openTimer = setTimeout(() => ws.close(), OPEN_TIMEOUT);
    ws.onopen = () => {
      clearTimeout(openTimer);
      if (this.ws !== ws) return;
      this.lastHeard = Date.now();
      this.startHeartbeat(ws);
      this.dispatchEvent(new Event("open"));
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        console.warn("actorchat: a frame that is not JSON", event.data);
        return;
      }
      if (window.actorchatDebug) console.debug("<", event.data);
      if (frame.type === "welcome") {
        this.welcomed = true;
        this.attempt = 0;
        this.setState("online");
      }
      if (frame.type === "pong") return;
      this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
    };
    ws.onclose = (event) => {
      clearTimeout(openTimer);
      if (this.ws !== ws) return; // replaced or stopped on purpose
      this.ws = null;
      this.welcomed = false;
      this.stopHeartbeat();
      if (window.actorchatDebug) console.debug("closed", event.code, event.reason);
      this.dispatchEvent(new CustomEvent("closed", { detail: event }));
      if (event.code === 4001) {
        this.wanted = false;
        this.setState("replaced");
        return;
      }
      this.retry();
    };
  }

  retry() {
    if (!this.wanted) {
      this.setState("offline");
      return;
    }
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.setState("offline");
    this.timer = setTimeout(() => this.open(), delay);
  }

  startHeartbeat(ws) {
    this.stopHeartbeat();
    this.heartbeat = setInterval(() => {
      if (Date.now() - this.lastHeard > PING_EVERY * 2) {
        ws.close(); // nothing heard for too long: the network is gone without telling us
        return;
      }
      this.write({ type: "ping" });
    }, PING_EVERY);
  }

  stopHeartbeat() {
    clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  /** Send a frame if a socket is open; false if it could not be (it is not queued here). */
  write(frame) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    const text = JSON.stringify(frame);
    if (window.actorchatDebug) console.debug(">", text);
    ws.send(text);
    return true;
  }

  /** Send a frame on a session (after welcome); false if there is none now. */
  send(frame) {
    return this.welcomed && this.write(frame);
  }

  /** Close the socket as a network drop would (for tests and the "reconnect" button). */
  drop() {
    if (this.ws) this.ws.close(4000, "dropped by the page");
  }
}
