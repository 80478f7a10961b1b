// canarywatch status page: live updates, the token, and the silence and outbox forms.
// No framework, no build step. Changes go through the control API (/api/v1/...), whose error
// text is shown as it is: the validation is the CLI's.
(function () {
  "use strict";
  var KEY = "canarywatch.token";
  var POLL_MS = 1000;
  var REFRESH_MS = 10000;

  function token() {
    try { return sessionStorage.getItem(KEY) || ""; } catch (e) { return ""; }
  }
  function headers(json) {
    var h = {};
    var t = token();
    if (t) { h.Authorization = "Bearer " + t; }
    if (json) { h["Content-Type"] = "application/json"; }
    return h;
  }
  function api(method, path, body) {
    return fetch(path, {
      method: method,
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = JSON.parse(text); } catch (e) { data = null; }
        if (!response.ok) {
          var error = new Error((data && data.error) || ("HTTP " + response.status));
          error.status = response.status;
          throw error;
        }
        return data;
      });
    });
  }
  function say(id, text, bad) {
    var el = document.getElementById(id);
    if (!el) { return; }
    el.textContent = text;
    el.hidden = !text;
    el.className = bad ? "error" : "ok-text";
  }
  function explain(error) {
    if (error.status === 401) {
      return error.message + ": enter the API token above (server.token) and try again";
    }
    return error.message;
  }

  // -- the token ----------------------------------------------------------------------------
  var tokenForm = document.getElementById("token-form");
  function showTokenState() {
    say("token-state", token() ? "token set for this tab" : "", false);
  }
  if (tokenForm) {
    tokenForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var input = document.getElementById("token");
      try {
        if (input.value) { sessionStorage.setItem(KEY, input.value); } else { sessionStorage.removeItem(KEY); }
      } catch (e) { /* storage refused: the token is not kept */ }
      input.value = "";
      showTokenState();
    });
    showTokenState();
  }

  // -- live updates -------------------------------------------------------------------------
  var live = document.getElementById("live");
  function refresh() {
    return fetch(location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (text) {
        if (text === null) { return; }
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
        if (!fresh) { return; }
        var open = [];
        live.querySelectorAll("details[open]").forEach(function (d) { open.push(d.id); });
        live.innerHTML = fresh.innerHTML;
        open.forEach(function (id) {
          var d = id && document.getElementById(id);
          if (d) { d.open = true; }
        });
        live.dataset.refreshed = String(Date.now());
      })
      .catch(function () { /* the daemon is away: try again on the next tick */ });
  }
  if (live) {
    var seq = Number(live.dataset.seq || "0");
    var canary = live.dataset.canary || "";
    var cluster = live.dataset.cluster || "";
    var lastRefresh = Date.now();
    var busy = false;
    var tick = function () {
      if (busy) { return; }
      busy = true;
      api("GET", "/api/v1/transitions?after=" + seq)
        .then(function (records) {
          var relevant = false;
          (records || []).forEach(function (r) {
            seq = Math.max(seq, r.seq);
            if (!canary || (r.canary === canary && (!cluster || r.cluster === cluster))) {
              relevant = true;
            }
          });
          if (relevant || Date.now() - lastRefresh > REFRESH_MS) {
            lastRefresh = Date.now();
            return refresh();
          }
          return null;
        }, function () {
          // No token for the API (read-only on loopback): read the page itself instead.
          lastRefresh = Date.now();
          return refresh();
        })
        .then(function () { busy = false; }, function () { busy = false; });
    };
    setInterval(tick, POLL_MS);
  }

  // -- filters ------------------------------------------------------------------------------
  document.querySelectorAll("form.filters select").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  // -- silences -----------------------------------------------------------------------------
  var silenceForm = document.getElementById("silence-form");
  if (silenceForm) {
    silenceForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var f = silenceForm.elements;
      var matchers = f.matchers.value.split("\n").map(function (s) { return s.trim(); })
        .filter(function (s) { return s; });
      var body = { matchers: matchers, duration: f.duration.value.trim(),
        created_by: f.created_by.value, comment: f.comment.value };
      say("silence-result", "creating…", false);
      api("POST", "/api/v1/silences", body).then(function (silence) {
        say("silence-result", "created silence " + silence.id, false);
        setTimeout(function () { location.reload(); }, 300);
      }, function (error) {
        say("silence-result", "Not created: " + explain(error), true);
      });
    });
  }

  // -- buttons: expire a silence, retry or drop an outbox item ------------------------------
  var ACTIONS = {
    expire: { method: "DELETE", path: function (id) { return "/api/v1/silences/" + encodeURIComponent(id); }, done: "expired silence ", out: "silence-result" },
    retry: { method: "POST", path: function (id) { return "/api/v1/outbox/" + encodeURIComponent(id) + "/retry"; }, done: "retrying item ", out: "outbox-result" },
    drop: { method: "DELETE", path: function (id) { return "/api/v1/outbox/" + encodeURIComponent(id); }, done: "dropped item ", out: "outbox-result" }
  };
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-action]") : null;
    if (!button) { return; }
    var action = ACTIONS[button.dataset.action];
    if (!action) { return; }
    var id = button.dataset.id;
    button.disabled = true;
    api(action.method, action.path(id)).then(function () {
      say(action.out, action.done + id, false);
      setTimeout(function () { location.reload(); }, 300);
    }, function (error) {
      button.disabled = false;
      say(action.out, "Failed: " + explain(error), true);
    });
  });
})();
