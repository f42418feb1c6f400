// Screens are addressed after `#` (`#/streams/<id>/destinations`), so rig serves one
// page and a reload keeps the screen. Nothing secret ever goes in these addresses.
import { useEffect, useState } from "./lib.js";

export const STREAM_TABS = [
  { id: "live", label: "Live" },
  { id: "destinations", label: "Destinations" },
  { id: "history", label: "History" },
  { id: "settings", label: "Settings" },
];

export function parseRoute(hash) {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  if (parts[0] === "streams" && parts[1]) {
    const tab = STREAM_TABS.some((t) => t.id === parts[2]) ? parts[2] : "live";
    return { page: "stream", streamId: decodeURIComponent(parts[1]), tab };
  }
  if (["account", "signup", "signin"].includes(parts[0])) return { page: parts[0] };
  return { page: "streams" };
}

export function useRoute() {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const changed = () => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  return route;
}

export function go(path) {
  location.hash = `#${path}`;
}

export const paths = {
  streams: () => "/",
  stream: (id, tab = "live") =>
    `/streams/${encodeURIComponent(id)}${tab === "live" ? "" : `/${tab}`}`,
  account: () => "/account",
  signIn: () => "/signin",
  signUp: () => "/signup",
};
