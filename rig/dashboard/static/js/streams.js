// The streamer's streams: a list with live badges and names, and a new stream.
import { request } from "./api.js";
import { streamTitle } from "./format.js";
import { html, useEffect, useState } from "./lib.js";
import { go, paths } from "./router.js";
import {
  Alert,
  Field,
  Loading,
  StateBadge,
  fieldError,
  formError,
  streamState,
  useAction,
} from "./ui.js";

const PAGE_SIZE = 50;
const REFRESH_SECONDS = 15; // live badges stay current without a live connection per stream

function CreateStream() {
  const [name, setName] = useState("");
  const [create, busy, error] = useAction(async () => {
    const body = name.trim() ? { name: name.trim() } : undefined;
    const { payload } = await request("POST", "/streams/", body);
    go(paths.stream(payload.id));
  });
  return html`<form
    class="card"
    aria-labelledby="create-title"
    onSubmit=${(e) => {
      e.preventDefault();
      create();
    }}
    novalidate
  >
    <h2 id="create-title">New stream</h2>
    <p class="hint">A stream has its own key for your encoder and its own destinations.</p>
    <${Field}
      id="new-stream-name"
      label="Name (optional)"
      value=${name}
      maxlength="100"
      autocomplete="off"
      error=${fieldError(error, "name")}
      onInput=${(e) => setName(e.target.value)}
    />
    <${Alert} error=${formError(error, "name")} />
    <button type="submit" class="primary" disabled=${busy}>Create stream</button>
  </form>`;
}

export function StreamsPage() {
  const [streams, setStreams] = useState(null);
  const [total, setTotal] = useState(0);
  const [pages, setPages] = useState(1);
  const [load, busy, error] = useAction(async () => {
    const { payload, headers } = await request(
      "GET",
      `/streams/?limit=${PAGE_SIZE * pages}&page=1`,
    );
    setStreams(payload);
    setTotal(Number(headers.get("X-Total-Count")) || payload.length);
  });
  useEffect(() => {
    load();
    const timer = setInterval(
      () => document.visibilityState === "visible" && load(),
      REFRESH_SECONDS * 1000,
    );
    return () => clearInterval(timer);
  }, [pages]);
  return html`
    <h1 id="page-title" tabindex="-1">Your streams</h1>
    <div class="streams-layout">
      <section aria-labelledby="list-title">
        <h2 id="list-title" class="sr-only">Streams</h2>
        ${streams === null && busy && html`<${Loading} what="your streams" />`}
        <${Alert} error=${error} />
        ${
          streams &&
          (streams.length
            ? html`<ul class="stream-list">
              ${streams.map(
                (s) => html`<li key=${s.id} class="card stream-item">
                  <a href=${`#${paths.stream(s.id)}`}>${streamTitle(s)}</a>
                  <${StateBadge} state=${streamState(s)} />
                </li>`,
              )}
            </ul>`
            : html`<p class="card">No streams yet. Create one to get a key for your encoder.</p>`)
        }
        ${
          streams &&
          streams.length < total &&
          html`<button type="button" class="secondary" onClick=${() => setPages(pages + 1)}>
          Show more streams
        </button>`
        }
      </section>
      <${CreateStream} />
    </div>
  `;
}
