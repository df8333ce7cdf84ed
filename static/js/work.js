/*
 * The work pages (My work, Queues, a queue, Holding): keyboard shortcuts and htmx helpers.
 *
 *   n       Next task: submits the page's form[data-next-task]
 *   j / k   move the selection down / up the rows of the list ([data-keyboard-list] tr[data-row])
 *   Enter   open the selected row (its a[data-row-link])
 *
 * Keys are left alone while the person types in a field, or with Ctrl, Alt or Meta held.
 * A list refreshed by htmx keeps the selected row (by its data-task-id) and the ticked boxes
 * of a supervisor's bulk reassignment (hx-preserve on each box; the counts are redone here).
 */
(function () {
  "use strict";

  var SELECTED = "is-selected";
  var selectedId = null;

  function typing(target) {
    if (!target || !target.closest) {
      return false;
    }
    return Boolean(
      target.isContentEditable ||
        target.closest("input, textarea, select, [contenteditable], dialog[open]")
    );
  }

  function rows() {
    return Array.prototype.slice.call(
      document.querySelectorAll("[data-keyboard-list] tbody tr[data-row]")
    );
  }

  function current() {
    return document.querySelector("[data-keyboard-list] tr." + SELECTED);
  }

  function rowKey(row) {
    return row.getAttribute("data-task-id") || row.querySelector("[data-row-link]").href;
  }

  function select(row) {
    var before = current();
    if (before) {
      before.classList.remove(SELECTED);
      before.removeAttribute("aria-current");
    }
    row.classList.add(SELECTED);
    row.setAttribute("aria-current", "true");
    selectedId = rowKey(row);
    var link = row.querySelector("[data-row-link]");
    // Focus the row's link: screen readers announce the task, and Enter opens it natively.
    if (link) {
      link.focus({ preventScroll: true });
    }
    row.scrollIntoView({ block: "nearest" });
  }

  function move(step) {
    var all = rows();
    if (!all.length) {
      return false;
    }
    var index = all.indexOf(current());
    if (index === -1) {
      var focused = document.activeElement && document.activeElement.closest("tr[data-row]");
      index = all.indexOf(focused);
    }
    var next = index === -1 ? (step > 0 ? 0 : all.length - 1) : index + step;
    select(all[Math.max(0, Math.min(all.length - 1, next))]);
    return true;
  }

  function open() {
    var row = current();
    var link = row && row.querySelector("[data-row-link]");
    if (link) {
      link.click();
      return true;
    }
    return false;
  }

  function nextTask() {
    var form = document.querySelector("form[data-next-task]");
    if (!form) {
      return false;
    }
    if (typeof form.requestSubmit === "function") {
      form.requestSubmit();
    } else {
      form.submit();
    }
    return true;
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.altKey || event.metaKey) {
      return;
    }
    if (typing(event.target)) {
      return;
    }
    var handled = false;
    switch (event.key) {
      case "n":
      case "N":
        handled = nextTask();
        break;
      case "j":
        handled = move(1);
        break;
      case "k":
        handled = move(-1);
        break;
      case "Enter":
        // A focused link or button does its own thing; only a selected row needs help.
        if (!event.target.closest || !event.target.closest("a, button")) {
          handled = open();
        }
        break;
    }
    if (handled) {
      event.preventDefault();
    }
  });

  // A click on a row (outside its controls) selects it, so j/k continue from there.
  document.addEventListener("click", function (event) {
    var row = event.target.closest && event.target.closest("[data-keyboard-list] tr[data-row]");
    if (row && !event.target.closest("a, button, input, label, select")) {
      select(row);
    }
  });

  // --- bulk selection (supervisors) ---------------------------------------------------------

  function updateBulk() {
    var form = document.querySelector("form[data-bulk]");
    if (!form) {
      return;
    }
    var boxes = Array.prototype.slice.call(form.querySelectorAll("input[data-pick]"));
    var ticked = boxes.filter(function (box) {
      return box.checked;
    }).length;
    var count = form.querySelector("[data-selected-count]");
    if (count) {
      count.textContent =
        ticked === 0 ? "No tasks selected" : ticked + (ticked === 1 ? " task" : " tasks") + " selected";
    }
    var all = form.querySelector("input[data-select-all]");
    if (all) {
      all.checked = boxes.length > 0 && ticked === boxes.length;
      all.indeterminate = ticked > 0 && ticked < boxes.length;
    }
    var submit = form.querySelector("[data-bulk-submit]");
    if (submit) {
      submit.setAttribute("aria-disabled", ticked === 0 ? "true" : "false");
    }
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches && target.matches("input[data-select-all]")) {
      var form = target.closest("form");
      Array.prototype.forEach.call(form.querySelectorAll("input[data-pick]"), function (box) {
        box.checked = target.checked;
      });
    }
    if (target.matches && target.matches("input[data-pick], input[data-select-all]")) {
      var row = target.closest("tr");
      if (row) {
        row.classList.toggle("is-picked", target.checked);
      }
      updateBulk();
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.matches("form[data-bulk]") && !form.querySelector("input[data-pick]:checked")) {
      event.preventDefault();
      var count = form.querySelector("[data-selected-count]");
      if (count) {
        count.textContent = "Select the tasks to reassign first";
      }
    }
  });

  function markPicked() {
    Array.prototype.forEach.call(document.querySelectorAll("input[data-pick]"), function (box) {
      var row = box.closest("tr");
      if (row) {
        row.classList.toggle("is-picked", box.checked);
      }
    });
  }

  // --- htmx -----------------------------------------------------------------------------------

  // A poll that lands on the sign-in page (the session ended) must not paste that page into
  // the list: idle.js then takes the person to it.
  document.body.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    var loginUrl = document.body.getAttribute("data-login-url");
    if (xhr && xhr.responseURL && loginUrl) {
      if (new URL(xhr.responseURL, window.location.href).pathname === loginUrl) {
        event.detail.shouldSwap = false;
      }
    }
  });

  // After a refresh: the same row selected, the ticks counted again.
  document.body.addEventListener("htmx:afterSwap", function () {
    if (selectedId !== null) {
      var hadFocus = document.activeElement === document.body;
      var row = rows().filter(function (r) {
        return rowKey(r) === selectedId;
      })[0];
      if (row) {
        row.classList.add(SELECTED);
        row.setAttribute("aria-current", "true");
        if (hadFocus) {
          var link = row.querySelector("[data-row-link]");
          if (link) {
            link.focus({ preventScroll: true });
          }
        }
      }
    }
    markPicked();
    updateBulk();
  });

  markPicked();
  updateBulk();
})();
