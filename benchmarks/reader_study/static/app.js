// Reader study page: sign in, then score each task; every click is saved at once.
"use strict";

const $ = (id) => document.getElementById(id);
const make = (tag, properties) => Object.assign(document.createElement(tag), properties);
const state = { data: null, index: 0, preset: 0, zoom: 1, dx: 0, dy: 0, shownAt: 0, spent: {}, pending: 0 };

async function api(path, body) {
  const options = body === undefined ? {} :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, { credentials: "same-origin", ...options });
  let payload = {};
  try { payload = await response.json(); } catch (error) { payload = {}; }
  if (!response.ok) {
    const failure = new Error(typeof payload.detail === "string" ? payload.detail : "Request failed (" + response.status + ")");
    failure.status = response.status;
    throw failure;
  }
  return payload;
}

function show(section) {
  $("signin").hidden = section !== "signin";
  $("study").hidden = section !== "study";
}

async function start() {
  try {
    state.data = await api("/api/tasks");
  } catch (error) {
    if (error.status === 401) { show("signin"); $("name").focus(); return; }
    throw error;
  }
  show("study");
  $("reader").textContent = state.data.reader;
  goTo(firstOpen());
}

function firstOpen() {
  const open = state.data.tasks.findIndex((task) => !isDone(task));
  return open === -1 ? state.data.tasks.length : open;
}

function itemKeys(task) {
  return task.kind === "likert" ? state.data.items.map((item) => item.key) : ["preference"];
}

function isDone(task) {
  return itemKeys(task).every((key) => key in task.answers);
}

function remember(index) {
  if (state.shownAt && index < state.data.tasks.length) {
    state.spent[index] = (state.spent[index] || 0) + (performance.now() - state.shownAt) / 1000;
  }
}

function goTo(index) {
  remember(state.index);
  const tasks = state.data.tasks;
  state.index = Math.max(0, Math.min(index, tasks.length));
  state.shownAt = performance.now();
  const finished = state.index === tasks.length;
  $("finished").hidden = !finished;
  $("workspace").hidden = finished;
  updateProgress();
  if (!finished) { render(tasks[state.index]); }
  document.body.dataset.task = finished ? "done" : String(state.index);
  document.body.dataset.kind = finished ? "" : tasks[state.index].kind;
}

function updateProgress() {
  const tasks = state.data.tasks;
  const done = tasks.filter(isDone).length;
  $("progress").max = tasks.length;
  $("progress").value = done;
  $("progress-text").textContent = done + " of " + tasks.length + " done";
  $("position").textContent = state.index < tasks.length ? "Task " + (state.index + 1) + " of " + tasks.length : "";
  document.body.dataset.done = String(done);
}

function render(task) {
  state.preset = Math.min(state.preset, task.windows.length - 1);
  if (task.windows[state.preset] === undefined) { state.preset = 0; }
  renderViewers(task);
  renderWindows(task);
  renderQuestions(task);
  $("prev").disabled = state.index === 0;
  $("next").disabled = !isDone(task);
  preloadNext();
}

function renderViewers(task) {
  const box = $("viewers");
  box.replaceChildren();
  task.images.forEach((image, side) => {
    const viewer = make("div", { className: "viewer" });
    const img = make("img", { alt: task.kind === "likert" ? "Image to score" : "Image " + "AB"[side], draggable: false });
    img.addEventListener("load", applyTransform);
    img.src = image[task.windows[state.preset]];
    viewer.append(img);
    if (task.kind === "ab") { viewer.append(make("span", { className: "side", textContent: "AB"[side] })); }
    attachPanZoom(viewer);
    box.append(viewer);
  });
  state.zoom = 1; state.dx = 0; state.dy = 0;
}

function renderWindows(task) {
  const box = $("windows");
  box.replaceChildren();
  task.windows.forEach((name, index) => {
    const button = make("button", { type: "button", textContent: name });
    button.dataset.window = name;
    button.setAttribute("aria-pressed", String(index === state.preset));
    button.addEventListener("click", () => {
      state.preset = index;
      document.querySelectorAll("#viewers img").forEach((img, side) => { img.src = task.images[side][name]; });
      box.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
    });
    box.append(button);
  });
}

function renderQuestions(task) {
  const box = $("questions");
  box.replaceChildren();
  if (task.kind === "likert") {
    state.data.items.forEach((item) => {
      const scale = make("div", { className: "scale" });
      state.data.scale.forEach((score, position) => {
        const button = choiceButton(task, item.key, score);
        button.append(make("b", { textContent: String(score) }), make("span", { textContent: item.anchors[position] }));
        scale.append(button);
      });
      const set = make("fieldset");
      set.append(make("legend", { textContent: item.title }), scale);
      box.append(set);
    });
  } else {
    const choices = make("div", { className: "choices" });
    [["left", "A is better"], ["equal", "No preference"], ["right", "B is better"]].forEach(([value, text]) => {
      const button = choiceButton(task, "preference", value);
      button.textContent = text;
      choices.append(button);
    });
    const set = make("fieldset");
    set.append(make("legend", { textContent: "Preference" }),
      make("p", { className: "question", textContent: state.data.question }), choices);
    box.append(set);
  }
}

function choiceButton(task, key, value) {
  const button = make("button", { type: "button" });
  button.dataset.item = key;
  button.dataset.value = String(value);
  button.setAttribute("aria-pressed", String(task.answers[key] === value));
  button.addEventListener("click", () => choose(state.index, key, value));
  return button;
}

function choose(index, key, value) {
  const task = state.data.tasks[index];
  task.answers[key] = value;
  document.querySelectorAll('#questions button[data-item="' + key + '"]').forEach((b) => {
    b.setAttribute("aria-pressed", String(b.dataset.value === String(value)));
  });
  $("next").disabled = !isDone(task);
  updateProgress();
  const spent = (state.spent[index] || 0) + (index === state.index ? (performance.now() - state.shownAt) / 1000 : 0);
  save({ task: index, item: key, value: value, seconds: Math.round(spent * 10) / 10 }, 0);
}

function setPending(delta) {
  state.pending += delta;
  document.body.dataset.pending = String(state.pending);
}

async function save(answer, attempt) {
  if (attempt === 0) { setPending(1); }
  $("saved").className = "";
  $("saved").textContent = "Saving\u2026";
  try {
    await api("/api/answer", answer);
    setPending(-1);
    if (state.pending === 0) { $("saved").textContent = "Saved \u2713"; }
  } catch (error) {
    if (error.status === 401) { setPending(-1); show("signin"); return; }
    $("saved").className = "failed";
    $("saved").textContent = "Not saved, retrying\u2026";
    setTimeout(() => save(answer, attempt + 1), Math.min(1000 * 2 ** attempt, 15000));
  }
}

function preloadNext() {
  const next = state.data.tasks[state.index + 1];
  if (next) { next.images.forEach((image) => Object.values(image).forEach((url) => { new Image().src = url; })); }
}

function applyTransform() {
  document.querySelectorAll("#viewers .viewer").forEach((viewer) => {
    const img = viewer.querySelector("img");
    if (!img.naturalWidth) { return; }
    const fit = Math.min(viewer.clientWidth / img.naturalWidth, viewer.clientHeight / img.naturalHeight);
    img.style.width = img.naturalWidth + "px";
    img.style.height = img.naturalHeight + "px";
    img.style.transform = "translate(-50%, -50%) translate(" + state.dx + "px, " + state.dy + "px) scale(" + fit * state.zoom + ")";
  });
}

function zoomBy(factor) {
  state.zoom = Math.max(0.5, Math.min(16, state.zoom * factor));
  applyTransform();
}

function attachPanZoom(viewer) {
  let last = null;
  viewer.addEventListener("wheel", (event) => { event.preventDefault(); zoomBy(event.deltaY < 0 ? 1.15 : 1 / 1.15); }, { passive: false });
  viewer.addEventListener("pointerdown", (event) => { last = [event.clientX, event.clientY]; viewer.classList.add("dragging"); viewer.setPointerCapture(event.pointerId); });
  viewer.addEventListener("pointermove", (event) => {
    if (!last) { return; }
    state.dx += event.clientX - last[0];
    state.dy += event.clientY - last[1];
    last = [event.clientX, event.clientY];
    applyTransform();
  });
  const stop = () => { last = null; viewer.classList.remove("dragging"); };
  viewer.addEventListener("pointerup", stop);
  viewer.addEventListener("pointercancel", stop);
  viewer.addEventListener("dblclick", () => { state.zoom = 1; state.dx = 0; state.dy = 0; applyTransform(); });
}

async function signIn(body) {
  $("signin-error").textContent = "";
  try {
    const result = await api("/api/signin", body);
    if (body.name) { showCode(result.token, true); }
    await start();
  } catch (error) {
    $("signin-error").textContent = error.message;
  }
}

function showCode(token, fresh) {
  state.code = token || state.code;
  const box = $("code-box");
  box.textContent = state.code ?
    (fresh ? "Your personal code (write it down to continue later or on another computer): " : "Your personal code: ") + state.code :
    "Your code was shown when you first signed in; ask the study coordinator if you lost it.";
  box.hidden = false;
}

$("name-form").addEventListener("submit", (event) => { event.preventDefault(); signIn({ name: $("name").value }); });
$("token-form").addEventListener("submit", (event) => { event.preventDefault(); signIn({ token: $("token").value }); });
$("signout").addEventListener("click", async () => { await api("/api/signout", {}); state.data = null; state.code = null; $("code-box").hidden = true; show("signin"); });
$("show-code").addEventListener("click", () => { const box = $("code-box"); if (box.hidden) { showCode(null, false); } else { box.hidden = true; } });
$("prev").addEventListener("click", () => goTo(state.index - 1));
$("next").addEventListener("click", () => {
  const tasks = state.data.tasks;
  const next = state.index + 1;
  goTo(next < tasks.length || tasks.every(isDone) ? next : firstOpen());
});
$("review").addEventListener("click", () => goTo(0));
$("zoom-in").addEventListener("click", () => zoomBy(1.25));
$("zoom-out").addEventListener("click", () => zoomBy(1 / 1.25));
$("zoom-fit").addEventListener("click", () => { state.zoom = 1; state.dx = 0; state.dy = 0; applyTransform(); });
window.addEventListener("resize", applyTransform);
document.body.dataset.pending = "0";
start();
