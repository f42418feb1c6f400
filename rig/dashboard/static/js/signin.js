// Signing in and signing up: the only screens shown without a session.
import { signIn, signUp } from "./auth.js";
import { html, useState } from "./lib.js";
import { paths } from "./router.js";
import { Alert, Field, Notice, fieldError, formError, useAction } from "./ui.js";

export function SignInPage({ notice }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [submit, busy, error] = useAction(() => signIn(username.trim(), password));
  return html`<section class="card narrow" aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">Sign in to rig</h1>
    <${Notice}>${notice}<//>
    <form
      onSubmit=${(e) => {
        e.preventDefault();
        submit();
      }}
      novalidate
    >
      <${Field}
        id="signin-username"
        label="Username"
        autocomplete="username"
        value=${username}
        error=${fieldError(error, "username")}
        onInput=${(e) => setUsername(e.target.value)}
      />
      <${Field}
        id="signin-password"
        label="Password"
        type="password"
        autocomplete="current-password"
        value=${password}
        error=${fieldError(error, "password")}
        onInput=${(e) => setPassword(e.target.value)}
      />
      <${Alert} error=${formError(error, "username", "password")} />
      <button type="submit" class="primary" disabled=${busy}>Sign in</button>
    </form>
    <p>No account yet? <a href=${`#${paths.signUp()}`}>Create one</a></p>
  </section>`;
}

export function SignUpPage() {
  const [username, setUsername] = useState("");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [submit, busy, error] = useAction(() => signUp(username.trim(), email.trim(), password));
  return html`<section class="card narrow" aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">Create your rig account</h1>
    <form
      onSubmit=${(e) => {
        e.preventDefault();
        submit();
      }}
      novalidate
    >
      <${Field}
        id="signup-username"
        label="Username"
        hint="3 to 64 letters, digits, dots, dashes or underscores."
        autocomplete="username"
        value=${username}
        error=${fieldError(error, "username")}
        onInput=${(e) => setUsername(e.target.value)}
      />
      <${Field}
        id="signup-email"
        label="Email"
        type="email"
        autocomplete="email"
        value=${email}
        error=${fieldError(error, "email")}
        onInput=${(e) => setEmail(e.target.value)}
      />
      <${Field}
        id="signup-password"
        label="Password"
        hint="At least 8 characters."
        type="password"
        autocomplete="new-password"
        value=${password}
        error=${fieldError(error, "password")}
        onInput=${(e) => setPassword(e.target.value)}
      />
      <${Alert} error=${formError(error, "username", "email", "password")} />
      <button type="submit" class="primary" disabled=${busy}>Create account</button>
    </form>
    <p>Have an account? <a href=${`#${paths.signIn()}`}>Sign in</a></p>
  </section>`;
}
