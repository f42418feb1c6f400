// The account: who is signed in, changing the password, API keys, signing out.
import { changePassword, currentSession } from "./auth.js";
import { ApiKeysSection } from "./integrations.js";
import { html, useState } from "./lib.js";
import { Alert, Field, Notice, fieldError, formError, useAction } from "./ui.js";

function ChangePassword() {
  const [oldPassword, setOld] = useState("");
  const [newPassword, setNew] = useState("");
  const [done, setDone] = useState("");
  const [change, busy, error] = useAction(async () => {
    await changePassword(oldPassword, newPassword);
    setOld("");
    setNew("");
    setDone("Password changed. Other devices signed in with the old one are signed out.");
  });
  return html`<form
    class="card"
    aria-labelledby="password-title"
    onSubmit=${(e) => {
      e.preventDefault();
      setDone("");
      change();
    }}
    novalidate
  >
    <h2 id="password-title">Change password</h2>
    <${Field}
      id="old-password"
      label="Current password"
      type="password"
      autocomplete="current-password"
      value=${oldPassword}
      error=${fieldError(error, "oldPassword")}
      onInput=${(e) => setOld(e.target.value)}
    />
    <${Field}
      id="new-password"
      label="New password"
      hint="At least 8 characters."
      type="password"
      autocomplete="new-password"
      value=${newPassword}
      error=${fieldError(error, "newPassword")}
      onInput=${(e) => setNew(e.target.value)}
    />
    <${Alert} error=${formError(error, "oldPassword", "newPassword")} />
    <${Notice}>${done}<//>
    <button type="submit" class="primary" disabled=${busy}>Change password</button>
  </form>`;
}

export function AccountPage() {
  return html`
    <h1 id="page-title" tabindex="-1">Account</h1>
    <p>Signed in as <strong>${currentSession()?.username}</strong>.</p>
    <div class="account-layout">
      <${ChangePassword} />
      <${ApiKeysSection} />
    </div>
  `;
}
