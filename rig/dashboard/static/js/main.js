// Entry point: restore this tab's session, then draw the page.
import { App } from "./app.js";
import { restoreSession } from "./auth.js";
import { html, render } from "./lib.js";

restoreSession();
const root = document.getElementById("app");
root.textContent = "";
render(html`<${App} />`, root);
