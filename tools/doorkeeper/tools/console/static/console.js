// doorkeeper console: the only script. Live fragments, import progress, confirmations.
// No inline scripts anywhere (the Content-Security-Policy allows only this file).
"use strict";

function refresh(el) {
  fetch(el.dataset.live, {credentials: "same-origin", headers: {"Accept": "text/html"}})
    .then(function (r) {
      if (r.status === 401) { window.location.reload(); return null; }
      return r.ok ? r.text() : null;
    })
    .then(function (html) { if (html !== null) { el.innerHTML = html; } })
    .catch(function () { el.classList.add("unreachable"); });
}

function followProgress(el) {
  var bar = el.querySelector("progress");
  var prepared = el.querySelector(".prepared");
  var tick = function () {
    fetch(el.dataset.progress, {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (job) {
        if (job === null) { return; }
        bar.value = job.prepared;
        prepared.textContent = String(job.prepared);
        if (job.done) { window.location.reload(); } else { window.setTimeout(tick, 500); }
      });
  };
  tick();
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-live]").forEach(function (el) {
    var every = Math.max(1, Number(el.dataset.every || "5")) * 1000;
    window.setInterval(function () { refresh(el); }, every);
  });
  document.querySelectorAll("[data-progress]").forEach(function (el) {
    if (el.dataset.done !== "yes") { followProgress(el); }
  });
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
    });
  });
});
