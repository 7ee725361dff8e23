// Admin page: per-reader progress (no scores) and invitations, behind the admin token.
"use strict";

const byId = (id) => document.getElementById(id);
let adminToken = new URLSearchParams(location.hash.slice(1)).get("token") || "";

async function call(path, body) {
  const options = { headers: { Authorization: "Bearer " + adminToken } };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const payload = await response.json().catch(() => ({}));
  if (!response.ok) { throw new Error(typeof payload.detail === "string" ? payload.detail : "Request failed (" + response.status + ")"); }
  return payload;
}

function cell(row, text) {
  const td = document.createElement("td");
  if (text instanceof Node) { td.append(text); } else { td.textContent = text; }
  row.append(td);
}

async function refresh() {
  if (!adminToken) { return; }
  try {
    const data = await call("/api/admin/progress");
    byId("admin-error").textContent = "";
    const body = byId("progress-table").querySelector("tbody");
    body.replaceChildren();
    data.readers.forEach((reader) => {
      const row = document.createElement("tr");
      const bar = document.createElement("progress");
      bar.max = reader.total;
      bar.value = reader.done;
      cell(row, reader.name);
      cell(row, reader.done + " / " + reader.total);
      cell(row, bar);
      cell(row, reader.last_answer || "-");
      cell(row, reader.signed_up);
      body.append(row);
    });
    byId("progress-table").hidden = false;
    byId("invite-form").hidden = false;
    byId("admin-form").hidden = true;
  } catch (error) {
    byId("admin-error").textContent = error.message;
  }
}

byId("admin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  adminToken = byId("admin-token").value.trim();
  refresh();
});
byId("invite-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const result = await call("/api/admin/readers", { name: byId("invite-name").value });
    byId("invite-result").textContent = "Code for " + result.name + ": " + result.token +
      " (give it to the reader privately; they enter it on the sign-in page)";
    byId("invite-result").hidden = false;
    byId("invite-name").value = "";
    refresh();
  } catch (error) {
    byId("admin-error").textContent = error.message;
  }
});
history.replaceState(null, "", location.pathname);  // the token leaves the address bar
refresh();
setInterval(refresh, 10000);
