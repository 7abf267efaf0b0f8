// creapic console: progressive enhancement only. Every page works without this file.
// A "Copy" button (rendered hidden) is shown and copies the value of the element its
// data-copy attribute names.
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
});
