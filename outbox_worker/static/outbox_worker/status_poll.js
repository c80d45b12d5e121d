// A message's page refreshes itself while the message is on its way (pending
// or sending): it asks the admin for the status every few seconds and reloads
// once it changes. Our own file, so the admin's CSP (script-src 'self') allows it.
(function () {
  "use strict";
  var ON_ITS_WAY = ["pending", "sending"];
  var EVERY_MS = 3000;
  var GIVE_UP_AFTER = 200; // ten minutes: a page left open does not poll forever

  function start() {
    var box = document.querySelector(".outbox-live-status[data-poll-url]");
    if (!box || ON_ITS_WAY.indexOf(box.dataset.status) === -1) {
      return;
    }
    var seen = box.dataset.status;
    var polls = 0;
    var timer = window.setInterval(function () {
      polls += 1;
      if (polls > GIVE_UP_AFTER) {
        window.clearInterval(timer);
        return;
      }
      fetch(box.dataset.pollUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (data) {
          if (data && data.status !== seen) {
            window.clearInterval(timer);
            window.location.reload();
          }
        })
        .catch(function () { /* a missed poll is retried at the next tick */ });
    }, EVERY_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
