// The live view: what the ingest looks like and how every destination is doing, updated
// by the stream's events (events.js) without reloading.
import { fetchImage } from "./api.js";
import { BitrateChart } from "./chart.js";
import { destinationState } from "./destinations.js";
import * as format from "./format.js";
import { html, useEffect, useState } from "./lib.js";
import { paths } from "./router.js";
import { StateBadge, streamState, useNow } from "./ui.js";

const THUMBNAIL_SECONDS = 10; // the agent sends a new picture at most this often

const CONNECTION_WORDS = {
  connecting: "Connecting to live updates…",
  live: "Updating live",
  polling: "Updating every few seconds (live updates unavailable)",
  reconnecting: "Live updates interrupted: reconnecting…",
};

const INGEST_STATE_WORDS = {
  holding:
    "Your encoder disconnected: the destinations are kept on a “we’ll be right back” slate" +
    " until it comes back.",
  backup: "The backup ingest is feeding your destinations.",
};

function Thumbnail({ streamId, live }) {
  const [url, setUrl] = useState(null);
  useEffect(() => {
    setUrl(null);
    if (!live) return undefined;
    let current = null;
    let stopped = false;
    async function load() {
      let next = null;
      try {
        next = await fetchImage(`/streams/${encodeURIComponent(streamId)}/thumbnail`);
      } catch {
        return; // keep the last picture; the next attempt may work
      }
      if (stopped) {
        if (next) URL.revokeObjectURL(next);
        return;
      }
      if (current) URL.revokeObjectURL(current);
      current = next;
      setUrl(next);
    }
    load();
    const timer = setInterval(load, THUMBNAIL_SECONDS * 1000);
    return () => {
      stopped = true;
      clearInterval(timer);
      if (current) URL.revokeObjectURL(current);
    };
  }, [streamId, live]);
  return html`<figure class="thumbnail">
    ${
      url
        ? html`<img src=${url} alt="The latest picture of your stream" class="thumbnail-image" />`
        : html`<div class="thumbnail-empty">${live ? "No picture yet" : "Offline"}</div>`
    }
    <figcaption>Preview, refreshed every ${THUMBNAIL_SECONDS} s</figcaption>
  </figure>`;
}

function channelWords(channels) {
  if (!channels) return null;
  return { 1: "mono", 2: "stereo" }[channels] ?? `${channels} channels`;
}

function codecLine(codec, ...details) {
  if (!codec) return "–";
  const extra = details.filter((d) => d != null && d !== "").join(", ");
  return extra ? `${codec.toUpperCase()} (${extra})` : codec.toUpperCase();
}

function IngestFacts({ ingest, since, now }) {
  const facts = [
    ["Bitrate", format.bitrate(ingest.bitrate)],
    ["Frame rate", format.frameRate(ingest.frameRate)],
    ["Resolution", format.resolution(ingest)],
    [
      "Video",
      codecLine(ingest.videoCodec, ingest.profile, ingest.level && `level ${ingest.level}`),
    ],
    [
      "Audio",
      codecLine(
        ingest.audioCodec,
        ingest.audioSampleRate && `${ingest.audioSampleRate / 1000} kHz`,
        channelWords(ingest.audioChannels),
      ),
    ],
    [
      "Keyframe interval",
      ingest.keyframeInterval == null ? "–" : `${Number(ingest.keyframeInterval).toFixed(1)} s`,
    ],
    ["Uptime", format.duration(since ? format.secondsSince(since, now) : ingest.uptime)],
    ["Received", format.bytes(ingest.bytesIn)],
  ];
  return html`<dl class="facts">
    ${facts.map(([name, value]) => html`<div><dt>${name}</dt><dd>${value}</dd></div>`)}
  </dl>`;
}

// When a destination in backoff retries, as a time on this page's clock.
function retryAt(destination, receivedAt) {
  return destination.state === "backoff" && destination.retryIn != null
    ? receivedAt + destination.retryIn * 1000
    : null;
}

// A destination's name in the live view: a Custom one by its server's host (several
// Custom destinations must be told apart), from the stream object, which has its URL.
function destinationName(d, stream) {
  const known = (stream.destinations ?? []).find((s) => s.id === d.id);
  if (known) return format.serviceName(known);
  return d.service === "Custom" ? `Custom #${d.id}` : d.service;
}

export function DestinationStates({ stream, stats, receivedAt, now }) {
  const streamId = stream.id;
  const destinations = stats?.destinations ?? [];
  if (!destinations.length) {
    return html`<p>
      No destinations yet: add YouTube, Twitch or others under
      ${" "}<a href=${`#${paths.stream(streamId, "destinations")}`}>Destinations</a>.
    </p>`;
  }
  return html`<ul class="state-list">
    ${destinations.map(
      (d) => html`<li key=${d.id} class="state-item" data-destination=${d.id}>
        <div class="state-head">
          <strong>${destinationName(d, stream)}</strong>
          <${StateBadge}
            state=${destinationState(d, d)}
            retryAt=${retryAt(d, receivedAt)}
            now=${now}
          />
        </div>
        <dl class="facts compact">
          <div><dt>Sent</dt><dd>${format.bytes(d.bytesSent)}</dd></div>
          <div><dt>Reconnects</dt><dd>${d.reconnects ?? 0}</dd></div>
          ${
            d.liveSeconds != null &&
            html`<div><dt>Live for</dt><dd>${format.duration(d.liveSeconds)}</dd></div>`
          }
        </dl>
        ${d.lastError && html`<p class="last-error">Last error: ${d.lastError}</p>`}
      </li>`,
    )}
  </ul>`;
}

function Diagnostics({ diagnostics }) {
  if (!diagnostics?.length) return null;
  return html`<section class="card" aria-labelledby="diagnostics-title">
    <h2 id="diagnostics-title">Ingest diagnostics</h2>
    <ul class="diagnostics">
      ${diagnostics.map(
        (d) => html`<li class=${`diagnostic diagnostic-${d.severity}`}>
          <strong>${d.severity === "warning" ? "Warning" : "Note"} · ${d.service}:</strong>
          ${" "}${d.message}
        </li>`,
      )}
    </ul>
  </section>`;
}

export function LiveView({ stream, live }) {
  const now = useNow(1000);
  const { stats, connection, receivedAt, samples } = live;
  const streaming = stats ? stats.isStreaming : stream.isStreaming;
  const since = stats?.provisionStatus?.since ?? stream.provisionStatus?.since;
  const ingestState = stats?.ingestState ?? stream.ingestState;
  const ingest = streaming ? stats?.ingest : null;
  return html`<div class="live">
    <section class="card status-card" aria-labelledby="status-title">
      <h2 id="status-title" class="status-line">
        <${StateBadge} state=${streamState(stream, stats)} />
        <span>
          ${
            !stream.isActive
              ? "This stream is deactivated: its key is refused until you activate it."
              : streaming
                ? `Live for ${format.duration(format.secondsSince(since, now))}` +
                  (stats?.provisionStatus?.agent ? ` on ${stats.provisionStatus.agent}` : "")
                : "Offline: waiting for your encoder"
          }
        </span>
      </h2>
      <p class="sr-only" role="status">
        ${streaming ? "Your stream is live." : "Your stream is offline."}
      </p>
      ${
        INGEST_STATE_WORDS[ingestState] &&
        html`<p class="notice warn" role="status">${INGEST_STATE_WORDS[ingestState]}</p>`
      }
      <p class="connection" role="status">${CONNECTION_WORDS[connection]}</p>
    </section>
    <div class="live-grid">
      <section class="card" aria-labelledby="preview-title">
        <h2 id="preview-title">Preview</h2>
        <${Thumbnail} streamId=${stream.id} live=${streaming} />
      </section>
      <section class="card" aria-labelledby="ingest-title">
        <h2 id="ingest-title">Ingest</h2>
        <${BitrateChart} samples=${samples} now=${now} />
        ${
          ingest
            ? html`<${IngestFacts} ingest=${ingest} since=${since} now=${now} />`
            : html`<p>The ingest's bitrate, frame rate, resolution and codecs show here while
              you are live.</p>`
        }
      </section>
    </div>
    <section class="card" aria-labelledby="delivery-title">
      <h2 id="delivery-title">Destinations</h2>
      <${DestinationStates} stream=${stream} stats=${stats} receivedAt=${receivedAt} now=${now} />
    </section>
    <${Diagnostics} diagnostics=${stats?.diagnostics} />
  </div>`;
}
