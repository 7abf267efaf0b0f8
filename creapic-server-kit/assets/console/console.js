// creapic console: progressive enhancement only. Every page works without this file.
// A "Copy" button (rendered hidden) is shown and copies the value of the element its
// data-copy attribute names. A playground job's progress section (#progress) that carries
// data-poll is re-fetched from that URL every second and swapped in, until the fresh copy
// has no data-poll (the job finished) or five fetches in a row failed.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target || !navigator.clipboard) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(target.value || target.textContent).then(
        function () {
          button.textContent = "Copied";
        },
        function () {
          target.select();
          button.textContent = "Press Ctrl+C to copy";
        }
      );
    });
  });
  pollProgress(0);
});

var POLL_MS = 1000;
var POLL_FAILURES_MAX = 5;

function pollProgress(failures) {
  var current = document.getElementById("progress");
  var url = current && current.getAttribute("data-poll");
  if (!url || failures >= POLL_FAILURES_MAX) {
    return;
  }
  window.setTimeout(function () {
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("progress: " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("progress");
        if (!fresh) {
          throw new Error("progress: no section");
        }
        current.replaceWith(document.importNode(fresh, true));
        pollProgress(0);
      })
      .catch(function () {
        pollProgress(failures + 1);
      });
  }, POLL_MS);
}
