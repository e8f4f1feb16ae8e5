// flipscope report: sortable tables, the plots, and the flips explorer. No network access.
(function () {
  "use strict";

  function cellValue(cell) {
    const raw = cell.getAttribute("data-sort");
    if (raw === null || raw === "") return null;
    const number = Number(raw);
    return Number.isNaN(number) ? raw.toLowerCase() : number;
  }

  function makeSortable(table) {
    const headers = table.querySelectorAll("th.sortable");
    headers.forEach(function (th, column) {
      th.addEventListener("click", function () {
        const ascending = th.getAttribute("aria-sort") !== "ascending";
        headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        rows.sort(function (a, b) {
          const x = cellValue(a.cells[column]), y = cellValue(b.cells[column]);
          if (x === y) return 0;
          if (x === null) return 1;  // blanks last either way
          if (y === null) return -1;
          return (x < y ? -1 : 1) * (ascending ? 1 : -1);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  }

  function drawPlots() {
    if (typeof Plotly === "undefined") return;
    document.querySelectorAll("div.plot").forEach(function (div) {
      const figure = JSON.parse(document.getElementById(div.id + "-data").textContent);
      Plotly.newPlot(div, figure.data, figure.layout, { responsive: true, displaylogo: false });
    });
  }

  function text(tag, content, className) {
    const node = document.createElement(tag);
    if (content !== undefined && content !== null) node.textContent = String(content);
    if (className) node.className = className;
    return node;
  }

  function percent(p) { return (100 * p).toFixed(1) + "%"; }
  function number(x) { return x === null || x === undefined ? "–" : (Math.abs(x) < 1e-3 && x !== 0 ? x.toExponential(1) : x.toFixed(4)); }

  function explorerRow(item) {
    const tr = document.createElement("tr");
    tr.dataset.task = item.task;
    tr.dataset.candidate = item.candidate;
    tr.dataset.direction = item.direction;
    tr.appendChild(text("td", item.task));
    tr.appendChild(text("td", item.candidate_short));
    tr.appendChild(text("td", item.direction, item.direction === "C→I" ? "c2i" : "i2c"));
    const question = text("td");
    question.appendChild(text("div", item.question || item.item_id));
    question.appendChild(text("div", item.item_id + (item.subject ? " · " + item.subject : ""), "caption"));
    if (item.options.length) {
      const list = document.createElement("ol");
      list.className = "options";
      list.type = "A";
      item.options.forEach(function (option, i) {
        const li = text("li", option + "  (B " + percent(item.baseline_probs[i]) + " · C " + percent(item.candidate_probs[i]) + ")");
        if ("ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i] === item.target) li.className = "right";
        list.appendChild(li);
      });
      question.appendChild(list);
    }
    tr.appendChild(question);
    const answers = text("td");
    answers.appendChild(text("div", "target: " + item.target));
    answers.appendChild(text("div", "baseline: " + item.baseline_answer));
    answers.appendChild(text("div", "candidate: " + item.candidate_answer));
    tr.appendChild(answers);
    if (item.baseline_text || item.candidate_text) {
      const gens = text("td");
      const left = text("div", null, "gen"), right = text("div", null, "gen");
      left.innerHTML = item.baseline_text;   // escaped and diff-marked when the report was written
      right.innerHTML = item.candidate_text;
      gens.appendChild(text("div", "baseline", "caption")); gens.appendChild(left);
      gens.appendChild(text("div", "candidate", "caption")); gens.appendChild(right);
      if (item.degradation) gens.appendChild(text("div", "candidate degraded: " + item.degradation, "caption"));
      tr.appendChild(gens);
    } else {
      tr.appendChild(text("td", "margin " + number(item.margin)));
    }
    tr.appendChild(text("td", "choice KL " + number(item.choice_kl) + " · token KL " + number(item.token_kl)));
    return tr;
  }

  function explorer() {
    const source = document.getElementById("explorer-data");
    if (!source) return;
    const items = JSON.parse(source.textContent);
    const body = document.querySelector("#explorer tbody");
    items.forEach(function (item) { body.appendChild(explorerRow(item)); });
    const filters = ["task", "candidate", "direction"].map(function (name) {
      return document.getElementById("filter-" + name);
    });
    const search = document.getElementById("filter-text");
    const more = document.getElementById("explorer-more");
    const PAGE = 50;  // rows shown at first (and added per click): a sweep flips thousands of items
    let limit = PAGE;
    function apply() {
      let matched = 0;
      const needle = search.value.trim().toLowerCase();
      Array.from(body.rows).forEach(function (row) {
        const keep = filters.every(function (select) {
          return select.value === "" || row.dataset[select.dataset.field] === select.value;
        }) && (needle === "" || row.textContent.toLowerCase().indexOf(needle) >= 0);
        row.hidden = !keep || matched >= limit;
        if (keep) matched += 1;
      });
      const shown = Math.min(matched, limit);
      document.getElementById("explorer-count").textContent = shown + " of " + items.length + " flipped items shown" +
        (matched > shown ? " (" + matched + " match the filters)" : "");
      more.hidden = matched <= shown;
      more.textContent = "show " + Math.min(PAGE, matched - shown) + " more";
    }
    function reset() { limit = PAGE; apply(); }
    filters.forEach(function (select) { select.addEventListener("change", reset); });
    search.addEventListener("input", reset);
    more.addEventListener("click", function () { limit += PAGE; apply(); });
    apply();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.sortable-table").forEach(makeSortable);
    drawPlots();
    explorer();
  });
})();
