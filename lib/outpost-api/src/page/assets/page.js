// The status page's script: keeps the tables rendered by the server current by polling
// /api/page/updates?since=<version> (see the status page documentation for the protocol).
// Values are written with textContent only; nothing is loaded from elsewhere.
(function () {
  "use strict";
  var SERIES = 60;
  var NONE = "\u2014";
  var SVG = "http://www.w3.org/2000/svg";
  var body = document.body;
  var version = body.dataset.v;
  var offset = parseFloat(body.dataset.now) - Date.now() / 1000;
  var poll = parseInt(body.dataset.poll, 10) || 2000;
  var live = document.getElementById("live");
  var updates = 0;

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function millis(x) { return x < 1000 ? x.toFixed(1) + " ms" : (x / 1000).toFixed(2) + " s"; }
  function bytes(x) {
    var K = 1024;
    if (x < K) { return x.toFixed(0) + " B"; }
    if (x < K * K) { return (x / K).toFixed(1) + " KiB"; }
    if (x < K * K * K) { return (x / (K * K)).toFixed(1) + " MiB"; }
    return (x / (K * K * K)).toFixed(1) + " GiB";
  }
  function clock(u) {
    var s = Math.floor(Math.max(0, u)) % 86400;
    return pad(Math.floor(s / 3600)) + ":" + pad(Math.floor(s % 3600 / 60)) + ":" + pad(s % 60);
  }
  function left(sec) {
    var s = Math.ceil(Math.max(0, sec));
    if (s >= 3600) { return Math.floor(s / 3600) + "h " + pad(Math.floor(s % 3600 / 60)) + "m"; }
    if (s >= 60) { return Math.floor(s / 60) + "m " + pad(s % 60) + "s"; }
    return s + "s";
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function drawSpark(td) {
    var values = td._s;
    var max = 0;
    values.forEach(function (v) { if (v > max) { max = v; } });
    var step = 120 / (SERIES - 1);
    var start = SERIES - values.length;
    var points = values.map(function (v, i) {
      var y = max > 0 ? 23 - v / max * 22 : 23;
      return ((start + i) * step).toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 120 24");
    svg.setAttribute("width", "120");
    svg.setAttribute("height", "24");
    svg.setAttribute("data-s", values.join(","));
    var line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points);
    svg.appendChild(line);
    td.textContent = "";
    td.appendChild(svg);
  }
  function render(td, fmt, v) {
    if (fmt === "spark") {
      td._s = (v || []).slice(-SERIES);
      drawSpark(td);
      return;
    }
    td.textContent = "";
    if (v === null || v === undefined) {
      if (fmt !== "error" && fmt !== "progress") { td.textContent = NONE; }
      return;
    }
    switch (fmt) {
      case "state":
        td.appendChild(el("span", "st st-" + String(v).replace(/ /g, "-"), String(v)));
        break;
      case "ms": td.textContent = millis(v); break;
      case "bytes": td.textContent = bytes(v); break;
      case "clock": td.textContent = clock(v); break;
      case "error":
        if (v.tb) {
          var d = el("details", "err");
          d.appendChild(el("summary", "", v.m || ""));
          d.appendChild(el("pre", "", v.tb));
          td.appendChild(d);
        } else {
          td.appendChild(el("span", "err", v.m || ""));
        }
        break;
      case "progress":
        var f = Math.min(1, Math.max(0, v));
        var p = document.createElement("progress");
        p.max = 1;
        p.value = f;
        td.appendChild(p);
        td.appendChild(document.createTextNode(" " + Math.round(f * 100) + "%"));
        break;
      case "deadline":
        var s = el("span", "left", left(v - (Date.now() / 1000 + offset)));
        s.dataset.at = v;
        td.appendChild(s);
        break;
      default:
        td.textContent = typeof v === "boolean" ? (v ? "yes" : "no") : String(v);
    }
  }

  var tables = {};
  Array.prototype.forEach.call(document.querySelectorAll("table[data-t]"), function (table) {
    var cols = Array.prototype.map.call(table.querySelectorAll("thead th"), function (th) {
      return { f: th.dataset.f, fmt: th.dataset.fmt };
    });
    var rows = new Map();
    Array.prototype.forEach.call(table.tBodies[0].rows, function (tr) {
      rows.set(Number(tr.dataset.k), tr);
      cols.forEach(function (c, i) {
        if (c.fmt === "spark") {
          var svg = tr.cells[i].querySelector("svg");
          var raw = svg ? svg.getAttribute("data-s") : "";
          tr.cells[i]._s = raw ? raw.split(",").map(Number) : [];
          drawSpark(tr.cells[i]);
        }
      });
    });
    var name = table.dataset.t;
    tables[name] = {
      tbody: table.tBodies[0],
      cols: cols,
      rows: rows,
      count: document.querySelector("[data-count='" + name + "']"),
      box: table.parentNode,
      empty: table.parentNode.previousElementSibling
    };
  });

  function apply(u) {
    Object.keys(u.tables).forEach(function (name) {
      var t = tables[name];
      if (!t) { return; }
      var d = u.tables[name];
      if (u.full) {
        t.rows.forEach(function (tr) { tr.remove(); });
        t.rows.clear();
      }
      d.gone.forEach(function (k) {
        var tr = t.rows.get(k);
        if (tr) { tr.remove(); t.rows.delete(k); }
      });
      d.rows.forEach(function (r) {
        var k = r[0];
        var fields = r[1];
        var tr = t.rows.get(k);
        if (!tr) {
          tr = document.createElement("tr");
          tr.dataset.k = k;
          t.cols.forEach(function (c) {
            var td = document.createElement("td");
            render(td, c.fmt, fields[c.f]);
            tr.appendChild(td);
          });
          t.rows.set(k, tr);
          t.tbody.appendChild(tr);
          return;
        }
        t.cols.forEach(function (c, i) {
          if (!(c.f in fields)) { return; }
          var td = tr.cells[i];
          if (c.fmt === "spark") {
            td._s = (td._s || []).concat(fields[c.f]).slice(-SERIES);
            drawSpark(td);
          } else {
            render(td, c.fmt, fields[c.f]);
          }
        });
      });
      if (d.order) {
        d.order.forEach(function (k) {
          var tr = t.rows.get(k);
          if (tr) { t.tbody.appendChild(tr); }
        });
      }
      if (t.count) { t.count.textContent = String(t.rows.size); }
      if (t.empty) { t.empty.hidden = t.rows.size > 0; }
      t.box.hidden = t.rows.size === 0;
    });
    version = u.v;
    offset = u.now - Date.now() / 1000;
    updates += 1;
    body.dataset.v = version;
    body.dataset.updates = String(updates);
    live.textContent = "live, as of " + clock(u.now) + " UTC";
    live.className = "live";
  }

  function tick() {
    fetch("/api/page/updates?since=" + encodeURIComponent(version), { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(apply)
      .catch(function () {
        live.textContent = "no answer, retrying";
        live.className = "live down";
      })
      .then(function () { setTimeout(tick, poll); });
  }

  setInterval(function () {
    var now = Date.now() / 1000 + offset;
    Array.prototype.forEach.call(document.querySelectorAll(".left[data-at]"), function (s) {
      s.textContent = left(parseFloat(s.dataset.at) - now);
    });
  }, 1000);
  setTimeout(tick, poll);
}());
