// Live statistics of one stream, as they change.
//
// Reads rig's server-sent events (GET /streams/{id}/events) with fetch() and a
// ReadableStream, so the token travels in the Authorization header (EventSource can
// only put it in the URL). Reconnects with backoff; after three failed attempts in a
// row (a proxy that buffers, an older rig) it polls GET /streams/{id}/stats every
// POLL_SECONDS and tries the live connection again every RETRY_LIVE_SECONDS.
import { ApiError, api, authHeaders, reportUnauthorized } from "./api.js";
import { useEffect, useRef, useState } from "./lib.js";

const POLL_SECONDS = 5;
const RETRY_LIVE_SECONDS = 60;
const STALE_SECONDS = 45; // rig writes at least every 15 s; silence this long is a dead link
const SAMPLE_SECONDS = 600; // bitrate history kept for the chart

// Split a text/event-stream buffer into complete events and the unfinished rest.
export function parseEventStream(buffer) {
  const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
  const rest = blocks.pop();
  const events = [];
  for (const block of blocks) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue; // comments are keepalives
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) events.push({ event, data: data.join("\n") });
  }
  return { events, rest };
}

// Wait `seconds`, or less if `signal` aborts.
const sleep = (seconds, signal) =>
  new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, seconds * 1000);
    signal.addEventListener("abort", done);
  });

// Watch a stream until the returned function is called. `on.stats(stats)` for every
// update, `on.connection("connecting" | "live" | "polling" | "reconnecting")`,
// `on.gone()` when the stream no longer exists.
export function watchStream(streamId, on) {
  const stopping = new AbortController();
  const statsPath = `/streams/${encodeURIComponent(streamId)}/stats`;
  let received = false; // whether the current live connection delivered anything

  async function listen() {
    const link = new AbortController();
    const stop = () => link.abort();
    stopping.signal.addEventListener("abort", stop);
    let watchdog = null;
    const alive = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => link.abort(), STALE_SECONDS * 1000);
    };
    try {
      const response = await fetch(`/streams/${encodeURIComponent(streamId)}/events`, {
        headers: { ...authHeaders(), Accept: "text/event-stream" },
        signal: link.signal,
        cache: "no-store",
      });
      const type = response.headers.get("Content-Type") || "";
      if (!response.ok || !type.startsWith("text/event-stream")) {
        const envelope = await response.json().catch(() => null);
        const retryAfter = Number(response.headers.get("Retry-After")) || null;
        throw new ApiError(response.status, envelope, retryAfter);
      }
      alive();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return; // rig ended the stream (restarting): reconnect
        alive();
        const parsed = parseEventStream(buffer + value);
        buffer = parsed.rest;
        for (const { event, data } of parsed.events) {
          if (event === "stats") {
            received = true;
            on.connection("live");
            on.stats(JSON.parse(data));
          } else if (event === "error") {
            throw new ApiError(200, JSON.parse(data));
          }
        }
      }
    } finally {
      clearTimeout(watchdog);
      stopping.signal.removeEventListener("abort", stop);
    }
  }

  // One read of the stats; false when watching must end (stream gone, signed out).
  async function poll() {
    try {
      on.stats(await api.get(statsPath));
      on.connection("polling");
      return true;
    } catch (error) {
      if (error instanceof ApiError && error.errorCode === 1000) on.gone();
      if (error instanceof ApiError && [1000, 1003].includes(error.errorCode)) return false;
      on.connection("reconnecting");
      return true;
    }
  }

  async function run() {
    let failures = 0;
    while (!stopping.signal.aborted) {
      received = false;
      on.connection(failures ? "reconnecting" : "connecting");
      try {
        await listen();
      } catch (error) {
        if (stopping.signal.aborted) return;
        if (error instanceof ApiError && error.errorCode === 1003) {
          reportUnauthorized(error);
          return;
        }
        if (error instanceof ApiError && error.errorCode === 1000) {
          // The stream is gone, or this rig has no live updates: the stats tell which.
          if (!(await poll())) return;
          received = false;
          failures = 2;
        }
        if (error instanceof ApiError && error.retryAfter) {
          await sleep(error.retryAfter, stopping.signal);
        }
      }
      if (stopping.signal.aborted) return;
      failures = received ? 1 : failures + 1;
      if (failures < 3) {
        await sleep(2 ** failures, stopping.signal);
        continue;
      }
      // Live updates keep failing: poll for a while, then try them again.
      const until = Date.now() + RETRY_LIVE_SECONDS * 1000;
      while (!stopping.signal.aborted && Date.now() < until) {
        if (!(await poll())) return;
        await sleep(POLL_SECONDS, stopping.signal);
      }
    }
  }

  run();
  return () => stopping.abort();
}

// The stream's live statistics in a component: {stats, samples, connection, gone,
// receivedAt}. `samples` is the ingest bitrate over the last SAMPLE_SECONDS, gathered
// while the page is open ({at: ms, bitrate: bit/s or null while offline}).
export function useStreamEvents(streamId) {
  const [state, setState] = useState({
    stats: null,
    connection: "connecting",
    gone: false,
    receivedAt: 0,
  });
  const samples = useRef([]);
  useEffect(() => {
    samples.current = [];
    let lastUptime = null;
    const stop = watchStream(streamId, {
      stats(stats) {
        const now = Date.now();
        const ingest = stats.isStreaming ? stats.ingest : null;
        const uptime = ingest?.uptime ?? null;
        if (!ingest || uptime !== lastUptime) {
          samples.current.push({ at: now, bitrate: ingest?.bitrate ?? null });
          lastUptime = uptime;
        }
        const oldest = now - SAMPLE_SECONDS * 1000;
        while (samples.current.length && samples.current[0].at < oldest) samples.current.shift();
        setState((s) => ({ ...s, stats, receivedAt: now }));
      },
      connection(connection) {
        setState((s) => (s.connection === connection ? s : { ...s, connection }));
      },
      gone() {
        setState((s) => ({ ...s, gone: true }));
      },
    });
    return stop;
  }, [streamId]);
  return { ...state, samples: samples.current };
}
