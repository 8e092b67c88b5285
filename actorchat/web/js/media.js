// Pictures travel beside the socket, over HTTP on the same host (docs/protocol.md, Media):
// POST /media with the bearer token, then a `send` that refers to the returned id; shown by
// fetching GET /media/M with the same header into a blob: URL (an <img src> cannot carry it).

export class MediaError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const REASONS = {
  401: "not signed in",
  404: "this node does not take media",
  413: "the file is too large",
};

export async function upload(file, token) {
  let response;
  try {
    response = await fetch("/media", {
      method: "POST",
      headers: {
        Authorization: `Bearer ${token}`,
        "Content-Type": file.type || "application/octet-stream",
      },
      body: file,
    });
  } catch (e) {
    throw new MediaError(0, "the network is down");
  }
  if (response.status !== 201) {
    throw new MediaError(response.status, REASONS[response.status] || `HTTP ${response.status}`);
  }
  const meta = await response.json(); // {media, size, sha256, mime}
  return { id: meta.media, mime: meta.mime || file.type, size: meta.size };
}

/** blob: URLs of fetched media, one fetch per id; failures are not remembered (retry later). */
export class MediaCache {
  constructor(token) {
    this.token = token; // a function: the current token
    this.urls = new Map();
  }

  remember(id, blob) {
    const url = URL.createObjectURL(blob);
    this.urls.set(id, Promise.resolve(url));
    return url;
  }

  url(id) {
    let pending = this.urls.get(id);
    if (!pending) {
      pending = this.fetch(id);
      this.urls.set(id, pending);
      pending.catch(() => this.urls.delete(id));
    }
    return pending;
  }

  async fetch(id) {
    const response = await fetch(`/media/${encodeURIComponent(id)}`, {
      headers: { Authorization: `Bearer ${this.token()}` },
    });
    if (!response.ok) throw new MediaError(response.status, `HTTP ${response.status}`);
    return URL.createObjectURL(await response.blob());
  }

  clear() {
    for (const pending of this.urls.values()) {
      pending.then((url) => URL.revokeObjectURL(url)).catch(() => {});
    }
    this.urls.clear();
  }
}
