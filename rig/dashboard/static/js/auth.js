// Who is signed in: sign up, sign in, sign out, change password.
//
// The token is kept in memory and in sessionStorage: it survives a reload of this tab,
// is gone when the tab closes, is not shared with other tabs, and never goes into
// localStorage, a cookie or a URL (docs/dashboard.md, "The token", says why). The page signs
// itself out when the token expires or rig refuses it.
import { api, onUnauthorized, request, setToken } from "./api.js";

const STORAGE_KEY = "rig.session";
const listeners = new Set();
let session = null; // {username, token, expiresAt (ms since the epoch)}
let expiryTimer = null;

function expiryOf(token) {
  try {
    const claims = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(claims)).exp * 1000;
  } catch {
    return Date.now() + 3600 * 1000; // unreadable: rig's own refusal will end it
  }
}

function publish(next, notice = null) {
  session = next;
  setToken(next?.token ?? null);
  clearTimeout(expiryTimer);
  if (next) {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(next));
    // setTimeout holds at most ~24.8 days; tokens live 24 h by default.
    const left = Math.min(next.expiresAt - Date.now(), 2 ** 31 - 1);
    expiryTimer = setTimeout(() => signOut("Your session expired. Sign in again."), left);
  } else {
    sessionStorage.removeItem(STORAGE_KEY);
  }
  for (const listener of listeners) listener(session, notice);
}

export function currentSession() {
  return session;
}

export function onSessionChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function restoreSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY));
    if (saved?.token && saved.expiresAt > Date.now()) publish(saved);
    else sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    sessionStorage.removeItem(STORAGE_KEY);
  }
}

export async function signIn(username, password) {
  const { payload } = await request(
    "POST",
    "/accounts/auth/local",
    { username, password },
    { signedIn: false },
  );
  publish({ username: payload.username, token: payload.token, expiresAt: expiryOf(payload.token) });
}

export async function signUp(username, email, password) {
  await request("POST", "/accounts/", { username, email, password }, { signedIn: false });
  await signIn(username, password);
}

export function signOut(notice = null) {
  publish(null, notice);
}

export async function changePassword(oldPassword, newPassword) {
  await api.post("/accounts/password", { oldPassword, newPassword });
  // Every token issued before the change stops working: sign in with the new password.
  await signIn(session.username, newPassword);
}

onUnauthorized((error) => {
  // A wrong old password is about that field, not about the session.
  if (!error.field) signOut("Your session has ended. Sign in again.");
});
