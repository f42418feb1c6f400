// The REST client: every call the dashboard makes goes through `request`, with the
// same envelope any client sees ({message, payload} / {message, errorCode, details}).
// The token lives here in memory (auth.js decides where else it is kept) and travels
// only in the Authorization header.

let token = null;
let unauthorized = () => {};

export class ApiError extends Error {
  constructor(status, envelope, retryAfter = null) {
    super(
      envelope?.message ||
        (status
          ? `rig answered HTTP ${status}`
          : "rig cannot be reached: check your connection and try again"),
    );
    this.status = status;
    this.errorCode = envelope?.errorCode ?? null;
    this.details = envelope?.details ?? null;
    // The input the error is about, so a form can show it next to that field.
    this.field = this.details?.field ?? null;
    this.retryAfter = retryAfter;
  }

  // What went wrong, in words for a person.
  get words() {
    if (this.errorCode === 1010) {
      const wait = this.retryAfter || this.details?.retryAfter;
      return `Too many attempts. Try again${wait ? ` in ${wait} s` : " shortly"}.`;
    }
    if (this.errorCode === 1008) return `${this.message}. Try again in a moment.`;
    return this.message.endsWith(".") ? this.message : `${this.message}.`;
  }

  // The reason alone (e.g. "1 to 512 characters, no spaces"), for a field's own label.
  get reason() {
    const reason = this.details?.reason;
    return reason ? `${reason[0].toUpperCase()}${reason.slice(1)}.` : this.words;
  }
}

export function setToken(value) {
  token = value;
}

// Called with the error when a signed-in call is refused for its token (401).
export function onUnauthorized(handler) {
  unauthorized = handler;
}

// A refusal for the token seen elsewhere (the live updates' last event).
export function reportUnauthorized(error) {
  unauthorized(error);
}

export function authHeaders() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export async function request(method, path, body, { signedIn = true } = {}) {
  const headers = { Accept: "application/json", ...(signedIn ? authHeaders() : {}) };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, null);
  }
  let envelope = null;
  try {
    envelope = await response.json();
  } catch {
    envelope = null;
  }
  if (!response.ok) {
    const retryAfter = Number(response.headers.get("Retry-After")) || null;
    const error = new ApiError(response.status, envelope, retryAfter);
    if (signedIn && response.status === 401) unauthorized(error);
    throw error;
  }
  return { payload: envelope?.payload ?? null, headers: response.headers };
}

const payloadOf = async (promise) => (await promise).payload;

export const api = {
  get: (path) => payloadOf(request("GET", path)),
  post: (path, body) => payloadOf(request("POST", path, body)),
  put: (path, body) => payloadOf(request("PUT", path, body)),
  patch: (path, body) => payloadOf(request("PATCH", path, body)),
  delete: (path) => payloadOf(request("DELETE", path)),
};

// A binary resource (the thumbnail) with the token in the header: an object URL, or
// null when there is none (1000).
export async function fetchImage(path) {
  let response;
  try {
    response = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  } catch {
    throw new ApiError(0, null);
  }
  if (response.status === 404) return null;
  if (!response.ok) {
    const envelope = await response.json().catch(() => null);
    const error = new ApiError(response.status, envelope);
    if (response.status === 401) unauthorized(error);
    throw error;
  }
  return URL.createObjectURL(await response.blob());
}
