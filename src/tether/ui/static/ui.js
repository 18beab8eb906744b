// tether dashboard: keep the page's live region current, without reloading.
// The server announces each commit to the store on /api/live (server-sent events); the
// page then fetches its own live region again (header X-Tether-Part: live) and swaps it
// in, unless someone is typing in it: then the swap waits until they are done.
// A run page's timeline is not in that region: the page sends the last event it shows
// (header X-Tether-Seq), the region brings only the events after it
// (template#timeline-delta), and they are added here, newest step first.
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

  var timeline = document.getElementById("timeline");

  // The step group an event list goes to: the newest one when it is the same step (the
  // server groups consecutive events of one step), else a new group on top.
  function addGroup(g) {
    var fresh = Array.prototype.filter.call(g.querySelectorAll("li.ev"), function (e) {
      return !document.getElementById(e.id);  // an event shown already is never shown twice
    });
    if (!fresh.length) { return; }
    var top = timeline.firstElementChild;
    if (top && top.dataset.epoch === g.dataset.epoch && top.dataset.step === g.dataset.step) {
      var list = top.querySelector("ul");
      fresh.forEach(function (e) { list.appendChild(e); });
      return;
    }
    var own = g.querySelector("ul");
    own.textContent = "";
    fresh.forEach(function (e) { own.appendChild(e); });
    timeline.insertBefore(g, top);
  }

  // Keep the newest data-cap events, as a load would show them, and point "older events"
  // at the window before them (a page paged back with ?after= has no cap: its window is
  // bounded by the server).
  function trim() {
    var cap = Number(timeline.dataset.cap || 0);
    if (!cap) { return; }
    var evs = Array.prototype.slice.call(timeline.querySelectorAll("li.ev"));
    evs.sort(function (a, b) { return Number(a.dataset.seq) - Number(b.dataset.seq); });
    evs.slice(0, Math.max(0, evs.length - cap)).forEach(function (e) { e.remove(); });
    Array.prototype.forEach.call(timeline.querySelectorAll("li.step"), function (g) {
      if (!g.querySelector("li.ev")) { g.remove(); }
    });
    var first = timeline.querySelector("li.step:last-child li.ev");
    var start = first ? Number(first.dataset.seq) - 1 : Number(timeline.dataset.last || 0);
    var older = document.getElementById("timeline-older");
    if (older) {
      older.hidden = start <= 0;
      older.querySelector("a").href = "/runs/" + encodeURIComponent(timeline.dataset.run) +
        "?after=" + Math.max(0, start - cap);
    }
  }

  function merge(delta) {
    if (delta.dataset.replace === "1") { timeline.textContent = ""; }
    var groups = delta.content.querySelectorAll("li.step");
    Array.prototype.forEach.call(groups, addGroup);
    var last = Number(delta.dataset.last);
    if (delta.dataset.replace === "1" || last > Number(timeline.dataset.last || 0)) {
      timeline.dataset.last = String(last);
    }
    trim();
  }

  function refresh() {
    if (busy || typingInLive()) { waiting = true; say("changes waiting"); return; }
    busy = true; waiting = false;
    var headers = { "X-Tether-Part": "live" };
    if (timeline && timeline.dataset.last) { headers["X-Tether-Seq"] = timeline.dataset.last; }
    fetch(location.pathname + location.search, {
      headers: headers, credentials: "same-origin", cache: "no-store"
    }).then(function (r) {
      // Signed out (session ended, token revoked): reload, and the page sends us to sign in.
      if (r.status === 401) { location.reload(); throw new Error("signed out"); }
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    }).then(function (html) {
      // Someone began to edit while this was on its way: swapping it in now would put
      // the old values back under their hands (an approval's edited arguments lost, the
      // call run as proposed). Keep their edit; fetch again once they are done.
      if (typingInLive()) { waiting = true; say("changes waiting"); return; }
      live.innerHTML = html;
      var delta = live.querySelector("template#timeline-delta");
      if (delta) {
        if (timeline) { merge(delta); }
        delta.remove();
      }
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
