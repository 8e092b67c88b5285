// Small DOM helpers: elements (text always through textContent), icons, times.

const SVG = "http://www.w3.org/2000/svg";

const PATHS = {
  // Material icons (Apache 2.0): done, done_all, schedule, error.
  sent: "M9 16.2L4.8 12l-1.4 1.4L9 19 21 7l-1.4-1.4L9 16.2z",
  delivered:
    "M18 7l-1.41-1.41-6.34 6.34 1.41 1.41L18 7zm4.24-1.41L11.66 16.17 7.48 12l-1.41 " +
    "1.41L11.66 19l12-12-1.42-1.41zM.41 13.41L6 19l1.41-1.41L1.83 12 .41 13.41z",
  pending:
    "M11.99 2C6.47 2 2 6.48 2 12s4.47 10 9.99 10C17.52 22 22 17.52 22 12S17.52 2 11.99 " +
    "2zM12 20c-4.42 0-8-3.58-8-8s3.58-8 8-8 8 3.58 8 8-3.58 8-8 8zm.5-13H11v6l5.25 " +
    "3.15.75-1.23-4.5-2.67z",
  failed:
    "M12 2C6.48 2 2 6.48 2 12s4.48 10 10 10 10-4.48 10-10S17.52 2 12 2zm1 15h-2v-2h2v2zm0-4h-2V7h2v6z",
};
PATHS.read = PATHS.delivered;

const TICK_LABELS = {
  pending: "sending",
  sent: "sent",
  delivered: "delivered",
  read: "read",
  failed: "not sent",
};

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "title") {
      node.setAttribute(key, value);
    } else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

export function ticks(status) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", `ticks ${status}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", TICK_LABELS[status] || status);
  const title = document.createElementNS(SVG, "title");
  title.textContent = TICK_LABELS[status] || status;
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", PATHS[status] || PATHS.pending);
  svg.append(title, path);
  return svg;
}

const pad = (n) => String(n).padStart(2, "0");

export function clock(ts) {
  const d = new Date(ts * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function lastSeen(ts, now = Date.now()) {
  if (!ts) return "offline";
  const d = new Date(ts * 1000);
  const today = new Date(now);
  const yesterday = new Date(now - 86400000);
  const same = (a, b) => a.toDateString() === b.toDateString();
  if (same(d, today)) return `last seen today at ${clock(ts)}`;
  if (same(d, yesterday)) return `last seen yesterday at ${clock(ts)}`;
  const date = d.toLocaleDateString(undefined, { day: "numeric", month: "short" });
  return `last seen ${date} at ${clock(ts)}`;
}

const COLORS = ["#00a884", "#53bdeb", "#f15c6d", "#a66cc8", "#ffa97a", "#5d8cf0", "#e5a50a"];

export function avatar(node, name, group = false) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  node.textContent = group ? "#" : (name[0] || "?").toUpperCase();
  node.style.background = COLORS[hash % COLORS.length];
}

export function sizeText(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}
