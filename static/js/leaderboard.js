// Leaderboard page: sortable table columns (keyboard usable: the headings are buttons), and the category
// switch applied as soon as it changes (the form's Show button does the same without JavaScript).
(function () {
  "use strict";
  const table = document.getElementById("leaderboard");
  if (table) {
    const body = table.tBodies[0];
    const headers = Array.from(table.tHead.rows[0].cells);
    headers.forEach((th, column) => {
      const button = th.querySelector("button.sort");
      if (!button) return;
      button.addEventListener("click", () => {
        const ascending = th.getAttribute("aria-sort") !== "ascending";
        const numeric = th.dataset.type === "number";
        const key = (row) => {
          const value = row.cells[column].dataset.sort || row.cells[column].textContent.trim();
          return numeric ? Number(value) : value.toLowerCase();
        };
        const rows = Array.from(body.rows);
        rows.sort((r1, r2) => {
          const k1 = key(r1), k2 = key(r2);
          const order = numeric ? k1 - k2 : k1.localeCompare(k2);
          return ascending ? order : -order;
        });
        headers.forEach((other) => other.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        body.append(...rows);
      });
    });
  }
  const category = document.getElementById("category");
  if (category) category.addEventListener("change", () => category.form.requestSubmit());
})();
