// One stream's screen: its live view and encoder settings, destinations, history and
// settings, under one heading with a tab-like navigation. The live statistics are
// watched here, so every tab shows the same, current state.
import { api } from "./api.js";
import { streamTitle } from "./format.js";
import { DestinationsPanel } from "./destinations.js";
import { useStreamEvents } from "./events.js";
import { HistoryPanel } from "./history.js";
import { html, useCallback, useEffect, useState } from "./lib.js";
import { LiveView } from "./live.js";
import { ObsSettings } from "./obs.js";
import { STREAM_TABS, paths } from "./router.js";
import { StreamSettings } from "./stream-settings.js";
import { Alert, Loading, StateBadge, streamState } from "./ui.js";

// The destinations' ids, in one comparable string.
const idsOf = (list) =>
  (list ?? [])
    .map((d) => d.id)
    .sort()
    .join(",");

export function StreamPage({ streamId, tab }) {
  const [stream, setStream] = useState(null);
  const [error, setError] = useState(null);
  const live = useStreamEvents(streamId);
  const reload = useCallback(async () => {
    try {
      setStream(await api.get(`/streams/${encodeURIComponent(streamId)}`));
      setError(null);
    } catch (err) {
      setError(err);
    }
  }, [streamId]);
  useEffect(() => {
    setStream(null);
    reload();
  }, [streamId]);
  // Destinations added or removed elsewhere, or the stream going live or offline:
  // read the stream again (its provisionStatus, its destinations).
  const stats = live.stats;
  const reportedIds = idsOf(stats?.destinations);
  useEffect(() => {
    if (!stream || !stats) return;
    const changed = reportedIds !== idsOf(stream.destinations);
    if (changed || stats.isStreaming !== stream.isStreaming) reload();
  }, [stats?.isStreaming, reportedIds]);

  // The heading keeps its place in every state, so the focus a change of screen put on
  // it stays there while the stream loads.
  const heading = (title, badge = null) => html`<div class="page-head">
    <p class="breadcrumb"><a href=${`#${paths.streams()}`}>Streams</a></p>
    <h1 id="page-title" tabindex="-1">${title}${badge && html` ${badge}`}</h1>
  </div>`;
  if (live.gone) {
    return html`${heading("Stream not found")}
      <p>This stream was deleted. <a href=${`#${paths.streams()}`}>Back to your streams</a></p>`;
  }
  if (!stream) {
    return html`${heading("Stream")}
      ${error ? html`<${Alert} error=${error} />` : html`<${Loading} what="the stream" />`}`;
  }
  const streaming = stats ? stats.isStreaming : stream.isStreaming;
  const changed = (fields) => setStream((s) => ({ ...s, ...fields }));
  // Keyed, so going live or offline reorders them without rebuilding either (a revealed
  // key or an open confirmation stays as it was).
  const obs = html`<${ObsSettings}
    key="obs"
    stream=${stream}
    stats=${stats}
    onChanged=${changed}
    reload=${reload}
  />`;
  const view = html`<${LiveView} key="live" stream=${stream} live=${live} />`;
  const state = streamState(stream, stats);
  return html`
    ${heading(streamTitle(stream), html`<${StateBadge} state=${state} />`)}
    <nav class="tabs" aria-label="Stream">
      ${STREAM_TABS.map(
        (t) => html`<a
          href=${`#${paths.stream(stream.id, t.id)}`}
          aria-current=${t.id === tab ? "page" : undefined}
        >${t.label}</a>`,
      )}
    </nav>
    <${Alert} error=${error} />
    ${tab === "live" && (streaming ? [view, obs] : [obs, view])}
    ${
      tab === "destinations" &&
      html`<${DestinationsPanel} stream=${stream} stats=${stats} reload=${reload} />`
    }
    ${tab === "history" && html`<${HistoryPanel} streamId=${stream.id} />`}
    ${tab === "settings" && html`<${StreamSettings} stream=${stream} reload=${reload} />`}
  `;
}
