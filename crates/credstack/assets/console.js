// credstack console: dialogs and multi-select. Progressive enhancement only:
// every action is a plain form that works without this script.
(function () {
  "use strict";
  function openDialog(id) {
    var dialog = document.getElementById(id);
    if (dialog && !dialog.open) { dialog.showModal(); }
  }
  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-open]");
    if (opener) { event.preventDefault(); openDialog(opener.getAttribute("data-open")); return; }
    var closer = event.target.closest("[data-close]");
    if (closer) { event.preventDefault(); var d = closer.closest("dialog"); if (d) { d.close(); } }
  });
  function syncSelection(form) {
    var boxes = form.querySelectorAll("input[type=checkbox][data-row]");
    var chosen = Array.prototype.filter.call(boxes, function (b) { return b.checked; }).length;
    form.querySelectorAll("[data-needs-selection]").forEach(function (b) { b.disabled = chosen === 0; });
    var count = form.querySelector("[data-selection-count]");
    if (count) { count.textContent = chosen === 0 ? "" : chosen + " selected"; }
    var all = form.querySelector("input[type=checkbox][data-select-all]");
    if (all) { all.checked = chosen > 0 && chosen === boxes.length; }
  }
  document.addEventListener("change", function (event) {
    var form = event.target.closest("form");
    if (!form) { return; }
    if (event.target.matches("[data-select-all]")) {
      form.querySelectorAll("input[type=checkbox][data-row]").forEach(function (b) { b.checked = event.target.checked; });
    }
    if (event.target.matches("[data-toggle]")) {
      var target = document.getElementById(event.target.getAttribute("data-toggle"));
      if (target) { target.hidden = !event.target.checked; }
    }
    if (event.target.matches("[data-show-when]")) {
      document.querySelectorAll("[data-shown-by='" + event.target.name + "']").forEach(function (el) {
        el.hidden = el.getAttribute("data-shown-for") !== event.target.value;
      });
    }
    syncSelection(form);
  });
  // The grant dialog's search results come and go; what was chosen stays in
  // #grant-selected as checked boxes named customer_ids.
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.matches("[data-candidate]")) { return; }
    var selected = document.getElementById("grant-selected");
    if (!selected) { return; }
    var existing = selected.querySelector("input[value='" + box.value + "']");
    if (box.checked && !existing) {
      var label = document.createElement("label");
      var input = document.createElement("input");
      input.type = "checkbox"; input.name = "customer_ids"; input.value = box.value; input.checked = true;
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + box.getAttribute("data-name")));
      selected.appendChild(label);
    } else if (existing) {
      existing.checked = box.checked;
    }
  });
  function markChosen(root) {
    var selected = document.getElementById("grant-selected");
    if (!selected) { return; }
    root.querySelectorAll("[data-candidate]").forEach(function (box) {
      var chosen = selected.querySelector("input[value='" + box.value + "']");
      box.checked = !!(chosen && chosen.checked);
    });
  }
  function init(root) {
    markChosen(root);
    root.querySelectorAll("form").forEach(syncSelection);
    root.querySelectorAll("dialog[data-open-on-load]").forEach(function (d) { if (!d.open) { d.showModal(); } });
  }
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:afterSwap", function (event) { init(event.target); });
})();
