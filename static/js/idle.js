/*
 * Idle logoff, the browser half.
 *
 * The server (accounts.middleware.IdleLogoutMiddleware) is what enforces the limit: a request
 * after SESSION_IDLE_MINUTES without one is signed out. This script only makes that humane:
 * it warns before the limit, lets the person stay signed in (a POST to the keepalive URL
 * refreshes the server's clock), and at the limit signs out and shows the sign-in page, so a
 * screen left open at the front desk does not keep showing patient work.
 *
 * Reads, from <body>:
 *   data-idle-minutes           the limit (absent when nobody is signed in: then do nothing)
 *   data-idle-warning-seconds   how long before the limit to warn (default 60)
 *   data-keepalive-url, data-logout-url, data-login-url
 *
 * Tabs of the same browser share the time of the last request through localStorage, so
 * working in one tab keeps an idle second tab from signing the person out.
 */
(function () {
  "use strict";

  var body = document.body;
  var minutes = parseFloat(body.getAttribute("data-idle-minutes"));
  if (!(minutes > 0)) {
    return;
  }

  var STORAGE_KEY = "clinicdesk.lastActivity";
  var limitMs = minutes * 60 * 1000;
  var warningSeconds = parseInt(body.getAttribute("data-idle-warning-seconds"), 10);
  var warningMs = Math.min(limitMs, (warningSeconds > 0 ? warningSeconds : 60) * 1000);
  var keepaliveUrl = body.getAttribute("data-keepalive-url");
  var logoutUrl = body.getAttribute("data-logout-url");
  var loginUrl = body.getAttribute("data-login-url");

  var dialog = document.getElementById("idle-dialog");
  var countdown = dialog ? dialog.querySelector("[data-idle-countdown]") : null;
  var stayButton = dialog ? dialog.querySelector("[data-idle-stay]") : null;
  var signOutButton = dialog ? dialog.querySelector("[data-idle-signout]") : null;

  var lastActivity = 0;
  var signingOut = false;
  var staying = false;

  function readShared() {
    try {
      return parseInt(window.localStorage.getItem(STORAGE_KEY), 10) || 0;
    } catch (e) {
      return 0; // storage disabled: each tab keeps its own clock
    }
  }

  function markActivity() {
    lastActivity = Math.max(lastActivity, Date.now());
    try {
      window.localStorage.setItem(STORAGE_KEY, String(lastActivity));
    } catch (e) {
      /* storage disabled or full: the local clock still works */
    }
  }

  function csrfToken() {
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) {
      return decodeURIComponent(match[1]);
    }
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function idleLoginUrl() {
    var here = window.location.pathname + window.location.search;
    return loginUrl + "?idle=1&next=" + encodeURIComponent(here);
  }

  function goToLogin() {
    signingOut = true;
    window.location.assign(idleLoginUrl());
  }

  // Sign out for real (POST, as Django requires) rather than only showing the sign-in page:
  // if the server's clock runs a little behind ours, a plain navigation would count as
  // activity and keep the session alive.
  function signOut() {
    if (signingOut) {
      return;
    }
    signingOut = true;
    var token = csrfToken();
    if (!logoutUrl || !token) {
      window.location.assign(idleLoginUrl());
      return;
    }
    var form = document.createElement("form");
    form.method = "post";
    form.action = logoutUrl;
    form.hidden = true;
    [
      ["csrfmiddlewaretoken", token],
      ["next", idleLoginUrl()],
    ].forEach(function (pair) {
      var input = document.createElement("input");
      input.type = "hidden";
      input.name = pair[0];
      input.value = pair[1];
      form.appendChild(input);
    });
    body.appendChild(form);
    form.submit();
  }

  function secondsText(ms) {
    var seconds = Math.max(0, Math.ceil(ms / 1000));
    return seconds + (seconds === 1 ? " second" : " seconds");
  }

  function showWarning(remainingMs) {
    if (!dialog) {
      return;
    }
    if (countdown) {
      countdown.textContent = secondsText(remainingMs);
    }
    if (dialog.open) {
      return;
    }
    if (typeof dialog.showModal === "function") {
      dialog.showModal();
    } else {
      dialog.setAttribute("open", "");
    }
    if (stayButton) {
      stayButton.focus();
    }
  }

  function hideWarning() {
    if (!dialog || !dialog.open) {
      return;
    }
    if (typeof dialog.close === "function") {
      dialog.close();
    } else {
      dialog.removeAttribute("open");
    }
  }

  function tick() {
    if (signingOut) {
      return;
    }
    lastActivity = Math.max(lastActivity, readShared());
    var remaining = lastActivity + limitMs - Date.now();
    if (remaining <= 0) {
      signOut();
    } else if (remaining <= warningMs) {
      showWarning(remaining);
    } else {
      hideWarning();
    }
  }

  function stay() {
    if (staying || signingOut) {
      return;
    }
    staying = true;
    if (stayButton) {
      stayButton.setAttribute("aria-disabled", "true");
    }
    window
      .fetch(keepaliveUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrfToken(), "X-Requested-With": "XMLHttpRequest" },
      })
      .then(function (response) {
        if (response.status === 204) {
          markActivity();
          hideWarning();
          tick();
        } else {
          // Redirected to the sign-in page, or refused: the session is gone already.
          goToLogin();
        }
      })
      .catch(function () {
        /* Offline for a moment: leave the warning up so the person can try again. */
      })
      .then(function () {
        staying = false;
        if (stayButton) {
          stayButton.removeAttribute("aria-disabled");
        }
      });
  }

  if (stayButton) {
    stayButton.addEventListener("click", stay);
  }
  if (signOutButton) {
    signOutButton.addEventListener("click", function () {
      signingOut = false;
      signOut();
    });
  }
  if (dialog) {
    // Escape dismisses the warning: the person is clearly there, so treat it as "stay".
    dialog.addEventListener("cancel", function (event) {
      event.preventDefault();
      stay();
    });
  }

  // An htmx request is server activity too, except the self-refreshing polls that send
  // X-Idle-Poll (the server does not count those either).
  body.addEventListener("htmx:afterRequest", function (event) {
    var detail = event.detail || {};
    var headers = (detail.requestConfig && detail.requestConfig.headers) || {};
    if (headers["X-Idle-Poll"]) {
      return;
    }
    var xhr = detail.xhr;
    if (xhr && xhr.responseURL && loginUrl) {
      var landed = new URL(xhr.responseURL, window.location.href);
      if (landed.pathname === loginUrl) {
        // The server signed the person out: show the whole sign-in page, not a fragment.
        signingOut = true;
        window.location.assign(landed.href);
        return;
      }
    }
    if (detail.successful) {
      markActivity();
    }
  });

  // Another tab made a request: its time is ours.
  window.addEventListener("storage", function (event) {
    if (event.key === STORAGE_KEY) {
      tick();
    }
  });
  // Background tabs throttle timers; catch up as soon as the tab is shown again.
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      tick();
    }
  });
  window.addEventListener("pageshow", tick);

  // This page was just served, which the server counted as activity.
  markActivity();
  window.setInterval(tick, 1000);
  tick();
})();
