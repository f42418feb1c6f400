// Numbers in words a streamer reads at a glance.

export function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit ? value.toFixed(value < 10 ? 2 : 1) : value} ${units[unit]}`;
}

export function bitrate(bitsPerSecond) {
  if (bitsPerSecond == null) return "–";
  if (bitsPerSecond === 0) return "0";
  if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(2)} Mbit/s`;
  return `${Math.round(bitsPerSecond / 1e3)} kbit/s`;
}

export function duration(seconds) {
  if (seconds == null || Number.isNaN(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (h) return `${h} h ${String(m).padStart(2, "0")} min`;
  if (m) return `${m} min ${String(rest).padStart(2, "0")} s`;
  return `${rest} s`;
}

export function dateTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function secondsSince(iso, now = Date.now()) {
  return iso ? (now - new Date(iso).getTime()) / 1000 : null;
}

export function frameRate(fps) {
  return fps == null ? "–" : `${Number(fps).toFixed(fps % 1 ? 2 : 0)} fps`;
}

export function resolution(ingest) {
  return ingest?.width && ingest?.height ? `${ingest.width} × ${ingest.height}` : "–";
}

export function serviceName(destination) {
  if (destination.service !== "Custom") return destination.service;
  const server = serverUrl(destination);
  try {
    return `Custom (${new URL(server.replace(/^rtmps?:/, "http:")).host})`;
  } catch {
    return "Custom";
  }
}

// A destination's server URL: its full ingest URL without the key (which is secret).
export function serverUrl(destination) {
  const url = destination.rtmpUrl || "";
  const suffix = `/${destination.streamKey}`;
  return url.endsWith(suffix) ? url.slice(0, -suffix.length) : url;
}

export function streamTitle(stream) {
  return stream.name || `Untitled stream ${stream.id.slice(0, 8)}`;
}
