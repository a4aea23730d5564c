// The dashboard's only script of its own (htmx does the rest). A live refresh replaces a
// part of the page; while a person is filling in a form inside that part (a reason, a
// payload), the refresh waits, so that what they typed is never thrown away.
(function () {
  "use strict";

  function busy(region) {
    var active = document.activeElement;
    if (active && region.contains(active) && active.closest("form")) {
      return true;
    }
    var fields = region.querySelectorAll("form textarea, form input[type=text]");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value !== fields[i].defaultValue) {
        return true;
      }
    }
    return false;
  }

  document.addEventListener("htmx:beforeRequest", function (evt) {
    var region = evt.detail && evt.detail.elt;
    if (!region || !region.hasAttribute("data-poll")) {
      return;
    }
    if (busy(region)) {
      evt.preventDefault();
      region.classList.add("paused"); // ui.css says so on the page
    } else {
      region.classList.remove("paused");
    }
  });
})();
