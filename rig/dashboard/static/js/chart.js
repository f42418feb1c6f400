// The ingest bitrate over the last minutes: an inline SVG line, no chart library. Its
// width follows its box (so the labels stay readable on a phone) and its time window
// grows with what the page has seen, from one minute to MAX_WINDOW_SECONDS.
import { bitrate } from "./format.js";
import { html, useEffect, useRef, useState } from "./lib.js";

const HEIGHT = 170;
const PAD = { left: 78, right: 12, top: 16, bottom: 24 };
const MIN_WINDOW_SECONDS = 60;
const MAX_WINDOW_SECONDS = 300;

// A round axis maximum above `value`: 1, 2 or 5 times a power of ten.
export function niceMaximum(value) {
  if (!(value > 0)) return 1e6;
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 5, 10].find((m) => m * power >= value);
  return step * power;
}

// Whole minutes covering what was seen, between one and five.
export function windowSeconds(samples, now) {
  const seen = samples.length ? (now - samples[0].at) / 1000 : 0;
  const minutes = Math.ceil(seen / 60);
  return Math.min(MAX_WINDOW_SECONDS, Math.max(MIN_WINDOW_SECONDS, minutes * 60));
}

function useWidth(initial) {
  const box = useRef(null);
  const [width, setWidth] = useState(initial);
  useEffect(() => {
    const observer = new ResizeObserver(([entry]) =>
      setWidth(Math.max(240, Math.round(entry.contentRect.width))),
    );
    observer.observe(box.current);
    return () => observer.disconnect();
  }, []);
  return [box, width];
}

// samples: [{at: ms, bitrate: bit/s | null}], oldest first; null breaks the line.
export function BitrateChart({ samples, now = Date.now() }) {
  const [box, width] = useWidth(600);
  const span = windowSeconds(samples, now);
  const minutes = span / 60;
  const start = now - span * 1000;
  const shown = samples.filter((s) => s.at >= start);
  const values = shown.map((s) => s.bitrate).filter((v) => v != null);
  const max = niceMaximum(Math.max(0, ...values));
  const x = (at) => PAD.left + ((at - start) / (span * 1000)) * (width - PAD.left - PAD.right);
  const y = (v) => HEIGHT - PAD.bottom - (v / max) * (HEIGHT - PAD.top - PAD.bottom);
  const lines = [];
  let current = [];
  for (const sample of shown) {
    if (sample.bitrate == null) {
      if (current.length) lines.push(current);
      current = [];
    } else {
      current.push([x(sample.at), y(sample.bitrate)]);
    }
  }
  if (current.length) lines.push(current);
  const latest = shown.at(-1)?.bitrate ?? null; // null: offline now
  const range = `lowest ${bitrate(Math.min(...values))}, highest ${bitrate(Math.max(...values))}`;
  const summary = !values.length
    ? "No ingest bitrate yet: it appears while the stream is live."
    : `Ingest bitrate over the last ${minutes} min: ` +
      `${latest == null ? "offline now" : `now ${bitrate(latest)}`}, ${range}.`;
  return html`<figure class="chart">
    <figcaption>Ingest bitrate, last ${minutes} min</figcaption>
    <div class="chart-box" ref=${box}>
      <svg
        viewBox=${`0 0 ${width} ${HEIGHT}`}
        width=${width}
        height=${HEIGHT}
        role="img"
        aria-label=${summary}
      >
        ${[0, max / 2, max].map(
          (t) => html`<g class="tick">
            <line x1=${PAD.left} x2=${width - PAD.right} y1=${y(t)} y2=${y(t)} />
            <text x=${PAD.left - 8} y=${y(t) + 4} text-anchor="end">${bitrate(t)}</text>
          </g>`,
        )}
        <text class="axis" x=${PAD.left} y=${HEIGHT - 6}>−${minutes} min</text>
        <text class="axis" x=${width - PAD.right} y=${HEIGHT - 6} text-anchor="end">now</text>
        ${lines.map((points) =>
          points.length === 1
            ? html`<circle class="point" cx=${points[0][0]} cy=${points[0][1]} r="3" />`
            : html`<polyline
                class="line"
                points=${points.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" ")}
              />`,
        )}
      </svg>
    </div>
    <p class="chart-now" aria-hidden="true">${latest == null ? "" : `Now ${bitrate(latest)}`}</p>
  </figure>`;
}
