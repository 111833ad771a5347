// Admin page: counts, inter-annotator agreement and per-annotator progress, refreshed every
// 15 seconds. Needs a token created with `add-annotator NAME --admin`.
"use strict";

const $ = (id) => document.getElementById(id);
const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
function metric(name, value) {
  const box = el("div", { class: "metric" });
  box.appendChild(el("div", { class: "value" }, value));
  box.appendChild(el("div", { class: "name" }, name));
  return box;
}

function show(section) {
  $("signin").hidden = section !== "signin";
  $("dashboard").hidden = section !== "dashboard";
  $("signout").hidden = section !== "dashboard";
}

async function refresh() {
  try {
    const s = await api("GET", "/api/admin/stats");
    const a = s.agreement;
    $("summary").replaceChildren(
      metric("items", s.items),
      metric(`complete (≥ ${s.per_item} ranking${s.per_item > 1 ? "s" : ""})`, s.items_complete),
      metric("rankings", s.rankings),
      metric("skipped", s.skipped),
      metric("open assignments", s.open),
      metric("items not yet ranked", s.items_by_rankings["0"] ?? 0),
    );
    $("agreement").replaceChildren(
      metric("items compared", a.items_compared),
      metric("annotator pairs", a.comparisons),
      metric("pairwise agreement", pct(a.pairwise_agreement)),
      metric("Kendall tau", a.kendall_tau === null ? "–" : a.kendall_tau.toFixed(3)),
      metric("same best response", pct(a.top1_agreement)),
      metric("safety labels agree", pct(a.safety_agreement)),
    );
    $("annotators").replaceChildren(
      ...s.annotators.map((row) => {
        const tr = el("tr");
        const flags = (row.is_admin ? " (admin)" : "") + (row.active ? "" : " (revoked)");
        tr.appendChild(el("td", {}, row.name + flags));
        tr.appendChild(el("td", { class: "num" }, row.submitted));
        tr.appendChild(el("td", { class: "num" }, row.skipped));
        tr.appendChild(el("td", { class: "num" }, row.open));
        tr.appendChild(el("td", { class: "num" }, row.median_seconds === null ? "–" : row.median_seconds.toFixed(1)));
        tr.appendChild(el("td", { class: "num" }, pct(row.agreement)));
        return tr;
      }),
    );
    $("updated").textContent = "Updated " + new Date().toLocaleTimeString();
    $("status").textContent = "";
    show("dashboard");
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      setToken(null);
      $("signin-error").textContent =
        err.status === 403 ? "That token is not an admin token." : "Sign in with an admin token.";
      show("signin");
      return;
    }
    $("status").textContent = err.message;
    $("status").classList.add("error");
  }
}

function start() {
  takeTokenFromHash();
  setupSignIn($("signin-form"), $("token"), $("signin-error"), (me) => {
    $("who").textContent = me.name;
    refresh();
  });
  $("refresh").addEventListener("click", refresh);
  $("signout").addEventListener("click", () => {
    setToken(null);
    show("signin");
  });
  setInterval(() => { if (!$("dashboard").hidden) refresh(); }, 15000);
  if (!getToken()) {
    show("signin");
    return;
  }
  api("GET", "/api/me")
    .then((me) => { $("who").textContent = me.name; })
    .catch(() => {});
  refresh();
}

document.addEventListener("DOMContentLoaded", start);
