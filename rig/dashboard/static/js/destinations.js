// Where the stream goes: add YouTube, Twitch, Facebook, Kick or a custom RTMP server,
// change a key, switch one off or on, remove one. rig hands every change to a live
// stream's agent with its next heartbeat, so they apply within seconds while live.
import { api } from "./api.js";
import * as format from "./format.js";
import { html, useState } from "./lib.js";
import {
  Alert,
  ConfirmButton,
  Field,
  Notice,
  Secret,
  StateBadge,
  fieldError,
  formError,
  useAction,
} from "./ui.js";

// An active destination of a stream that is not live is ready, not "off".
export function destinationState(destination, stats) {
  if (!destination.isActive) return "inactive";
  const state = stats?.state ?? "off";
  return state === "off" ? "ready" : state;
}

export const SERVICES = ["YouTube", "Twitch", "Facebook", "Kick", "Custom"];

const WHERE_IS_THE_KEY = {
  YouTube: "YouTube Studio → Create → Go live → Stream key.",
  Twitch: "Twitch Creator Dashboard → Settings → Stream → Primary Stream key.",
  Facebook: "Facebook Live Producer → Streaming software → Stream key.",
  Kick: "Kick Creator Dashboard → Settings → Stream URL & Key → Stream key.",
  Custom: "The key (or stream name) the server expects after its URL.",
};

function AddDestination({ streamId, onAdded }) {
  const [service, setService] = useState("YouTube");
  const [key, setKey] = useState("");
  const [server, setServer] = useState("");
  const [added, setAdded] = useState("");
  const [add, busy, error] = useAction(async () => {
    const body = { service, streamKey: key.trim() };
    if (service === "Custom") body.rtmpUrl = server.trim();
    const destination = await api.post(`/streams/${streamId}/destination`, body);
    setKey("");
    setServer("");
    setAdded(`${format.serviceName(destination)} added.`);
    await onAdded();
  });
  const submit = (event) => {
    event.preventDefault();
    setAdded("");
    add();
  };
  return html`<form class="card" onSubmit=${submit} aria-labelledby="add-title" novalidate>
    <h2 id="add-title">Add a destination</h2>
    <${Field}
      as="select"
      id="new-service"
      label="Service"
      value=${service}
      error=${fieldError(error, "service")}
      onChange=${(e) => setService(e.target.value)}
    >
      ${SERVICES.map((s) => html`<option value=${s}>${s === "Custom" ? "Custom RTMP server" : s}</option>`)}
    <//>
    ${
      service === "Custom" &&
      html`<${Field}
      id="new-server"
      label="Server URL"
      hint="rtmp:// or rtmps://, the host and the application, e.g. rtmp://live.example.com/app"
      value=${server}
      inputmode="url"
      autocomplete="off"
      spellcheck="false"
      error=${fieldError(error, "rtmpUrl")}
      onInput=${(e) => setServer(e.target.value)}
    />`
    }
    <${Field}
      id="new-key"
      label=${`${service === "Custom" ? "Stream" : service} key`}
      hint=${WHERE_IS_THE_KEY[service]}
      type="password"
      autocomplete="off"
      spellcheck="false"
      value=${key}
      error=${fieldError(error, "streamKey")}
      onInput=${(e) => setKey(e.target.value)}
    />
    <${Alert} error=${formError(error, "service", "rtmpUrl", "streamKey")} />
    <${Notice}>${added}<//>
    <button type="submit" class="primary" disabled=${busy}>Add destination</button>
  </form>`;
}

function EditKey({ streamId, destination, onSaved, onClose }) {
  const [key, setKey] = useState("");
  const [server, setServer] = useState(format.serverUrl(destination));
  const custom = destination.service === "Custom";
  const id = `edit-${destination.id}`;
  const [save, busy, error] = useAction(async () => {
    const body = {};
    if (key.trim()) body.streamKey = key.trim();
    if (custom && server.trim() !== format.serverUrl(destination)) body.rtmpUrl = server.trim();
    if (Object.keys(body).length) {
      await api.patch(`/streams/${streamId}/destination/${destination.id}`, body);
      await onSaved();
    }
    onClose();
  });
  return html`<form
    class="edit"
    onSubmit=${(e) => {
      e.preventDefault();
      save();
    }}
    novalidate
  >
    ${
      custom &&
      html`<${Field}
      id=${`${id}-server`}
      label="Server URL"
      value=${server}
      autocomplete="off"
      spellcheck="false"
      error=${fieldError(error, "rtmpUrl")}
      onInput=${(e) => setServer(e.target.value)}
    />`
    }
    <${Field}
      id=${`${id}-key`}
      label="New key"
      hint=${custom ? "Leave empty to keep the current key." : WHERE_IS_THE_KEY[destination.service]}
      type="password"
      autocomplete="off"
      spellcheck="false"
      value=${key}
      error=${fieldError(error, "streamKey")}
      onInput=${(e) => setKey(e.target.value)}
    />
    <${Alert} error=${formError(error, "rtmpUrl", "streamKey")} />
    <div class="actions">
      <button type="submit" class="primary" disabled=${busy}>Save</button>
      <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
    </div>
  </form>`;
}

function DestinationCard({ streamId, destination, state, onChanged }) {
  const [editing, setEditing] = useState(false);
  const name = format.serviceName(destination);
  const path = `/streams/${streamId}/destination/${destination.id}`;
  // The switch shows what was asked for at once; rig's answer confirms or reverts it.
  const [wanted, setWanted] = useState(null);
  const [toggle, toggling, toggleError] = useAction(async (isActive) => {
    setWanted(isActive);
    try {
      await api.patch(path, { isActive });
      await onChanged();
    } finally {
      setWanted(null);
    }
  });
  const [remove, removing, removeError] = useAction(async () => {
    await api.delete(path);
    await onChanged();
  });
  const switchId = `active-${destination.id}`;
  return html`<li class="card destination" data-destination=${destination.id}>
    <div class="destination-head">
      <h3>${name}</h3>
      <${StateBadge} state=${destinationState(destination, state)} />
    </div>
    ${
      state?.lastError &&
      destination.isActive &&
      html`<p class="last-error">Last error: ${state.lastError}</p>`
    }
    ${
      destination.service === "Custom" &&
      html`<p class="server">Server: <code>${format.serverUrl(destination)}</code></p>`
    }
    <${Secret} id=${`key-${destination.id}`} label=${`${name} key`} value=${destination.streamKey} />
    <div class="switch">
      <input
        type="checkbox"
        role="switch"
        id=${switchId}
        checked=${wanted ?? destination.isActive}
        disabled=${toggling}
        onChange=${(e) => toggle(e.target.checked)}
      />
      <label for=${switchId}>Send to ${name}</label>
    </div>
    <${Alert} error=${toggleError} />
    ${
      editing
        ? html`<${EditKey}
          streamId=${streamId}
          destination=${destination}
          onSaved=${onChanged}
          onClose=${() => setEditing(false)}
        />`
        : html`<div class="actions">
          <button type="button" class="secondary" onClick=${() => setEditing(true)}>
            ${destination.service === "Custom" ? "Edit server or key" : "Change key"}
            <span class="sr-only"> of ${name}</span>
          </button>
          <${ConfirmButton}
            label=${`Remove ${name}`}
            question=${`Stop sending to ${name} and forget its key?`}
            confirmLabel="Remove"
            busy=${removing}
            onConfirm=${remove}
          />
        </div>`
    }
    <${Alert} error=${removeError} />
  </li>`;
}

export function DestinationsPanel({ stream, stats, reload }) {
  const states = new Map((stats?.destinations ?? []).map((d) => [d.id, d]));
  const destinations = stream.destinations ?? [];
  return html`<div class="destinations">
    <p class="hint">
      Changes apply within a few seconds, also while you are live: only the destination
      you change reconnects.
    </p>
    ${
      destinations.length
        ? html`<ul class="destination-list">
          ${destinations.map(
            (d) => html`<${DestinationCard}
              key=${d.id}
              streamId=${stream.id}
              destination=${d}
              state=${states.get(d.id)}
              onChanged=${reload}
            />`,
          )}
        </ul>`
        : html`<p>No destinations yet.</p>`
    }
    <${AddDestination} streamId=${stream.id} onAdded=${reload} />
  </div>`;
}
