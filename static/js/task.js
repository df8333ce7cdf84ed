/*
 * The Task page: action panels, keyboard shortcuts, follow-up quick picks, and a notice when
 * the timeline refresh shows that someone else changed the task.
 *
 *   R  open Resolve and focus its first field
 *   H  open Hold and focus its first field
 *   Esc close the open action panel
 *
 * Without this script every action still works: the one-click actions are plain forms, and a
 * form that failed validation is rendered open by the server.
 */
(function () {
  "use strict";

  var page = document.querySelector("[data-task-page]");
  if (!page) {
    return;
  }

  var toggles = Array.prototype.slice.call(page.querySelectorAll("[data-action-toggle]"));
  var panels = Array.prototype.slice.call(page.querySelectorAll("[data-action-panel]"));

  function toggleFor(name) {
    return page.querySelector('[data-action-toggle="' + name + '"]');
  }

  function firstField(panel) {
    return (
      panel.querySelector("[aria-invalid='true']") ||
      panel.querySelector("input:not([type=hidden]), select, textarea")
    );
  }

  function closeAll(except) {
    panels.forEach(function (panel) {
      if (panel !== except) {
        panel.hidden = true;
      }
    });
    toggles.forEach(function (toggle) {
      var open = except && toggle.getAttribute("data-action-toggle") === except.getAttribute("data-action-panel");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    });
  }

  function open(name) {
    var panel = page.querySelector('[data-action-panel="' + name + '"]');
    if (!panel) {
      return false;
    }
    closeAll(panel);
    panel.hidden = false;
    var field = firstField(panel);
    if (field) {
      field.focus();
    }
    panel.scrollIntoView({ block: "nearest" });
    return true;
  }

  function close(panel) {
    panel.hidden = true;
    var toggle = toggleFor(panel.getAttribute("data-action-panel"));
    if (toggle) {
      toggle.setAttribute("aria-expanded", "false");
      toggle.focus();
    }
  }

  toggles.forEach(function (toggle) {
    toggle.addEventListener("click", function () {
      var name = toggle.getAttribute("data-action-toggle");
      var panel = page.querySelector('[data-action-panel="' + name + '"]');
      if (panel && !panel.hidden) {
        close(panel);
      } else {
        open(name);
      }
    });
  });

  panels.forEach(function (panel) {
    var cancel = panel.querySelector("[data-action-cancel]");
    if (cancel) {
      cancel.addEventListener("click", function () {
        close(panel);
      });
    }
    // A second click on submit while the first request runs must not post twice.
    panel.addEventListener("submit", function () {
      var button = panel.querySelector("button[type=submit]");
      if (button) {
        window.setTimeout(function () {
          button.disabled = true;
        }, 0);
      }
    });
  });

  // A panel the server rendered open (its form had errors): focus the first field to fix.
  panels.forEach(function (panel) {
    if (!panel.hidden) {
      var field = firstField(panel);
      if (field) {
        field.focus();
      }
    }
  });

  function typing(target) {
    if (!target || !target.tagName) {
      return false;
    }
    var tag = target.tagName.toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable;
  }

  var SHORTCUTS = { r: "resolve", h: "hold" };

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    if (document.querySelector("dialog[open]")) {
      return;
    }
    if (event.key === "Escape") {
      var openPanel = panels.filter(function (panel) {
        return !panel.hidden;
      })[0];
      if (openPanel) {
        event.preventDefault();
        close(openPanel);
      }
      return;
    }
    if (typing(event.target)) {
      return;
    }
    var name = SHORTCUTS[event.key.toLowerCase()];
    if (name && open(name)) {
      event.preventDefault();
    }
  });

  // Follow-up quick picks fill the datetime-local input in the clinic's time, which the server
  // interprets it in: counted from the clinic time the page was rendered with (the input's
  // `min`), not from the browser's own time zone.
  var loadedAt = Date.now();

  function parseLocal(value) {
    var m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(value || "");
    return m ? new Date(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]) : new Date();
  }
  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  function localValue(date) {
    return (
      date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      "T" + pad(date.getHours()) + ":" + pad(date.getMinutes())
    );
  }

  page.querySelectorAll("[data-follow-up]").forEach(function (chip) {
    chip.addEventListener("click", function () {
      var input = chip.closest(".field").querySelector("input[type=datetime-local]");
      var when = parseLocal(input.getAttribute("min"));
      when.setTime(when.getTime() + (Date.now() - loadedAt));
      var pick = chip.getAttribute("data-follow-up");
      if (pick === "2h") {
        when.setHours(when.getHours() + 2);
      } else if (pick === "tomorrow") {
        when.setDate(when.getDate() + 1);
        when.setHours(9, 0, 0, 0);
      } else if (pick === "3d") {
        when.setDate(when.getDate() + 3);
        when.setHours(9, 0, 0, 0);
      }
      when.setSeconds(0, 0);
      input.value = localValue(when);
      input.dispatchEvent(new Event("change", { bubbles: true }));
    });
  });

  // The timeline refreshes itself; when it shows a newer version of the task than the one
  // this page's forms carry, say so before the person acts on a stale view.
  var notice = page.querySelector("[data-task-changed]");
  function checkVersion() {
    var timeline = document.getElementById("timeline");
    if (!timeline || !notice) {
      return;
    }
    if (timeline.getAttribute("data-task-version") !== page.getAttribute("data-task-version")) {
      notice.hidden = false;
    }
  }
  document.body.addEventListener("htmx:afterSwap", checkVersion);
  document.body.addEventListener("htmx:afterSettle", checkVersion);
})();
