// The page: header and navigation, then the screen the address (after #) names. Without
// a session only signing in or up is shown; after a change of screen the focus moves to
// its heading, so screen readers announce where the user is.
import { currentSession, onSessionChange, signOut } from "./auth.js";
import { AccountPage } from "./account.js";
import { html, useEffect, useRef, useState } from "./lib.js";
import { go, parseRoute, paths, useRoute } from "./router.js";
import { SignInPage, SignUpPage } from "./signin.js";
import { StreamPage } from "./stream.js";
import { StreamsPage } from "./streams.js";

function Header({ session, route }) {
  const current = (page) => (route.page === page ? "page" : undefined);
  return html`<header class="top">
    <a class="brand" href=${`#${paths.streams()}`}>rig</a>
    ${
      session &&
      html`<nav aria-label="Main">
      <a href=${`#${paths.streams()}`} aria-current=${current("streams")}>Streams</a>
      <a href=${`#${paths.account()}`} aria-current=${current("account")}>Account</a>
      <button type="button" class="link" onClick=${() => signOut("You are signed out.")}>
        Sign out
      </button>
    </nav>`
    }
  </header>`;
}

function Screen({ session, route, notice }) {
  if (!session)
    return route.page === "signup"
      ? html`<${SignUpPage} />`
      : html`<${SignInPage} notice=${notice} />`;
  if (route.page === "stream")
    return html`<${StreamPage} streamId=${route.streamId} tab=${route.tab} />`;
  if (route.page === "account") return html`<${AccountPage} />`;
  return html`<${StreamsPage} />`;
}

export function App() {
  const [session, setSession] = useState(currentSession());
  const [notice, setNotice] = useState(null);
  const route = useRoute();
  useEffect(
    () =>
      onSessionChange((next, message) => {
        setSession(next);
        setNotice(message);
        if (next && ["signin", "signup"].includes(parseRoute(location.hash).page))
          go(paths.streams());
      }),
    [],
  );
  // Move the focus to the new screen's heading (not on the first load).
  const first = useRef(true);
  const where = `${route.page}/${route.streamId ?? ""}/${route.tab ?? ""}/${session ? 1 : 0}`;
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    document.getElementById("page-title")?.focus();
  }, [where]);
  return html`
    <a class="skip" href="#main" onClick=${(e) => {
      e.preventDefault();
      document.getElementById("main")?.focus();
    }}>Skip to content</a>
    <${Header} session=${session} route=${route} />
    <main id="main" tabindex="-1">
      <${Screen} session=${session} route=${route} notice=${notice} />
    </main>
  `;
}
