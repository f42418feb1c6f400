// The stream's past sessions, newest first, each with its delivery report per
// destination: did Twitch get the whole three hours?
import { ApiError, request } from "./api.js";
import * as format from "./format.js";
import { html, useEffect, useState } from "./lib.js";
import { Alert, Loading, useAction } from "./ui.js";

const PAGE_SIZE = 10;

const END_REASONS = {
  ended: "Your encoder stopped the stream",
  expired: "The ingest server stopped reporting (lost contact)",
  "key changed": "The stream key was rotated",
  deactivated: "The stream was deactivated",
  deleted: "The stream was deleted",
  kicked: "Stopped by rig",
  idle: "Your encoder stopped sending",
  error: "The ingest failed",
  shutdown: "The ingest server shut down",
  "grace expired": "Your encoder did not come back in time",
  "taken over": "Taken over by another ingest server",
};

function sessionSeconds(session) {
  const end = session.endedAt ? new Date(session.endedAt) : new Date();
  return (end - new Date(session.startedAt)) / 1000;
}

function videoSummary(ingest) {
  if (!ingest?.videoCodec) return "–";
  const parts = [ingest.videoCodec.toUpperCase(), format.resolution(ingest)];
  if (ingest.frameRate) parts.push(format.frameRate(ingest.frameRate));
  return parts.join(", ");
}

function audioSummary(ingest) {
  if (!ingest?.audioCodec) return "–";
  const parts = [ingest.audioCodec.toUpperCase()];
  if (ingest.audioSampleRate) parts.push(`${ingest.audioSampleRate / 1000} kHz`);
  return parts.join(", ");
}

function share(liveSeconds, total) {
  if (liveSeconds == null || !(total > 0)) return "";
  return ` (${Math.min(100, Math.round((liveSeconds / total) * 100))} %)`;
}

function Session({ session }) {
  const total = sessionSeconds(session);
  const live = !session.endedAt;
  const titleId = `session-${session.id}`;
  return html`<article class="card session" aria-labelledby=${titleId}>
    <h3 id=${titleId}>
      ${format.dateTime(session.startedAt)} · ${format.duration(total)}
      ${live && html` <span class="badge badge-live">Live now</span>`}
    </h3>
    <dl class="facts">
      <div class="wide">
        <dt>Ended</dt>
        <dd>
          ${
            live
              ? "Still live"
              : `${format.dateTime(session.endedAt)}: ${END_REASONS[session.endReason] ?? session.endReason ?? "unknown"}`
          }
        </dd>
      </div>
      <div><dt>Ingest server</dt><dd>${session.agent ?? "–"}</dd></div>
      <div><dt>Video</dt><dd>${videoSummary(session.ingest)}</dd></div>
      <div><dt>Audio</dt><dd>${audioSummary(session.ingest)}</dd></div>
      <div><dt>Average bitrate</dt><dd>${format.bitrate(session.ingest?.averageBitrate)}</dd></div>
      <div><dt>Received</dt><dd>${format.bytes(session.ingest?.bytesIn)}</dd></div>
      ${
        session.holdingSeconds > 0 &&
        html`<div><dt>On the slate</dt><dd>${format.duration(session.holdingSeconds)}</dd></div>`
      }
    </dl>
    ${
      session.destinations?.length
        ? html`<div class="table-wrap" tabindex="0" role="region" aria-labelledby=${`${titleId}-delivery`}>
          <table>
            <caption id=${`${titleId}-delivery`}>Delivery per destination</caption>
            <thead>
              <tr>
                <th scope="col">Destination</th>
                <th scope="col">Live for</th>
                <th scope="col">Sent</th>
                <th scope="col">Reconnects</th>
                <th scope="col">Last error</th>
              </tr>
            </thead>
            <tbody>
              ${session.destinations.map(
                (d) => html`<tr key=${d.id}>
                  <th scope="row">${d.service ?? `Destination ${d.id} (removed)`}</th>
                  <td>${format.duration(d.liveSeconds)}${share(d.liveSeconds, total)}</td>
                  <td>${format.bytes(d.bytesSent)}</td>
                  <td>${d.reconnects ?? 0}</td>
                  <td class=${d.lastError ? "last-error" : ""}>${d.lastError || "–"}</td>
                </tr>`,
              )}
            </tbody>
          </table>
        </div>`
        : html`<p>No destination was active in this session.</p>`
    }
    ${
      session.diagnostics?.length > 0 &&
      html`<ul class="diagnostics">
      ${session.diagnostics.map(
        (d) => html`<li class=${`diagnostic diagnostic-${d.severity}`}>
          <strong>${d.service}:</strong> ${d.message}
        </li>`,
      )}
    </ul>`
    }
  </article>`;
}

export function HistoryPanel({ streamId }) {
  const [sessions, setSessions] = useState(null);
  const [total, setTotal] = useState(0);
  const [unavailable, setUnavailable] = useState(false);
  const [load, busy, error] = useAction(async (page) => {
    try {
      const path = `/streams/${streamId}/sessions?limit=${PAGE_SIZE}&page=${page}`;
      const { payload, headers } = await request("GET", path);
      setTotal(Number(headers.get("X-Total-Count")) || 0);
      setSessions((before) => (page === 1 ? payload : [...(before ?? []), ...payload]));
    } catch (err) {
      // The stream was just shown, so a 1000 here means this rig keeps no history.
      if (err instanceof ApiError && err.errorCode === 1000) setUnavailable(true);
      else throw err;
    }
  });
  useEffect(() => {
    load(1);
  }, [streamId]);
  if (unavailable) return html`<p class="notice warn">This rig does not record sessions yet.</p>`;
  if (sessions === null)
    return html`${busy && html`<${Loading} what="sessions" />`}<${Alert} error=${error} />`;
  return html`<div class="history">
    ${
      sessions.length
        ? sessions.map((s) => html`<${Session} key=${s.id} session=${s} />`)
        : html`<p>No sessions yet. Each time you go live, a report appears here.</p>`
    }
    <${Alert} error=${error} />
    ${
      sessions.length < total &&
      html`<button
      type="button"
      class="secondary"
      disabled=${busy}
      onClick=${() => load(Math.floor(sessions.length / PAGE_SIZE) + 1)}
    >
      Show older sessions
    </button>`
    }
  </div>`;
}
