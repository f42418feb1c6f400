// A stream's settings: its name, whether it accepts pushes, its webhook, disconnect
// protection (where rig offers it), and deleting it.
import { api } from "./api.js";
import { DisconnectProtectionSection, WebhookSection } from "./integrations.js";
import { html, useState } from "./lib.js";
import { go, paths } from "./router.js";
import { Alert, ConfirmButton, Field, Notice, fieldError, formError, useAction } from "./ui.js";

function Rename({ stream, reload }) {
  const [name, setName] = useState(stream.name ?? "");
  const [saved, setSaved] = useState("");
  const [save, busy, error] = useAction(async () => {
    await api.patch(`/streams/${stream.id}`, { name: name.trim() || null });
    setSaved("Name saved.");
    await reload();
  });
  return html`<form
    class="card"
    aria-labelledby="name-title"
    onSubmit=${(e) => {
      e.preventDefault();
      setSaved("");
      save();
    }}
    novalidate
  >
    <h2 id="name-title">Name</h2>
    <${Field}
      id="stream-name"
      label="Stream name"
      hint="Only you see it, e.g. “Saturday speedruns”."
      value=${name}
      maxlength="100"
      autocomplete="off"
      error=${fieldError(error, "name")}
      onInput=${(e) => setName(e.target.value)}
    />
    <${Alert} error=${formError(error, "name")} />
    <${Notice}>${saved}<//>
    <button type="submit" class="primary" disabled=${busy}>Save name</button>
  </form>`;
}

function Activation({ stream, reload }) {
  const [setActive, busy, error] = useAction(async (isActive) => {
    await api.patch(`/streams/${stream.id}`, { isActive });
    await reload();
  });
  return html`<section class="card" aria-labelledby="activation-title">
    <h2 id="activation-title">${stream.isActive ? "Active" : "Deactivated"}</h2>
    ${
      stream.isActive
        ? html`<p>Your encoder can go live with this stream's key.</p>
          <${ConfirmButton}
            label="Deactivate stream"
            question=${
              stream.isStreaming
                ? "You are live: the stream stops within a few seconds, and its key is refused until you activate it again."
                : "Its key is refused until you activate the stream again."
            }
            confirmLabel="Deactivate"
            busy=${busy}
            onConfirm=${() => setActive(false)}
          />`
        : html`<p>The stream's key is refused: nobody can go live with it.</p>
          <button type="button" class="primary" disabled=${busy} onClick=${() => setActive(true)}>
            Activate stream
          </button>`
    }
    <${Alert} error=${error} />
  </section>`;
}

function Delete({ stream }) {
  const [remove, busy, error] = useAction(async () => {
    await api.delete(`/streams/${stream.id}`);
    go(paths.streams());
  });
  return html`<section class="card danger-zone" aria-labelledby="delete-title">
    <h2 id="delete-title">Delete stream</h2>
    <p>Deletes the stream, its key and its destinations. A live stream is stopped.</p>
    <${ConfirmButton}
      label="Delete stream"
      question="Delete this stream for good? This cannot be undone."
      confirmLabel="Delete for good"
      busy=${busy}
      onConfirm=${remove}
    />
    <${Alert} error=${error} />
  </section>`;
}

export function StreamSettings({ stream, reload }) {
  return html`<div class="settings">
    ${"name" in stream && html`<${Rename} stream=${stream} reload=${reload} />`}
    <${Activation} stream=${stream} reload=${reload} />
    ${
      "disconnectProtection" in stream &&
      html`<${DisconnectProtectionSection} stream=${stream} onSaved=${reload} />`
    }
    <${WebhookSection} streamId=${stream.id} />
    <${Delete} stream=${stream} />
  </div>`;
}
