// Shared helpers for the annotator and admin pages. No framework and no build step: the app is
// served as these files.
//
// Rule: data from the server (prompts, responses, names) is only ever put into the page with
// textContent, never innerHTML, so HTML inside a prompt is shown as text and cannot run.
"use strict";

const TOKEN_KEY = "alignkit-feedback-token";

/** Create an element; `text` goes in with textContent (never parsed as HTML). */
function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/** A token passed as #token=... (from add-annotator's hint) is stored, then removed from the URL. */
function takeTokenFromHash() {
  const match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (match) {
    localStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
}

function getToken() {
  return localStorage.getItem(TOKEN_KEY);
}

function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** Call the JSON API with the stored token; throws ApiError (status 0 for network failures). */
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, "cannot reach the server (" + err.message + ")");
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch (err) {
    payload = null;
  }
  if (!response.ok) {
    let detail = payload && payload.detail ? payload.detail : response.statusText;
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
    throw new ApiError(response.status, String(detail));
  }
  return payload;
}

/** Render a prompt or response (a string or a list of chat messages) into `container`. */
function renderText(container, value) {
  container.replaceChildren();
  if (typeof value === "string") {
    container.appendChild(el("div", { class: "plain" }, value));
    return;
  }
  for (const message of value) {
    const block = el("div", { class: "message role-" + String(message.role).replace(/[^a-z]/g, "") });
    block.appendChild(el("span", { class: "role" }, message.role));
    block.appendChild(el("div", { class: "plain" }, message.content));
    container.appendChild(block);
  }
}

/** Sign-in form handling shared by both pages; `onSignedIn(me)` runs after /api/me succeeds. */
function setupSignIn(form, input, errorBox, onSignedIn) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorBox.textContent = "";
    setToken(input.value.trim());
    try {
      const me = await api("GET", "/api/me");
      input.value = "";
      onSignedIn(me);
    } catch (err) {
      setToken(null);
      errorBox.textContent =
        err.status === 401 ? "That token is not valid. Check it and try again." : err.message;
    }
  });
}
