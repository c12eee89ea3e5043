// cacl person search: one client of the JSON API (see cacl/serve/app.py).
// The URL holds the whole search (name= or query=, top, camera, other_cameras, query_camera,
// st and query_time: ranking by appearance and time),
// so a search is shared by copying the address. Names are shown with textContent only.
"use strict";

const STEP = 24;
const $ = (id) => document.getElementById(id);
let stats = null;

function state() {
  const p = new URLSearchParams(location.search);
  return {
    name: p.get("name") || "",
    query: p.get("query") || "",
    top: Math.max(1, parseInt(p.get("top") || STEP, 10) || STEP),
    camera: p.get("camera") || "",
    other: p.get("other_cameras") === "1",
    queryCamera: p.get("query_camera") || "",
    st: p.get("st") === "1",
    queryTime: p.get("query_time") || "",
  };
}

function urlOf(s) {
  const p = new URLSearchParams();
  if (s.name) p.set("name", s.name);
  if (s.query) p.set("query", s.query);
  if (s.name || s.query || s.top !== STEP) p.set("top", String(s.top));
  if (s.camera) p.set("camera", s.camera);
  if (s.other) p.set("other_cameras", "1");
  if (s.queryCamera) p.set("query_camera", s.queryCamera);
  if (s.st) p.set("st", "1");
  if (s.st && s.queryTime) p.set("query_time", s.queryTime);
  const q = p.toString();
  return q ? `/?${q}` : "/";
}

function go(s, replace) {
  const url = urlOf(s);
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  show();
}

function pathUrl(prefix, name) {
  return prefix + name.split("/").map(encodeURIComponent).join("/");
}

function setStatus(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function api(url, options) {
  const response = await fetch(url, Object.assign({ credentials: "same-origin" }, options));
  if (response.status === 401) {
    location.reload(); // the server answers its sign-in form
    throw new Error("sign in first");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
  return body;
}

function card(hit, queryCamera) {
  const s = state();
  const a = document.createElement("a");
  a.className = "card";
  if (queryCamera !== null && hit.camera === queryCamera) a.classList.add("same-camera");
  a.href = urlOf({ name: hit.name, top: STEP, camera: s.camera, other: s.other, st: s.st });
  a.dataset.name = hit.name;
  a.title = `more like ${hit.name}`;
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = hit.name;
  img.src = pathUrl("/api/thumbs/", hit.name);
  a.appendChild(img);
  const lines = [];
  if (hit.distance !== undefined) lines.push(["distance", hit.distance.toFixed(3)]);
  lines.push(["camera", hit.camera === null ? "camera ?" : `camera ${hit.camera}`]);
  if (hit.time !== undefined && hit.time !== null) lines.push(["time", clock(hit.time)]);
  if (hit.transit !== undefined) lines.push(["transit", `time fit ${hit.transit.toFixed(2)}`]);
  lines.push(["name", hit.name]);
  for (const [cls, text] of lines) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    a.appendChild(span);
  }
  a.addEventListener("click", (event) => {
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    go({ name: hit.name, top: STEP, camera: s.camera, other: s.other, st: s.st, query: "" });
  });
  return a;
}

function render(results, queryCamera, more) {
  const grid = $("results");
  grid.replaceChildren(...results.map((hit) => card(hit, queryCamera)));
  $("more").hidden = !more;
}

function showQuery(s, camera) {
  const figure = $("query");
  if (!s.name && !s.query) {
    figure.hidden = true;
    return;
  }
  figure.hidden = false;
  $("query-img").src = s.name ? pathUrl("/api/images/", s.name) : `/api/queries/${s.query}`;
  const label = s.name ? s.name : "uploaded crop";
  $("query-caption").textContent =
    `${label}${camera === null || camera === undefined ? "" : ` · camera ${camera}`}`;
}

async function show() {
  const s = state();
  $("other-cameras").checked = s.other;
  $("camera").value = s.camera;
  $("by-time").checked = s.st;
  $("query-time").value = s.queryTime;
  showQuery(s, s.queryCamera || null);
  try {
    if (s.name || s.query) {
      setStatus("searching…");
      const p = new URLSearchParams(urlOf(s).slice(2));
      const body = await api(`/api/search?${p}`);
      showQuery(s, body.query.camera);
      render(body.results, body.query.camera, body.results.length >= s.top);
      document.dispatchEvent(new CustomEvent("cacl:rendered", { detail: { query: s.name } }));
      const filter = [s.other ? "other cameras" : "", s.camera ? `camera ${s.camera}` : "",
        body.st ? `by appearance and time, query at ${clock(body.query.time)}` : ""]
        .filter(Boolean)
        .join(", ");
      setStatus(
        `${body.results.length} nearest of ${body.size} images` + (filter ? ` (${filter})` : ""),
      );
    } else {
      setStatus("loading the gallery…");
      const p = new URLSearchParams({ start: "0", count: String(s.top) });
      if (s.camera) p.set("camera", s.camera);
      const body = await api(`/api/gallery?${p}`);
      render(body.results, null, body.results.length >= s.top);
      document.dispatchEvent(new CustomEvent("cacl:rendered", { detail: { query: "" } }));
      setStatus(`newest ${body.results.length} of ${body.size} images: click one to search`);
    }
  } catch (error) {
    render([], null, false);
    setStatus(error.message, true);
  }
}

async function loadStats() {
  stats = await api("/api/stats");
  $("stats").textContent =
    `${stats.size} images · ${stats.kind} index` +
    (stats.added ? ` · ${stats.added} added` : "");
  const select = $("camera");
  const current = state().camera;
  const options = [new Option("all cameras", "")];
  for (const [camera, count] of Object.entries(stats.cameras)) {
    options.push(new Option(`camera ${camera} (${count})`, camera));
  }
  select.replaceChildren(...options);
  select.value = current;
  $("add-panel").hidden = !(stats.writable && stats.uploads);
  $("drop").hidden = !stats.uploads;
  $("time-filter").hidden = !stats.st;
}

// seconds on the site clock as h:mm:ss.s
function clock(seconds) {
  const whole = Math.floor(seconds);
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const sec = (seconds - h * 3600 - m * 60).toFixed(1).padStart(4, "0");
  return `${h}:${String(m).padStart(2, "0")}:${sec}`;
}

async function searchWithFile(file) {
  const s = state();
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("top", String(STEP));
  if (s.camera) form.append("camera", s.camera);
  setStatus("embedding the crop…");
  try {
    const body = await api("/api/search", { method: "POST", body: form });
    // the crop's camera (from its file name) only matters for "other cameras only"
    go({ query: body.query.id, top: STEP, camera: s.camera, other: s.other && body.query.camera !== null,
         queryCamera: body.query.camera || "",
         // by time too when the query's time is typed in and its camera is known
         st: s.st && Boolean(s.queryTime) && body.query.camera !== null, queryTime: s.queryTime });
  } catch (error) {
    setStatus(error.message, true);
  }
}

async function addFiles(event) {
  event.preventDefault();
  const files = $("add-files").files;
  const status = $("add-status");
  if (!files.length) {
    status.textContent = "choose one or more images first";
    status.className = "error";
    return;
  }
  const form = new FormData();
  for (const file of files) form.append("image", file, file.name);
  if ($("add-camera").value) form.append("camera", $("add-camera").value);
  status.textContent = `adding ${files.length} images…`;
  status.className = "";
  try {
    const body = await api("/api/images", { method: "POST", body: form });
    const fresh = body.added.filter((a) => a.new).length;
    status.textContent = `added ${fresh} new of ${body.added.length}; ${body.size} images now`;
    const list = $("added");
    list.replaceChildren(
      ...body.added.map((a) => {
        const li = document.createElement("li");
        const link = document.createElement("a");
        link.href = urlOf({ name: a.name, top: STEP });
        link.textContent = a.name;
        link.dataset.name = a.name;
        li.appendChild(link);
        return li;
      }),
    );
    $("add-form").reset();
    await loadStats();
    if (!state().name && !state().query) show();
  } catch (error) {
    status.textContent = error.message;
    status.className = "error";
  }
}

function setup() {
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) searchWithFile(event.dataTransfer.files[0]);
  });
  $("query-file").addEventListener("change", (event) => {
    if (event.target.files.length) searchWithFile(event.target.files[0]);
    event.target.value = "";
  });
  $("other-cameras").addEventListener("change", (event) =>
    go(Object.assign(state(), { other: event.target.checked, top: STEP })),
  );
  $("camera").addEventListener("change", (event) =>
    go(Object.assign(state(), { camera: event.target.value, top: STEP })),
  );
  $("by-time").addEventListener("change", (event) =>
    go(Object.assign(state(), { st: event.target.checked, top: STEP })),
  );
  $("query-time").addEventListener("change", (event) =>
    go(Object.assign(state(), { queryTime: event.target.value.trim(), top: STEP })),
  );
  $("more").addEventListener("click", () => {
    const s = state();
    go(Object.assign(s, { top: s.top + STEP }), true);
  });
  $("add-form").addEventListener("submit", addFiles);
  $("home").addEventListener("click", (event) => {
    event.preventDefault();
    go({ top: STEP });
  });
  window.addEventListener("popstate", show);
  loadStats()
    .catch((error) => setStatus(error.message, true))
    .then(show);
}

document.addEventListener("DOMContentLoaded", setup);
