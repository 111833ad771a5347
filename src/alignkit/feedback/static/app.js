// Annotator page: sign in, rank the responses of one item at a time, mark safety, submit or skip.
//
// State is the current annotation, `order` (response indices as displayed, best first) and
// `safe` (by response index). Everything the server sends is rendered with textContent
// (see common.js). A submission is retried on network failure: the server treats a resent
// identical ranking as a duplicate, so a retry can never store it twice.
"use strict";

const state = { annotation: null, order: [], safe: [], selected: null, busy: false };
const $ = (id) => document.getElementById(id);

function show(section) {
  for (const id of ["signin", "task", "done"]) $(id).hidden = id !== section;
  $("signout").hidden = section === "signin";
  $("progress").hidden = section === "signin";
}

function setProgress(progress) {
  if (!progress) return;
  const total = progress.submitted + progress.skipped + progress.open + progress.available;
  const bar = $("progress-bar");
  bar.max = Math.max(total, 1);
  bar.value = progress.submitted + progress.skipped;
  $("progress-text").textContent =
    `${progress.submitted} ranked · ${progress.skipped} skipped · ${progress.available} more available`;
}

function setStatus(text, isError) {
  const box = $("status");
  box.textContent = text;
  box.classList.toggle("error", Boolean(isError));
}

function cardFor(index) {
  return $("responses").querySelector(`li[data-index="${index}"]`);
}

function render() {
  const list = $("responses");
  const item = state.annotation.item;
  // Re-order existing cards rather than rebuilding, so focus and scroll position survive.
  if (list.children.length !== item.responses.length) {
    list.replaceChildren(...item.responses.map((r, i) => buildCard(i, r)));
  }
  state.order.forEach((index, place) => {
    const card = cardFor(index);
    // Move a card only when it is out of place: needless DOM moves disturb focus and drags.
    if (list.children[place] !== card) list.insertBefore(card, list.children[place] || null);
    card.querySelector(".rank").textContent = `#${place + 1}`;
    card.setAttribute("aria-label", `Response ${index + 1}, ranked ${place + 1} of ${state.order.length}`);
    const safe = state.safe[index];
    const toggle = card.querySelector(".safety");
    toggle.textContent = safe ? "Safe" : "Unsafe";
    toggle.setAttribute("aria-pressed", safe ? "false" : "true");
    card.classList.toggle("unsafe", !safe);
    card.classList.toggle("selected", state.selected === index);
    if (state.selected === index) card.setAttribute("aria-current", "true");
    else card.removeAttribute("aria-current");
  });
}

function buildCard(index, response) {
  const card = el("li", { class: "card", "data-index": String(index) });
  const head = el("div", { class: "card-head" });
  const handle = el("span", { class: "handle", title: "Drag to reorder", "aria-hidden": "true" }, "\u2630");
  head.appendChild(handle);
  head.appendChild(el("span", { class: "rank" }));
  head.appendChild(el("span", { class: "label" }, `Response ${index + 1}`));
  const tools = el("span", { class: "tools" });
  const up = el("button", { type: "button", class: "move", "aria-label": `Move response ${index + 1} up` }, "\u25B2");
  const down = el("button", { type: "button", class: "move", "aria-label": `Move response ${index + 1} down` }, "\u25BC");
  const safety = el("button", { type: "button", class: "safety" });
  up.addEventListener("click", () => { select(index); move(-1); });
  down.addEventListener("click", () => { select(index); move(1); });
  safety.addEventListener("click", () => { select(index); toggleSafe(); });
  tools.append(up, down, safety);
  head.appendChild(tools);
  card.appendChild(head);
  const body = el("div", { class: "text response" });
  renderText(body, response);
  card.appendChild(body);
  card.addEventListener("click", (event) => {
    if (!(event.target instanceof HTMLButtonElement)) { select(index); render(); }
  });
  enableDrag(handle, index);
  return card;
}

function select(index) {
  state.selected = index;
}

function move(delta) {
  if (state.selected === null) state.selected = state.order[0];
  const from = state.order.indexOf(state.selected);
  const to = from + delta;
  if (to < 0 || to >= state.order.length) return;
  state.order.splice(from, 1);
  state.order.splice(to, 0, state.selected);
  render();
  cardFor(state.selected).scrollIntoView({ block: "nearest" });
}

function toggleSafe() {
  if (state.selected === null) return;
  state.safe[state.selected] = !state.safe[state.selected];
  render();
}

// Pointer-event dragging works for mouse, pen and touch alike (HTML5 drag and drop does not
// work on phones). Only the handle starts a drag (it has touch-action: none), so the page still
// scrolls on touch elsewhere. Move/up listeners sit on window rather than on a captured
// pointer: reordering moves the card in the DOM, which would silently drop a capture.
function enableDrag(handle, index) {
  handle.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    select(index);
    render();
    cardFor(index).classList.add("dragging");
    const onMove = (e) => {
      const cards = [...$("responses").children];
      let target = cards.length - 1;
      for (let i = 0; i < cards.length; i++) {
        const box = cards[i].getBoundingClientRect();
        if (e.clientY < box.top + box.height / 2) { target = i; break; }
      }
      const from = state.order.indexOf(index);
      if (target !== from) {
        state.order.splice(from, 1);
        state.order.splice(target, 0, index);
        render();
      }
    };
    const onUp = () => {
      window.removeEventListener("pointermove", onMove);
      window.removeEventListener("pointerup", onUp);
      window.removeEventListener("pointercancel", onUp);
      const card = cardFor(index);
      if (card) card.classList.remove("dragging");
    };
    window.addEventListener("pointermove", onMove);
    window.addEventListener("pointerup", onUp);
    window.addEventListener("pointercancel", onUp);
  });
}

function showAnnotation(annotation) {
  state.annotation = annotation;
  const k = annotation.item.responses.length;
  state.order = [...Array(k).keys()];
  // Responses start as safe: annotators mark the unsafe ones (documented in docs/feedback.md).
  state.safe = Array(k).fill(true);
  state.selected = null;
  $("responses").replaceChildren();
  renderText($("prompt"), annotation.item.prompt);
  render();
  show("task");
  // Move focus off the (now hidden) sign-in field so the keyboard shortcuts work at once.
  $("responses").focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

async function loadNext() {
  try {
    const reply = await api("POST", "/api/next");
    setProgress(reply.progress);
    if (reply.annotation) showAnnotation(reply.annotation);
    else { state.annotation = null; show("done"); }
  } catch (err) {
    handleError(err);
  }
}

function handleError(err) {
  if (err.status === 401) {
    setToken(null);
    $("signin-error").textContent = "Your session ended or the token was revoked. Sign in again.";
    show("signin");
    return;
  }
  setStatus(err.message, true);
}

// Resend the same body on network failure with a growing pause; the server answers a resent
// stored ranking with duplicate=true, so retrying is always safe.
async function sendWithRetry(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await api(method, path, body);
    } catch (err) {
      if (err.status !== 0 || attempt >= 8) throw err;
      setStatus("Connection lost; retrying…", true);
      await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 8000)));
    }
  }
}

async function submit() {
  if (!state.annotation || state.busy) return;
  state.busy = true;
  const id = state.annotation.annotation_id;
  try {
    const reply = await sendWithRetry("PUT", `/api/annotations/${id}`, {
      ranking: state.order,
      safe: state.safe,
    });
    setStatus(`Saved ranking #${reply.annotation_id}.`);
    setProgress(reply.progress);
    await loadNext();
  } catch (err) {
    handleError(err);
  } finally {
    state.busy = false;
  }
}

async function skip() {
  if (!state.annotation || state.busy) return;
  state.busy = true;
  try {
    const reply = await sendWithRetry("POST", `/api/annotations/${state.annotation.annotation_id}/skip`);
    setStatus("Skipped.");
    setProgress(reply.progress);
    await loadNext();
  } catch (err) {
    handleError(err);
  } finally {
    state.busy = false;
  }
}

function onKey(event) {
  if ($("task").hidden || event.altKey || event.ctrlKey || event.metaKey) return;
  const target = event.target;
  if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement) return;
  const k = state.order.length;
  if (/^[1-9]$/.test(event.key) && Number(event.key) <= k) {
    select(Number(event.key) - 1);
    render();
    cardFor(state.selected).scrollIntoView({ block: "nearest" });
  } else if (event.key === "ArrowUp") {
    move(-1);
  } else if (event.key === "ArrowDown") {
    move(1);
  } else if (event.key === "s" || event.key === "S") {
    toggleSafe();
  } else if (event.key === "Enter") {
    submit();
  } else if (event.key === "k" || event.key === "K") {
    skip();
  } else {
    return;
  }
  event.preventDefault();
}

async function start() {
  takeTokenFromHash();
  setupSignIn($("signin-form"), $("token"), $("signin-error"), (me) => {
    $("who").textContent = me.name;
    setProgress(me.progress);
    loadNext();
  });
  $("signout").addEventListener("click", () => {
    setToken(null);
    $("who").textContent = "";
    show("signin");
    $("token").focus();
  });
  $("submit").addEventListener("click", submit);
  $("skip").addEventListener("click", skip);
  $("check-again").addEventListener("click", loadNext);
  document.addEventListener("keydown", onKey);
  if (!getToken()) {
    show("signin");
    $("token").focus();
    return;
  }
  try {
    const me = await api("GET", "/api/me");
    $("who").textContent = me.name;
    setProgress(me.progress);
    await loadNext();
  } catch (err) {
    handleError(err);
    if (err.status !== 401) show("signin");
  }
}

document.addEventListener("DOMContentLoaded", start);
