// What to type into OBS (Settings > Stream > Service: Custom…): the server URL and the
// stream key, masked until revealed, with copy buttons; rotating the key; and the
// backup key where rig offers one (disconnect protection and backup ingest).
import { api } from "./api.js";
import { html, useEffect, useState } from "./lib.js";
import { Alert, ConfirmButton, CopyButton, Secret, useAction } from "./ui.js";

let ingestUrls = null; // GET /ingest, once per page load: the operator's setting

async function loadIngestUrls() {
  if (ingestUrls === null) {
    try {
      ingestUrls = (await api.get("/ingest")).ingestUrls ?? [];
    } catch {
      return [];
    }
  }
  return ingestUrls;
}

function ServerUrls({ liveUrl, configured }) {
  // Live: the agent that took the stream said where it is. Else: the operator's list.
  const urls = liveUrl ? [liveUrl, ...configured.filter((u) => u !== liveUrl)] : configured;
  if (!urls.length) {
    return html`<p class="notice warn">
      This rig does not publish its ingest address yet. Ask its operator for the Server
      URL (they set <code>RIG_INGEST_URLS</code>); it also shows here while you are live.
    </p>`;
  }
  return html`<ul class="server-urls">
    ${urls.map(
      (url, n) => html`<li key=${url}>
        <code class="server-url">${url}</code>
        <${CopyButton} text=${url} label="Copy" what=${`server URL ${url}`} />
        ${n === 0 && urls.length > 1 && html`<span class="hint">${liveUrl ? "in use now" : "default"}</span>`}
      </li>`,
    )}
  </ul>`;
}

function BackupKey({ stream, reload }) {
  const [create, busy, error] = useAction(async () => {
    await api.post(`/streams/${stream.id}/backupKey`);
    await reload();
  });
  const key = stream.backupStreamKey;
  return html`<div class="backup-key">
    <h3>Backup encoder</h3>
    <p class="hint">
      A second encoder pushing with this key waits as a standby and takes over at every
      destination when the main one drops.
    </p>
    ${key && html`<${Secret} id="backup-key" label="Backup stream key" value=${key} />`}
    ${
      key
        ? html`<${ConfirmButton}
          label="Rotate backup key"
          question="The backup encoder must use the new key from now on."
          confirmLabel="Rotate backup key"
          busy=${busy}
          onConfirm=${create}
        />`
        : html`<button type="button" class="secondary" disabled=${busy} onClick=${create}>
          Create a backup key
        </button>`
    }
    <${Alert} error=${error} />
  </div>`;
}

export function ObsSettings({ stream, stats, onChanged, reload }) {
  const [configured, setConfigured] = useState(ingestUrls ?? []);
  useEffect(() => {
    loadIngestUrls().then(setConfigured);
  }, []);
  const [rotate, busy, error] = useAction(async () => {
    const payload = await api.post(`/streams/${stream.id}/changeKey`);
    onChanged({ streamKey: payload.key });
  });
  const liveUrl = stats?.provisionStatus?.ingestUrl ?? stream.provisionStatus?.ingestUrl;
  return html`<section class="card" aria-labelledby="obs-title">
    <h2 id="obs-title">Encoder settings (OBS)</h2>
    <p class="hint">
      In OBS: Settings → Stream → Service “Custom…”, then paste the server and the key.
    </p>
    <h3 class="label">Server</h3>
    <${ServerUrls} liveUrl=${liveUrl} configured=${configured} />
    <${Secret} id="stream-key" label="Stream key" value=${stream.streamKey} />
    <div class="actions">
      <${ConfirmButton}
        label="Rotate stream key"
        question="Your encoder must use the new key from now on. A live stream with the old key is stopped within a few seconds."
        confirmLabel="Rotate the key"
        busy=${busy}
        onConfirm=${rotate}
      />
    </div>
    <${Alert} error=${error} />
    ${"backupStreamKey" in stream && html`<${BackupKey} stream=${stream} reload=${reload} />`}
  </section>`;
}
