// cacl labelling view: marks on the results of a search by an indexed image (see
// cacl/serve/routes/labels.py). Every mark is stored by the server before it answers.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY = "cacl-labeller";
  let queryName = "";

  function on() {
    return $("labelling").checked;
  }

  function who() {
    const name = $("labeller").value.trim();
    return name || undefined;
  }

  function say(text, error) {
    $("label-status").textContent = text;
    $("label-status").className = error ? "error" : "";
  }

  async function call(url, body) {
    const response = await fetch(url, {
      method: body === undefined ? "GET" : "POST",
      credentials: "same-origin",
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    return { status: response.status, data };
  }

  async function mark(card, op, merge) {
    const b = card.dataset.name;
    const { status, data } = await call("/api/labels", { op, a: queryName, b, merge: !!merge, by: who() });
    if (status === 409 && data.merge && !merge) {
      if (window.confirm(`${data.detail}`)) return mark(card, op, true);
      say("not merged");
      return;
    }
    if (status !== 201) {
      say(data.detail || `HTTP ${status}`, true);
      return;
    }
    card.dataset.mark = op;
    say(op === "same" ? `${b}: same person (identity ${data.identity})` : `${b}: not this person`);
    refresh();
  }

  function decorate() {
    for (const card of document.querySelectorAll("#results .card")) {
      card.querySelectorAll(".marks").forEach((m) => m.remove());
      if (!on() || !queryName) continue;
      const marks = document.createElement("span");
      marks.className = "marks";
      for (const [op, text, title] of [
        ["same", "✓", "same person (s)"],
        ["different", "✗", "not this person (d)"],
      ]) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = `mark-${op}`;
        button.textContent = text;
        button.title = title;
        button.addEventListener("click", (event) => {
          event.preventDefault();
          event.stopPropagation();
          mark(card, op);
        });
        marks.appendChild(button);
      }
      card.appendChild(marks);
    }
  }

  async function refresh() {
    const [{ data: all }, { data: hints }] = await Promise.all([
      call("/api/labels"),
      call("/api/labels/suggest?count=8"),
    ]);
    if (all.you) {
      // a personal token: the server knows who marks
      $("labeller").value = all.you;
      $("labeller").disabled = true;
    }
    const images = (all.identities || []).reduce((n, i) => n + i.images.length, 0);
    $("label-summary").textContent =
      `${(all.identities || []).length} identities, ${images} images, ` +
      `${(all.identities || []).filter((i) => i.cameras.length > 1).length} across cameras`;
    const list = $("suggestions");
    list.replaceChildren(
      ...(hints.suggestions || []).map((s) => {
        const li = document.createElement("li");
        const link = document.createElement("a");
        link.href = `/?name=${encodeURIComponent(s.name)}&top=24&other_cameras=1`;
        link.textContent = s.name;
        link.dataset.name = s.name;
        li.appendChild(link);
        return li;
      }),
    );
  }

  async function undo() {
    const { status, data } = await call("/api/labels/undo", { by: who() });
    say(status === 200 ? "undone" : data.detail || `HTTP ${status}`, status !== 200);
    if (status === 200) refresh();
  }

  function setup() {
    $("labeller").value = localStorage.getItem(KEY) || "";
    $("labeller").addEventListener("change", () => localStorage.setItem(KEY, $("labeller").value.trim()));
    $("labelling").addEventListener("change", () => {
      decorate();
      if (on()) refresh();
    });
    $("undo").addEventListener("click", undo);
    document.addEventListener("cacl:rendered", (event) => {
      queryName = event.detail.query;
      decorate();
    });
    document.addEventListener("keydown", (event) => {
      if (!on() || event.target.tagName === "INPUT") return;
      if (event.key === "u") undo();
      const card = document.activeElement && document.activeElement.closest(".card");
      if (!card || !queryName) return;
      if (event.key === "s") mark(card, "same");
      if (event.key === "d") mark(card, "different");
    });
  }

  document.addEventListener("DOMContentLoaded", setup);
})();
