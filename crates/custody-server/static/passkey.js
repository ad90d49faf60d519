// Passkeys in the portal: the one script Custody serves. It turns the server's WebAuthn
// options into a browser ceremony and sends the answer back. In a session everything it does
// needs the session's CSRF token, which the button carries; signing in has no session yet.
// No inline script, no other origin.
"use strict";

async function ceremony(button, begin, finish, run) {
  const headers = { "content-type": "application/json" };
  if (button.dataset.csrf) { headers["x-csrf-token"] = button.dataset.csrf; }
  const post = (path, body) =>
    fetch(path, { method: "POST", credentials: "same-origin", headers, body: JSON.stringify(body) });
  const status = document.getElementById("passkey-status");
  const say = (text) => { if (status) { status.textContent = text; } };
  button.disabled = true;
  try {
    const begun = await post(begin, {});
    if (begun.status === 403) {
      const error = await begun.json();
      if (error.error && error.error.code === "step_up_required") {
        window.location = "/portal/second-factor?next=" + encodeURIComponent(window.location.pathname);
        return;
      }
    }
    if (begun.status === 429) { say("Too many attempts. Wait a few minutes and try again."); return; }
    if (!begun.ok) { say("The passkey could not be started. Try again."); return; }
    const { ceremony: id, options } = await begun.json();
    const credential = await run(options.publicKey);
    const finished = await post(finish, { ceremony: id, credential: credential.toJSON() });
    if (!finished.ok) { say("That passkey was not accepted."); return; }
    const next = button.dataset.next || "/portal";
    const session = await finished.json();
    if (session.recovery_codes) {
      // The first factor: its recovery codes, shown this once, before going on.
      const list = document.createElement("ol");
      list.id = "recovery-codes";
      for (const code of session.recovery_codes) {
        const item = document.createElement("li");
        item.textContent = code;
        list.append(item);
      }
      const done = document.createElement("a");
      done.href = next;
      done.id = "done";
      done.textContent = "I have kept these recovery codes";
      status.replaceChildren("Keep these recovery codes somewhere safe; they are shown once.", list, done);
      return;
    }
    window.location = next;
  } catch (e) {
    say("The passkey was not used (" + e.name + ").");
  } finally {
    button.disabled = false;
  }
}

const add = document.getElementById("add-passkey");
if (add) {
  add.addEventListener("click", () =>
    ceremony(add, "/api/v1/me/passkeys/begin", "/api/v1/me/passkeys/finish", (options) =>
      navigator.credentials.create({
        publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options),
      })));
}

const use = document.getElementById("use-passkey");
if (use) {
  use.addEventListener("click", () =>
    ceremony(use, "/api/v1/sessions/current/passkey/begin", "/api/v1/sessions/current/passkey/finish", (options) =>
      navigator.credentials.get({
        publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options),
      })));
}

const signIn = document.getElementById("sign-in-passkey");
if (signIn) {
  signIn.addEventListener("click", () =>
    ceremony(signIn, "/api/v1/sessions/passkey/begin", "/api/v1/sessions/passkey/finish", (options) =>
      navigator.credentials.get({
        publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options),
      })));
}
