// Small pieces every screen uses: labelled fields that show their own error, alerts,
// secrets masked until revealed, copy buttons, two-step confirmations, state badges.
import { ApiError } from "./api.js";
import { html, useEffect, useRef, useState } from "./lib.js";

// Run an API action, keeping whether it is busy and the error it ended with.
export function useAction(action) {
  const [state, setState] = useState({ busy: false, error: null });
  const mounted = useRef(true);
  useEffect(() => () => (mounted.current = false), []);
  const run = async (...args) => {
    setState({ busy: true, error: null });
    try {
      const result = await action(...args);
      if (mounted.current) setState({ busy: false, error: null });
      return result;
    } catch (error) {
      const shown =
        error instanceof ApiError
          ? error
          : new ApiError(0, { message: `The page failed: ${error.message}` });
      if (!(error instanceof ApiError)) console.error(error);
      if (mounted.current) setState({ busy: false, error: shown });
      return undefined;
    }
  };
  return [run, state.busy, state.error];
}

// The error's words for one of `fields` (shown next to it), or null.
export function fieldError(error, ...fields) {
  return error && fields.includes(error.field) ? error.reason : null;
}

// The error's words unless a field shows them.
export function formError(error, ...fields) {
  return error && !fields.includes(error.field) ? error : null;
}

export function Alert({ error, children }) {
  const text = error ? (error.words ?? String(error)) : children;
  if (!text) return null;
  return html`<p class="alert" role="alert">${text}</p>`;
}

export function Notice({ children }) {
  if (!children) return null;
  return html`<p class="notice" role="status">${children}</p>`;
}

// A labelled input; its error is read with it (aria-describedby) and takes the focus
// when it appears, so a keyboard or screen-reader user lands on what to fix.
export function Field({ id, label, error, hint, as = "input", children, ...input }) {
  const ref = useRef(null);
  useEffect(() => {
    if (error && ref.current) ref.current.focus();
  }, [error]);
  const described = [hint && `${id}-hint`, error && `${id}-error`].filter(Boolean).join(" ");
  const common = {
    id,
    ref,
    "aria-invalid": error ? "true" : undefined,
    "aria-describedby": described || undefined,
    ...input,
  };
  const control =
    as === "select"
      ? html`<select ...${common}>${children}</select>`
      : html`<input ...${common} />`;
  return html`<div class="field">
    <label for=${id}>${label}</label>
    ${control}
    ${hint && html`<p class="hint" id=${`${id}-hint`}>${hint}</p>`}
    ${error && html`<p class="field-error" id=${`${id}-error`}>${error}</p>`}
  </div>`;
}

export function CopyButton({ text, label, what }) {
  const [status, setStatus] = useState("");
  const timer = useRef(null);
  useEffect(() => () => clearTimeout(timer.current), []);
  async function copy() {
    try {
      await navigator.clipboard.writeText(text);
      setStatus("Copied");
    } catch {
      setStatus("Cannot copy here: reveal it, select it and press Ctrl+C");
    }
    clearTimeout(timer.current);
    timer.current = setTimeout(() => setStatus(""), 4000);
  }
  return html`<button type="button" class="secondary" onClick=${copy}>
      ${label}${what && html`<span class="sr-only"> ${what}</span>`}
    </button>
    <span class="copy-status" role="status">${status}</span>`;
}

// A secret (stream key, webhook secret): masked until revealed, copyable either way.
export function Secret({ id, label, value }) {
  const [shown, setShown] = useState(false);
  return html`<div class="secret">
    <span class="secret-label" id=${`${id}-label`}>${label}</span>
    <code class="secret-value" id=${id}>
      ${
        shown
          ? value
          : html`<span aria-hidden="true">••••••••••••</span><span class="sr-only">hidden</span>`
      }
    </code>
    <span class="secret-actions">
      <button
        type="button"
        class="secondary"
        aria-pressed=${shown ? "true" : "false"}
        onClick=${() => setShown(!shown)}
      >
        ${shown ? "Hide" : "Reveal"}<span class="sr-only"> ${label}</span>
      </button>
      <${CopyButton} text=${value} label="Copy" what=${label} />
    </span>
  </div>`;
}

// A button that asks first: the question appears in place, with the focus on Cancel.
export function ConfirmButton({ label, question, confirmLabel, onConfirm, busy, danger = true }) {
  const [asking, setAsking] = useState(false);
  const cancel = useRef(null);
  const opener = useRef(null);
  const wasAsking = useRef(false);
  useEffect(() => {
    if (asking) cancel.current?.focus();
    else if (wasAsking.current) opener.current?.focus();
    wasAsking.current = asking;
  }, [asking]);
  if (!asking) {
    return html`<button
      type="button"
      ref=${opener}
      class=${danger ? "danger" : "secondary"}
      disabled=${busy}
      onClick=${() => setAsking(true)}
    >
      ${label}
    </button>`;
  }
  return html`<div class="confirm" role="group" aria-label=${label}>
    <p>${question}</p>
    <button
      type="button"
      class=${danger ? "danger" : "primary"}
      disabled=${busy}
      onClick=${async () => {
        await onConfirm();
        setAsking(false);
      }}
    >
      ${confirmLabel}
    </button>
    <button type="button" class="secondary" ref=${cancel} onClick=${() => setAsking(false)}>
      Cancel
    </button>
  </div>`;
}

// A value that changes every `ms` (clocks, countdowns).
export function useNow(ms = 1000) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(timer);
  }, [ms]);
  return now;
}

const STATE_WORDS = {
  live: "Live",
  connecting: "Connecting",
  backoff: "Retrying",
  failed: "Failed",
  off: "Off",
  ready: "Ready",
  offline: "Offline",
  inactive: "Inactive",
  holding: "Holding",
  backup: "Backup live",
};

// A stream's badge state: while it is live, what feeds its destinations (ingestState:
// the encoder, the backup encoder or the slate while disconnect protection holds them).
export function streamState(stream, stats = null) {
  if (!stream.isActive) return "inactive";
  if (!(stats ? stats.isStreaming : stream.isStreaming)) return "offline";
  const ingestState = stats?.ingestState ?? stream.ingestState;
  return ingestState === "holding" || ingestState === "backup" ? ingestState : "live";
}

// A state in words; `retryAt` (ms) turns "Retrying" into "Retrying in N s".
export function StateBadge({ state, retryAt = null, now = Date.now() }) {
  let words = STATE_WORDS[state] ?? state;
  if (state === "backoff" && retryAt) {
    const seconds = Math.ceil((retryAt - now) / 1000);
    words = seconds > 0 ? `Retrying in ${seconds} s` : "Retrying now";
  }
  return html`<span class=${`badge badge-${state}`}>${words}</span>`;
}

export function Loading({ what }) {
  return html`<p class="loading" role="status">Loading ${what}…</p>`;
}
