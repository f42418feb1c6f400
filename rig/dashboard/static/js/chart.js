// The ingest bitrate over the last minutes: an inline SVG line, no chart library.
import { bitrate } from "./format.js";
import { html } from "./lib.js";

const WIDTH = 600;
const HEIGHT = 180;
const PAD = { left: 70, right: 10, top: 10, bottom: 24 };

// A round axis maximum above `value`: 1, 2 or 5 times a power of ten.
export function niceMaximum(value) {
  if (!(value > 0)) return 1e6;
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 5, 10].find((m) => m * power >= value);
  return step * power;
}

// samples: [{at: ms, bitrate: bit/s | null}], oldest first; null breaks the line.
export function BitrateChart({ samples, now = Date.now(), windowSeconds = 300 }) {
  const start = now - windowSeconds * 1000;
  const shown = samples.filter((s) => s.at >= start);
  const values = shown.map((s) => s.bitrate).filter((v) => v != null);
  const max = niceMaximum(Math.max(0, ...values));
  const x = (at) => PAD.left + ((at - start) / (windowSeconds * 1000)) * (WIDTH - PAD.left - PAD.right);
  const y = (v) => HEIGHT - PAD.bottom - (v / max) * (HEIGHT - PAD.top - PAD.bottom);
  const lines = [];
  let current = [];
  for (const sample of shown) {
    if (sample.bitrate == null) {
      if (current.length) lines.push(current);
      current = [];
    } else {
      current.push(`${x(sample.at).toFixed(1)},${y(sample.bitrate).toFixed(1)}`);
    }
  }
  if (current.length) lines.push(current);
  const latest = values.at(-1);
  const summary = values.length
    ? `Ingest bitrate over the last ${windowSeconds / 60} minutes: now ${bitrate(latest)},` +
      ` lowest ${bitrate(Math.min(...values))}, highest ${bitrate(Math.max(...values))}.`
    : "No ingest bitrate yet: it appears while the stream is live.";
  const ticks = [0, max / 2, max];
  return html`<figure class="chart">
    <figcaption>Ingest bitrate, last ${windowSeconds / 60} minutes</figcaption>
    <svg viewBox=${`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-label=${summary}>
      ${ticks.map(
        (t) => html`<g class="tick">
          <line x1=${PAD.left} x2=${WIDTH - PAD.right} y1=${y(t)} y2=${y(t)} />
          <text x=${PAD.left - 6} y=${y(t) + 4} text-anchor="end">${bitrate(t)}</text>
        </g>`,
      )}
      <text class="axis" x=${PAD.left} y=${HEIGHT - 6}>−${windowSeconds / 60} min</text>
      <text class="axis" x=${WIDTH - PAD.right} y=${HEIGHT - 6} text-anchor="end">now</text>
      ${lines.map((points) =>
        points.length === 1
          ? html`<circle class="point" cx=${points[0].split(",")[0]} cy=${points[0].split(",")[1]} r="3" />`
          : html`<polyline class="line" points=${points.join(" ")} />`,
      )}
    </svg>
    <p class="chart-now" aria-hidden="true">${values.length ? `Now ${bitrate(latest)}` : ""}</p>
  </figure>`;
}
