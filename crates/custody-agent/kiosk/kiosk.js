// The kiosk page: asks the agent on this controller, which asks the server when it can.
"use strict";

const $ = (id) => document.getElementById(id);
let courierCode = null;
let clearTimer = null;

async function ask(path, body) {
  try {
    const response = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) return { kind: "not_accepted", message: "Code not accepted." };
    return await response.json();
  } catch (_) {
    return { kind: "offline", message: "The locker cannot check codes right now. Please try again later." };
  }
}

function show(screen) {
  const message = $("message");
  message.className = "message " + screen.kind;
  message.textContent = screen.message;
  clearTimeout(clearTimer);
  // The answer stays long enough to read, then the screen is ready for the next person.
  clearTimer = setTimeout(() => { message.textContent = ""; message.className = "message"; }, 20000);
}

async function submitCode(event) {
  event.preventDefault();
  const input = $("code");
  const text = input.value.trim();
  input.value = "";
  if (!text) return;
  show({ kind: "checking", message: "Checking…" });
  // A QR scanner types the token like a keyboard; a person types digits.
  const screen = text.startsWith("CQ1:") ? await ask("/api/scan", { text }) : await ask("/api/code", { code: text });
  show(screen);
  input.focus();
}

function key(event) {
  const k = event.target.dataset.key;
  if (!k) return;
  const input = $("code");
  if (k === "clear") input.value = "";
  else input.value += k;
  input.focus();
}

function parcelItem(parcel, buttons) {
  const item = document.createElement("li");
  item.textContent = `${parcel.tracking_ref} (${parcel.size}) `;
  for (const [label, action] of buttons) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.addEventListener("click", action);
    item.appendChild(button);
  }
  return item;
}

function showWork(screen) {
  $("work").hidden = false;
  const deposits = $("deposits");
  const returns = $("returns");
  deposits.replaceChildren();
  returns.replaceChildren();
  for (const parcel of screen.deposits) {
    const buttons = [[`Deposit ${parcel.tracking_ref}`, () => courierAct("deposit", parcel.id)]];
    // A parcel that does not fit its size goes into a larger free one.
    for (const free of screen.free) {
      if (free.size !== parcel.size && free.count > 0) {
        buttons.push([`Needs ${free.size}`, () => courierAct("deposit", parcel.id, free.size)]);
      }
    }
    buttons.push([`Confirm ${parcel.tracking_ref}`, () => courierAct("confirm", parcel.id)]);
    deposits.appendChild(parcelItem(parcel, buttons));
  }
  for (const parcel of screen.returns) {
    returns.appendChild(parcelItem(parcel, [[`Take back ${parcel.tracking_ref}`, () => courierAct("return", parcel.id)]]));
  }
  const sizes = screen.free.map((f) => `${f.count} ${f.size}`);
  $("free").textContent = "Free compartments: " + (sizes.length ? sizes.join(", ") : "none");
}

async function courierAct(action, parcel, size) {
  if (!courierCode) return;
  const body = { code: courierCode, action };
  if (parcel) body.parcel = parcel;
  if (size) body.size = size;
  const screen = await ask("/api/courier", body);
  show(screen);
  if (screen.kind === "work") showWork(screen);
  else if (screen.kind === "not_accepted" || screen.kind === "offline") $("work").hidden = true;
}

async function courierVisit(event) {
  event.preventDefault();
  courierCode = $("courier-code").value.trim();
  $("courier-code").value = "";
  await courierAct("visit");
}

function courierMode(on) {
  $("pickup").hidden = on;
  $("courier").hidden = !on;
  $("work").hidden = true;
  courierCode = null;
  (on ? $("courier-code") : $("code")).focus();
}

async function refresh() {
  try {
    const state = await (await fetch("/api/state")).json();
    $("link").textContent = state.out_of_service
      ? "This locker is out of service. Please ask the building's staff."
      : state.online
        ? "Online"
        : state.checks_offline
          ? "Offline: pickup codes, QR codes and courier codes still work here"
          : "Offline: codes cannot be checked just now";
    $("link").className = state.online ? "link" : "link offline";
    $("presence").hidden = !state.presence;
    $("presence-code").textContent = state.presence || "";
  } catch (_) {
    $("link").textContent = "This screen has lost its locker";
    $("link").className = "link offline";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("code-form").addEventListener("submit", submitCode);
  document.querySelector(".keypad").addEventListener("click", key);
  $("courier-start").addEventListener("click", () => courierMode(true));
  $("courier-done").addEventListener("click", () => courierMode(false));
  $("courier-form").addEventListener("submit", courierVisit);
  refresh();
  setInterval(refresh, 5000);
});
