// The runs index's light script: sort the runs table by clicking a header, filter it by
// text. Without it the table is simply newest first.
(function () {
  "use strict";
  var table = document.getElementById("runs-table");
  if (!table) { return; }
  var tbody = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var rows = Array.prototype.slice.call(tbody.rows);
  var filter = document.getElementById("filter");
  var shown = document.getElementById("shown");

  function value(row, col, numeric) {
    var cell = row.cells[col];
    var v = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    if (!numeric) { return v.trim().toLowerCase(); }
    return v === "" ? null : parseFloat(v);
  }

  function sortBy(col, dir) {
    var numeric = headers[col].getAttribute("data-type") === "num";
    var keyed = rows.map(function (row, k) { return [value(row, col, numeric), k, row]; });
    keyed.sort(function (a, b) {
      if (a[0] === b[0]) { return a[1] - b[1]; }
      if (a[0] === null || a[0] !== a[0]) { return 1; }  // no value: always last
      if (b[0] === null || b[0] !== b[0]) { return -1; }
      return (a[0] < b[0] ? -1 : 1) * dir;
    });
    keyed.forEach(function (k) { tbody.appendChild(k[2]); });
    headers.forEach(function (h, k) {
      if (k === col) { h.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending"); }
      else { h.removeAttribute("aria-sort"); }
    });
  }

  headers.forEach(function (h, col) {
    h.classList.add("sortable");
    h.tabIndex = 0;
    h.title = "sort by " + h.textContent;
    function toggle() {
      var numeric = h.getAttribute("data-type") === "num";
      var now = h.getAttribute("aria-sort");
      var dir = now === "descending" ? 1 : now === "ascending" ? -1 : (numeric ? -1 : 1);
      sortBy(col, dir);
    }
    h.addEventListener("click", toggle);
    h.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(); }
    });
  });

  function applyFilter() {
    var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    var n = 0;
    rows.forEach(function (row) {
      var text = row.textContent.toLowerCase().replace(/\s+/g, " ");
      var hit = words.every(function (w) { return text.indexOf(w) >= 0; });
      row.hidden = !hit;
      if (hit) { n += 1; }
    });
    shown.textContent = n + " of " + rows.length + " runs";
  }

  if (filter) {
    document.getElementById("tools").hidden = false;
    filter.addEventListener("input", applyFilter);
    applyFilter();
  }
})();
