// What connects rig to other software: API keys for scripts, bots and stream decks (the
// secret shown once), a stream's webhook, and its disconnect protection.
import { ApiError, api } from "./api.js";
import * as format from "./format.js";
import { html, useEffect, useState } from "./lib.js";
import {
  Alert,
  ConfirmButton,
  CopyButton,
  Field,
  Loading,
  Notice,
  Secret,
  fieldError,
  formError,
  useAction,
} from "./ui.js";

const EXPIRIES = [
  { value: "", label: "Never" },
  { value: "30", label: "In 30 days" },
  { value: "90", label: "In 90 days" },
  { value: "365", label: "In a year" },
];

function NewKeySecret({ created, onDone }) {
  return html`<div class="new-secret" role="region" aria-labelledby="new-key-title">
    <h3 id="new-key-title">Your new API key “${created.name}”</h3>
    <p>Copy it now: rig keeps only a fingerprint of it and cannot show it again.</p>
    <code class="secret-value" id="new-api-key">${created.apiKey}</code>
    <div class="actions">
      <${CopyButton} text=${created.apiKey} label="Copy the key" />
      <button type="button" class="primary" onClick=${onDone}>I have copied it</button>
    </div>
  </div>`;
}

function CreateApiKey({ streams, onCreated }) {
  const [name, setName] = useState("");
  const [scope, setScope] = useState("full");
  const [streamId, setStreamId] = useState("");
  const [expiry, setExpiry] = useState("");
  const [create, busy, error] = useAction(async () => {
    const body = { name: name.trim(), scope };
    if (streamId) body.streamId = streamId;
    if (expiry) body.expiresAt = new Date(Date.now() + Number(expiry) * 86400e3).toISOString();
    const created = await api.post("/accounts/apikeys", body);
    setName("");
    onCreated(created);
  });
  return html`<form
    onSubmit=${(e) => {
      e.preventDefault();
      create();
    }}
    aria-labelledby="create-key-title"
    novalidate
  >
    <h3 id="create-key-title">Create an API key</h3>
    <${Field}
      id="key-name"
      label="Name"
      hint="What uses it, e.g. “stream deck” or “chat bot”."
      value=${name}
      maxlength="64"
      autocomplete="off"
      error=${fieldError(error, "name")}
      onInput=${(e) => setName(e.target.value)}
    />
    <${Field}
      as="select"
      id="key-scope"
      label="Access"
      value=${scope}
      error=${fieldError(error, "scope")}
      onChange=${(e) => setScope(e.target.value)}
    >
      <option value="full">Full: read and change</option>
      <option value="read">Read only</option>
    <//>
    <${Field}
      as="select"
      id="key-stream"
      label="Streams"
      value=${streamId}
      error=${fieldError(error, "streamId")}
      onChange=${(e) => setStreamId(e.target.value)}
    >
      <option value="">All my streams</option>
      ${streams.map(
        (s) => html`<option value=${s.id}>Only ${s.name || `stream ${s.id.slice(0, 8)}`}</option>`,
      )}
    <//>
    <${Field}
      as="select"
      id="key-expiry"
      label="Expires"
      value=${expiry}
      error=${fieldError(error, "expiresAt")}
      onChange=${(e) => setExpiry(e.target.value)}
    >
      ${EXPIRIES.map((x) => html`<option value=${x.value}>${x.label}</option>`)}
    <//>
    <${Alert} error=${formError(error, "name", "scope", "streamId", "expiresAt")} />
    <button type="submit" class="primary" disabled=${busy}>Create key</button>
  </form>`;
}

function ApiKeyRow({ apiKey, streams, onRevoked }) {
  const [revoke, busy, error] = useAction(async () => {
    await api.delete(`/accounts/apikeys/${apiKey.id}`);
    await onRevoked();
  });
  const stream = streams.find((s) => s.id === apiKey.streamId);
  return html`<li class="api-key" data-key=${apiKey.id}>
    <div>
      <strong>${apiKey.name}</strong>
      <span class="badge">${apiKey.scope === "read" ? "Read only" : "Full access"}</span>
    </div>
    <p class="hint">
      ${[
        apiKey.streamId
          ? `Only ${stream?.name || `stream ${apiKey.streamId.slice(0, 8)}`}`
          : "All streams",
        `created ${format.dateTime(apiKey.createdAt)}`,
        apiKey.expiresAt ? `expires ${format.dateTime(apiKey.expiresAt)}` : "never expires",
        apiKey.lastUsedAt ? `last used ${format.dateTime(apiKey.lastUsedAt)}` : "never used",
      ].join(" · ")}
    </p>
    <${ConfirmButton}
      label=${`Revoke ${apiKey.name}`}
      question="Whatever uses this key loses access at once."
      confirmLabel="Revoke"
      busy=${busy}
      onConfirm=${revoke}
    />
    <${Alert} error=${error} />
  </li>`;
}

export function ApiKeysSection() {
  const [keys, setKeys] = useState(null);
  const [streams, setStreams] = useState([]);
  const [created, setCreated] = useState(null);
  const [unavailable, setUnavailable] = useState(false);
  const [load, busy, error] = useAction(async () => {
    try {
      const [found, mine] = await Promise.all([api.get("/accounts/apikeys"), api.get("/streams/")]);
      setKeys(found);
      setStreams(mine);
    } catch (err) {
      if (err instanceof ApiError && err.errorCode === 1000) setUnavailable(true);
      else throw err;
    }
  });
  useEffect(() => {
    load();
  }, []);
  return html`<section class="card" aria-labelledby="api-keys-title">
    <h2 id="api-keys-title">API keys</h2>
    <p class="hint">
      For scripts, bots and stream decks: send a key as <code>X-Api-Key</code>, or exchange
      it for a short-lived token at <code>POST /accounts/token</code>. Keys never change your
      password or other keys.
    </p>
    ${
      unavailable
        ? html`<p class="notice warn">This rig does not offer API keys yet.</p>`
        : html`
          ${
            created && html`<${NewKeySecret} created=${created} onDone=${() => setCreated(null)} />`
          }
          ${keys === null && busy && html`<${Loading} what="API keys" />`}
          ${
            keys &&
            (keys.length
              ? html`<ul class="api-keys">
                ${keys.map(
                  (k) =>
                    html`<${ApiKeyRow} key=${k.id} apiKey=${k} streams=${streams} onRevoked=${load} />`,
                )}
              </ul>`
              : html`<p>No API keys yet.</p>`)
          }
          <${Alert} error=${error} />
          <${CreateApiKey}
            streams=${streams}
            onCreated=${(key) => {
              setCreated(key);
              load();
            }}
          />
        `
    }
  </section>`;
}

export function WebhookSection({ streamId }) {
  const [webhook, setWebhook] = useState(null);
  const [url, setUrl] = useState("");
  const [saved, setSaved] = useState("");
  const path = `/streams/${streamId}/webhook`;
  const [load, , loadError] = useAction(async () => {
    const current = await api.get(path);
    setWebhook(current);
    setUrl(current.callbackUrl ?? "");
  });
  const [save, busy, error] = useAction(async (callbackUrl) => {
    const current = await api.put(path, { callbackUrl });
    setWebhook(current);
    setUrl(current.callbackUrl ?? "");
    setSaved(callbackUrl ? "Webhook saved." : "Webhook removed.");
  });
  useEffect(() => {
    load();
  }, [streamId]);
  return html`<section class="card" aria-labelledby="webhook-title">
    <h2 id="webhook-title">Webhook</h2>
    <p class="hint">
      rig POSTs the stream's events (live, offline, a destination failing or recovering)
      to this URL, signed with the secret below (header <code>X-Rig-Signature</code>).
    </p>
    <${Alert} error=${loadError} />
    ${
      webhook &&
      html`<form
        onSubmit=${(e) => {
          e.preventDefault();
          setSaved("");
          save(url.trim() || null);
        }}
        novalidate
      >
        <${Field}
          id="webhook-url"
          label="Webhook URL"
          type="url"
          inputmode="url"
          placeholder="https://example.com/rig-events"
          value=${url}
          autocomplete="off"
          spellcheck="false"
          error=${fieldError(error, "callbackUrl")}
          onInput=${(e) => setUrl(e.target.value)}
        />
        <${Alert} error=${formError(error, "callbackUrl")} />
        <${Notice}>${saved}<//>
        <div class="actions">
          <button type="submit" class="primary" disabled=${busy}>Save webhook</button>
          ${
            webhook.callbackUrl &&
            html`<button type="button" class="secondary" disabled=${busy} onClick=${() => save(null)}>
            Remove webhook
          </button>`
          }
        </div>
      </form>
      ${webhook.secret && html`<${Secret} id="webhook-secret" label="Signing secret" value=${webhook.secret} />`}`
    }
  </section>`;
}

export function DisconnectProtectionSection({ stream, onSaved }) {
  const current = stream.disconnectProtection ?? { enabled: true, graceSeconds: 30 };
  const [enabled, setEnabled] = useState(current.enabled);
  const [grace, setGrace] = useState(String(current.graceSeconds));
  const [saved, setSaved] = useState("");
  const [save, busy, error] = useAction(async () => {
    const disconnectProtection = { enabled, graceSeconds: Number(grace) };
    await api.patch(`/streams/${stream.id}`, { disconnectProtection });
    setSaved("Disconnect protection saved.");
    await onSaved();
  });
  return html`<section class="card" aria-labelledby="protection-title">
    <h2 id="protection-title">Disconnect protection</h2>
    <p class="hint">
      When your encoder's connection drops, rig keeps every destination live with a
      “we'll be right back” slate, and your stream continues where it was when you come back.
    </p>
    <form
      onSubmit=${(e) => {
        e.preventDefault();
        setSaved("");
        save();
      }}
      novalidate
    >
      <div class="switch">
        <input
          type="checkbox"
          role="switch"
          id="protection-enabled"
          checked=${enabled}
          onChange=${(e) => setEnabled(e.target.checked)}
        />
        <label for="protection-enabled">Hold the destinations when my encoder drops</label>
      </div>
      <${Field}
        id="protection-grace"
        label="Wait for my encoder (seconds, 0 to 600)"
        type="number"
        min="0"
        max="600"
        step="1"
        inputmode="numeric"
        value=${grace}
        disabled=${!enabled}
        error=${fieldError(error, "graceSeconds", "disconnectProtection")}
        onInput=${(e) => setGrace(e.target.value)}
      />
      <${Alert} error=${formError(error, "graceSeconds", "disconnectProtection")} />
      <${Notice}>${saved}<//>
      <button type="submit" class="primary" disabled=${busy}>Save protection</button>
    </form>
  </section>`;
}
