// The run page's light script: a filterable, paged history table, and plot hover/drag.
// Without it the page still shows everything but the table beyond its first rows.
(function () {
  "use strict";
  var PAGE = 100;
  var raw = document.getElementById("ops-data");
  var data = raw ? JSON.parse(raw.textContent) : null;
  var form = document.getElementById("filters");
  var tbody = document.querySelector("#history-table tbody");
  var status = document.getElementById("table-status");
  var pager = document.getElementById("pager");
  var rows = [], matches = [], page = 0, highlight = null;

  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c];
    });
  }
  function text(v) { return v === null || v === undefined ? "" : String(v); }

  // The encoding is described in lab/report/table.py.
  function decode() {
    var i = 0, t = 0, n = data.i.length;
    for (var k = 0; k < n; k++) {
      var c = data.dict[data.c[k]];
      i += data.i[k]; t += data.t[k];
      rows.push({
        index: i, time: t / 1e4, lat: data.l[k] < 0 ? null : data.l[k] / 10,
        process: text(data.p[k]), f: text(c[0]), key: text(c[1]), type: c[2],
        value: text(data.v[k]), node: text(c[3]), error: text(c[4])
      });
    }
  }

  function filters() {
    var fd = new FormData(form), procs = text(fd.get("process")).split(/[\s,]+/);
    var from = parseFloat(fd.get("from")), to = parseFloat(fd.get("to"));
    return {
      procs: procs.filter(Boolean), key: text(fd.get("key")).trim(),
      f: text(fd.get("f")).trim(), types: fd.getAll("type"),
      from: isNaN(from) ? -Infinity : from, to: isNaN(to) ? Infinity : to
    };
  }

  function apply() {
    var q = filters();
    matches = rows.filter(function (r) {
      return (!q.procs.length || q.procs.indexOf(r.process) >= 0) &&
        (!q.key || r.key === q.key) && (!q.f || r.f === q.f) &&
        q.types.indexOf(r.type) >= 0 && r.time >= q.from && r.time <= q.to;
    });
    page = 0;
    if (highlight !== null) {
      for (var k = 0; k < matches.length; k++) {
        if (matches[k].index === highlight) { page = Math.floor(k / PAGE); break; }
      }
    }
    draw();
  }

  function draw() {
    var pages = Math.max(1, Math.ceil(matches.length / PAGE));
    page = Math.min(Math.max(0, page), pages - 1);
    var html = [];
    matches.slice(page * PAGE, page * PAGE + PAGE).forEach(function (r) {
      html.push('<tr class="t-' + r.type + (r.index === highlight ? " hl" : "") + '"><td>' +
        r.index + "</td><td>" + r.time.toFixed(3) + "</td><td>" + esc(r.process) +
        "</td><td>" + r.type + "</td><td>" + esc(r.f) + "</td><td>" + esc(r.key) +
        '</td><td class="val" title="' + esc(r.value) + '">' + esc(r.value) + "</td><td>" +
        (r.lat === null ? "" : r.lat.toFixed(1)) + "</td><td>" + esc(r.node) + "</td><td>" +
        esc(r.error) + "</td></tr>");
    });
    tbody.innerHTML = html.join("");
    status.textContent = matches.length.toLocaleString() + " of " +
      rows.length.toLocaleString() + " operations match. The full history is in ";
    var a = document.createElement("a");
    a.href = "history.jsonl"; a.textContent = "history.jsonl";
    status.appendChild(a);
    status.appendChild(document.createTextNode("."));
    document.getElementById("page-info").textContent = "page " + (page + 1) + " of " + pages;
  }

  function setFilters(values) {
    form.reset();
    Object.keys(values).forEach(function (name) { form.elements[name].value = values[name]; });
    apply();
    document.getElementById("history").scrollIntoView({ behavior: "smooth" });
  }

  function datalist(id, values) {
    var el = document.getElementById(id);
    values.slice(0, 500).forEach(function (v) {
      var o = document.createElement("option"); o.value = text(v); el.appendChild(o);
    });
  }

  function setupTable() {
    if (!data || !form) { return; }
    decode();
    form.hidden = false; pager.hidden = false;
    var keys = {}, fs = {};
    data.dict.forEach(function (c) { keys[text(c[1])] = 1; fs[text(c[0])] = 1; });
    datalist("key-list", Object.keys(keys).sort()); datalist("f-list", Object.keys(fs).sort());
    var timer = null;
    form.addEventListener("input", function () {
      highlight = null; clearTimeout(timer); timer = setTimeout(apply, 150);
    });
    form.addEventListener("reset", function () { setTimeout(apply, 0); });
    form.addEventListener("submit", function (e) { e.preventDefault(); });
    pager.addEventListener("click", function (e) {
      var what = e.target.getAttribute("data-page");
      if (!what) { return; }
      page = { first: 0, prev: page - 1, next: page + 1, last: Infinity }[what];
      if (page === Infinity) { page = Math.ceil(matches.length / PAGE) - 1; }
      draw();
    });
    document.querySelectorAll(".show-op").forEach(function (a) {
      a.addEventListener("click", function (e) {
        e.preventDefault();
        var index = parseInt(a.getAttribute("data-index"), 10);
        var r = rows.filter(function (x) { return x.index === index; })[0];
        highlight = index;
        setFilters(r ? { key: r.key, from: (r.time - 0.5).toFixed(3),
                         to: (r.time + 0.5).toFixed(3) } : {});
      });
    });
    document.querySelectorAll(".show-window").forEach(function (a) {
      a.addEventListener("click", function (e) {
        e.preventDefault();
        highlight = null;
        setFilters({ from: (+a.getAttribute("data-t0")).toFixed(3),
                     to: (+a.getAttribute("data-t1")).toFixed(3) });
      });
    });
    apply();
  }

  // Plots: a cursor with the time under the mouse; dragging selects a time window.
  function setupPlot(svg) {
    var x0 = +svg.dataset.x0, x1 = +svg.dataset.x1, t0 = +svg.dataset.t0, t1 = +svg.dataset.t1;
    var top = +svg.dataset.top, bottom = +svg.dataset.bottom, ns = "http://www.w3.org/2000/svg";
    function el(name, attrs) {
      var e = document.createElementNS(ns, name);
      Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
      svg.appendChild(e); return e;
    }
    var cursor = el("line", { "class": "cursor", y1: top, y2: bottom, visibility: "hidden" });
    var readout = el("text", { "class": "readout", y: top - 3, visibility: "hidden" });
    var sel = el("rect", { "class": "sel", y: top, height: bottom - top, width: 0,
                           visibility: "hidden" });
    var dragFrom = null;
    function px(e) {
      var p = svg.createSVGPoint(); p.x = e.clientX; p.y = e.clientY;
      var m = svg.getScreenCTM();
      return m ? Math.min(x1, Math.max(x0, p.matrixTransform(m.inverse()).x)) : x0;
    }
    function time(x) { return t0 + (x - x0) * (t1 - t0) / (x1 - x0); }
    svg.addEventListener("mousemove", function (e) {
      var x = px(e);
      cursor.setAttribute("x1", x); cursor.setAttribute("x2", x);
      cursor.setAttribute("visibility", "visible");
      readout.setAttribute("x", Math.min(x + 4, x1 - 70));
      readout.textContent = time(x).toFixed(2) + " s";
      readout.setAttribute("visibility", "visible");
      if (dragFrom !== null) {
        sel.setAttribute("x", Math.min(dragFrom, x));
        sel.setAttribute("width", Math.abs(x - dragFrom));
        sel.setAttribute("visibility", "visible");
      }
    });
    svg.addEventListener("mouseleave", function () {
      cursor.setAttribute("visibility", "hidden"); readout.setAttribute("visibility", "hidden");
    });
    svg.addEventListener("mousedown", function (e) { dragFrom = px(e); e.preventDefault(); });
    window.addEventListener("mouseup", function (e) {
      if (dragFrom === null) { return; }
      var a = dragFrom, b = px(e);
      dragFrom = null; sel.setAttribute("visibility", "hidden");
      if (Math.abs(b - a) < 4 || !data) { return; }
      highlight = null;
      setFilters({ from: time(Math.min(a, b)).toFixed(3), to: time(Math.max(a, b)).toFixed(3) });
    });
  }

  setupTable();
  document.querySelectorAll("svg.plot g.fault").forEach(function (g) {
    g.addEventListener("click", function () {  // a fault band lists its operations
      if (!data) { return; }
      highlight = null;
      setFilters({ from: g.getAttribute("data-start"), to: g.getAttribute("data-end") });
    });
  });
  document.querySelectorAll("figure.window .scroll").forEach(function (box) {
    box.scrollLeft = box.scrollWidth;  // the operation that cannot be placed is on the right
  });
  document.querySelectorAll("svg.plot[data-x0]").forEach(setupPlot);
})();
