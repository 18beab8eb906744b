// tether dashboard: keep the page's live region current, without reloading.
// The server announces each commit to the store on /api/live (server-sent events); the
// page then fetches its own live region again (header X-Tether-Part: live) and swaps it
// in, unless someone is typing in it: then the swap waits until they are done.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var badge = document.getElementById("live-status");

  function say(text) { if (badge) { badge.textContent = text; badge.dataset.state = text; } }

  // Destructive buttons ask first.
  document.addEventListener("submit", function (ev) {
    var b = ev.submitter;
    var q = b && b.getAttribute("data-confirm");
    if (q && !window.confirm(q)) { ev.preventDefault(); }
  });

  if (!live || !window.EventSource || !window.fetch) { return; }
  var editing = false, waiting = false, busy = false;
  live.addEventListener("input", function () { editing = true; });

  function typingInLive() {
    var a = document.activeElement;
    return editing || (a && live.contains(a) && /^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName));
  }

  function refresh() {
    if (busy || typingInLive()) { waiting = true; say("changes waiting"); return; }
    busy = true; waiting = false;
    fetch(location.pathname + location.search, {
      headers: { "X-Tether-Part": "live" }, credentials: "same-origin", cache: "no-store"
    }).then(function (r) {
      // Signed out (session ended, token revoked): reload, and the page sends us to sign in.
      if (r.status === 401) { location.reload(); throw new Error("signed out"); }
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    }).then(function (html) {
      live.innerHTML = html;
      live.dataset.updated = String(Date.now());
      say("live");
      document.dispatchEvent(new CustomEvent("tether:updated"));
    }).catch(function () { say("update failed"); }).then(function () {
      busy = false;
      if (waiting) { setTimeout(refresh, 50); }
    });
  }

  // Done editing (focus left the form, nothing typed, or the edit abandoned): catch up.
  live.addEventListener("focusout", function () {
    setTimeout(function () { if (waiting && !typingInLive()) { refresh(); } }, 0);
  });
  live.addEventListener("reset", function () { editing = false; if (waiting) { refresh(); } });

  var source = new EventSource("/api/live");
  source.addEventListener("hello", function () { say("live"); });
  source.addEventListener("change", function (ev) {
    try { live.dataset.batch = JSON.parse(ev.data).batch; } catch (e) { /* keep the old */ }
    refresh();
  });
  source.onerror = function () {
    // A refused stream (401: signed out) is closed for good; a dropped one reconnects.
    if (source.readyState === EventSource.CLOSED) { say("signed out?"); refresh(); }
    else { say("reconnecting"); }
  };
})();
