// The dashboard's charts: each <canvas data-chart="name"> is drawn from the JSON that the
// page passes with json_script (id "dashboard-charts"). The numbers are the same as in the
// table under each chart; the chart is only a picture of it.
(function () {
  "use strict";

  var PALETTE = ["#0b6e74", "#d97706", "#1f5a96", "#b42318", "#6b4fa8", "#1e6b3a",
    "#8a4b00", "#56606c", "#0891b2", "#be185d", "#4d7c0f", "#7c2d12"];
  var LINE_KINDS = { day_load: true };
  var HORIZONTAL = { load: true, backlog: true, rules: true };

  function datasets(name, spec) {
    var list = Object.keys(spec.series).map(function (label, n) {
      var color = PALETTE[n % PALETTE.length];
      return {
        label: label,
        data: spec.series[label],
        backgroundColor: color,
        borderColor: color,
        borderWidth: LINE_KINDS[name] ? 2 : 0,
        pointRadius: LINE_KINDS[name] ? 2 : 0,
        fill: false
      };
    });
    if (spec.target) {
      list.push({
        type: "line",
        label: "Target (min)",
        data: spec.target,
        borderColor: "#b42318",
        backgroundColor: "#b42318",
        borderDash: [6, 4],
        borderWidth: 2,
        pointRadius: 3,
        fill: false
      });
    }
    if (spec.target_line !== undefined && list.length) {
      // Bars above the target in red, the others in the accent colour.
      list[0].backgroundColor = spec.series[list[0].label].map(function (value) {
        return value !== null && value > spec.target_line ? "#b42318" : "#0b6e74";
      });
    }
    return list;
  }

  function draw(canvas, name, spec) {
    var horizontal = HORIZONTAL[name] || spec.horizontal;
    var rows = spec.labels.length;
    if (horizontal && rows > 8) {
      canvas.parentElement.style.height = Math.min(24 + rows * 22, 900) + "px";
    }
    return new window.Chart(canvas, {
      type: LINE_KINDS[name] ? "line" : "bar",
      data: { labels: spec.labels, datasets: datasets(name, spec) },
      options: {
        animation: false,
        maintainAspectRatio: false,
        indexAxis: horizontal ? "y" : "x",
        plugins: { legend: { position: "bottom" } },
        scales: {
          x: { stacked: !!spec.stacked, beginAtZero: true },
          y: { stacked: !!spec.stacked, beginAtZero: true }
        }
      }
    });
  }

  function start() {
    var source = document.getElementById("dashboard-charts");
    if (!source || !window.Chart) {
      return;
    }
    var specs = JSON.parse(source.textContent);
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var name = canvas.getAttribute("data-chart");
      var spec = specs[name];
      if (!spec || !spec.labels.length) {
        canvas.parentElement.classList.add("dash-chart--empty");
        return;
      }
      draw(canvas, name, spec);
      canvas.setAttribute("data-drawn", "true");
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
