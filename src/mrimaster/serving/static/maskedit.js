// Mask editing on the case page, entirely in the browser: the 3D viewer's NiiVue drawing layer
// holds the mask (no request per stroke); Save uploads it once as a gzip NIfTI of uint8 labels
// on the mask's grid, as a new version. Also the versions list, the comparison of two versions,
// the reviewed mark, and the 2D tumour box.
//
// NiiVue 0.69 functions used: setDrawingEnabled, setPenValue (pen per label, 0 = eraser,
// filled pen = outline then fill), opts.penSize, setDrawColormap, setDrawOpacity, loadDrawing
// (of an NVImage.loadFromUrl), drawUndo (redo is kept here: NiiVue has none), drawAddUndoBitmap,
// refreshDrawing, setSliceType, NVImage.img2RAS (the shown image in the drawing's voxel order,
// for region grow) and NVImage.saveToUint8Array (the drawing written with the mask's own header,
// gzip by CompressionStream). Region grow is regiongrow.js (seeded region growing on the CPU):
// NiiVue's drawGrowCut runs on WebGL and ran past 240 s under software WebGL.
(function () {
  "use strict";
  const SEED = 9;  // background seed for region grow: shown grey, never saved (set to 0 after)
  // region grow: only within this many voxels of the labels' bounding box, and only into voxels
  // whose intensity is within this many interquartile ranges of the image's voxels (above its
  // background) of the mean of the region that reaches them. On a BraTS FLAIR (brats_2013_pat0001_1,
  // seeds: its reference labels eroded by 3 voxels) 0.7 IQR grew to whole-tumour Dice 0.75
  // (0.47 the seeds alone) and 0.9 flooded the box without background seeds: 0.6 stays below.
  const GROW_MARGIN = 10, GROW_TOLERANCE = 0.6;
  const LABELS = {
    brats2021: [[1, "necrotic / non-enhancing core", "1"], [2, "edema", "2"],
                [4, "enhancing tumour", "3"]],
    wt: [[1, "whole tumour", "1"]]
  };
  // the app's overlay colours (segmentation/figures.py): core red, edema green, enhancing yellow
  const LUT = { R: [0, 230, 25, 0, 255, 0, 0, 0, 0, 160], G: [0, 25, 204, 0, 230, 0, 0, 0, 0, 160],
                B: [0, 25, 51, 0, 0, 0, 0, 0, 0, 160], A: [0, 255, 255, 0, 255, 0, 0, 0, 0, 255],
                I: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
                labels: ["", "NCR/NET", "edema", "", "enhancing", "", "", "", "", "seed"] };
  const WT_LUT = { R: [0, 255, 0, 0, 0, 0, 0, 0, 0, 160], G: [0, 140, 0, 0, 0, 0, 0, 0, 0, 160],
                   B: [0, 0, 0, 0, 0, 0, 0, 0, 0, 160], A: [0, 255, 0, 0, 0, 0, 0, 0, 0, 255],
                   I: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
                   labels: ["", "tumour", "", "", "", "", "", "", "", "seed"] };

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmt(v, digits) { return v === null || v === undefined ? "—" : Number(v).toFixed(digits); }

  const panel = document.getElementById("mask-versions");
  const caseId = panel ? panel.dataset.case : null;
  const csrf = panel ? panel.dataset.csrf : "";
  const api = caseId ? "/api/cases/" + caseId + "/masks" : "";

  async function listVersions() {
    const r = await fetch(api);
    if (!r.ok) throw new Error("versions: HTTP " + r.status);
    return r.json();
  }

  // -- versions list, reviewed mark, compare form ------------------------------------------
  let state = { versions: [], can_edit: false, reviewed: null, convention: "brats2021" };
  const hooks = { onEditFrom: null };

  function renderVersions() {
    if (!panel) return;
    const body = panel.querySelector("#versions-table tbody");
    body.replaceChildren();
    const masks = state.versions.filter(function (v) { return v.kind === "mask"; });
    masks.forEach(function (v) {
      const tr = el("tr", { "data-version": String(v.number) });
      tr.append(el("td", {}, String(v.number)), el("td", { class: "author" }, v.author),
                el("td", {}, v.created_at.slice(0, 16).replace("T", " ")),
                el("td", {}, v.base_version === null ? "—" : String(v.base_version)));
      ["WT", "TC", "ET"].forEach(function (k) {
        tr.append(el("td", {}, fmt((v.volumes_ml || {})[k], 1)));
      });
      const mark = el("td", { class: "reviewed-cell" });
      if (v.reviewed) {
        mark.append(el("strong", { class: "reviewed-mark" }, "reviewed"));
      } else if (state.can_edit) {
        const b = el("button", { type: "button", class: "small mark-reviewed",
                                 "data-version": String(v.number) }, "Mark reviewed");
        b.addEventListener("click", function () { markReviewed(v.number); });
        mark.append(b);
      }
      const actions = el("td");
      const dl = el("a", { href: v.url, download: "case-" + caseId + "-mask-v" + v.number + ".nii.gz" },
                    "download");
      actions.append(dl);
      if (state.can_edit && hooks.onEditFrom) {
        const e = el("button", { type: "button", class: "small edit-from" }, "edit from this");
        e.addEventListener("click", function () { hooks.onEditFrom(v.number); });
        actions.append(" ", e);
      }
      tr.append(mark, actions);
      body.append(tr);
    });
    ["#compare-a", "#compare-b"].forEach(function (sel, i) {
      const s = panel.querySelector(sel);
      const keep = s.value;
      s.replaceChildren();
      masks.forEach(function (v) {
        s.append(el("option", { value: String(v.number) }, "v" + v.number + " · " + v.author));
      });
      if (keep && masks.some(function (v) { return String(v.number) === keep; })) s.value = keep;
      else if (masks.length) s.value = String(i === 0 ? 0 : masks[masks.length - 1].number);
    });
    const rev = document.getElementById("reviewed-note");
    if (rev) rev.textContent = state.reviewed ? "Reviewed result: version " + state.reviewed.number +
      " (" + state.reviewed.author + ")" : "No version is marked as the reviewed result yet.";
    followReviewed();
  }

  // the volumes table shows the reviewed version's volumes when there is one
  function followReviewed() {
    const table = document.getElementById("volumes");
    if (!table || !state.reviewed || !state.reviewed.volumes_ml) return;
    ["WT", "TC", "ET"].forEach(function (k) {
      const cell = table.querySelector("tr[data-region=" + k + "] td:last-child");
      const v = state.reviewed.volumes_ml[k];
      if (cell && v !== null && v !== undefined) cell.textContent = Number(v).toFixed(1) + " mL";
    });
    const cap = document.getElementById("volumes-source");
    if (cap) cap.textContent = "Volumes of the reviewed version " + state.reviewed.number +
      " (" + state.reviewed.author + ")";
  }

  async function refresh() {
    state = await listVersions();
    renderVersions();
    return state;
  }

  async function markReviewed(n) {
    const r = await fetch(api + "/" + n + "/reviewed", { method: "POST",
                                                         headers: { "X-CSRF-Token": csrf } });
    const status = document.getElementById("versions-status");
    if (!r.ok) { status.textContent = (await r.json()).error || "failed"; return; }
    await refresh();
  }

  async function compare(ev) {
    ev.preventDefault();
    const a = panel.querySelector("#compare-a").value, b = panel.querySelector("#compare-b").value;
    const out = panel.querySelector("#compare-result");
    const r = await fetch(api + "/compare?a=" + encodeURIComponent(a) + "&b=" + encodeURIComponent(b));
    const data = await r.json();
    out.replaceChildren();
    if (!r.ok) { out.append(el("p", { class: "error" }, data.error)); return; }
    const t = el("table", { class: "compare" });
    const head = el("tr");
    ["Region", "Dice", "v" + a + " (mL)", "v" + b + " (mL)", "difference (mL)"].forEach(function (h) {
      head.append(el("th", {}, h));
    });
    t.append(head);
    ["WT", "TC", "ET"].forEach(function (k) {
      const tr = el("tr", { "data-region": k });
      tr.append(el("td", {}, k), el("td", { class: "dice" }, fmt(data.dice[k], 3)),
                el("td", {}, fmt(data.volumes_ml.a[k], 2)), el("td", {}, fmt(data.volumes_ml.b[k], 2)),
                el("td", {}, fmt(data.difference_ml[k], 2)));
      t.append(tr);
    });
    out.append(t);
  }

  // -- the 3D editor -------------------------------------------------------------------------
  function startEditor(nv, maskUrlOf) {
    const bar = document.getElementById("mask-editor");
    if (!bar || !state.can_edit) { if (bar) bar.hidden = true; return null; }
    const status = document.getElementById("edit-status");
    const size = document.getElementById("brush-size");
    const opacity = document.getElementById("mask-opacity");
    const plane = document.getElementById("plane");
    const labels = LABELS[state.convention] || LABELS.brats2021;
    let maskImage = null, base = 0, editing = false, dirty = false, pen = labels[0][0], filled = false;
    const redo = [];
    const toolButtons = bar.querySelector("#tools");
    labels.forEach(function (l) {
      toolButtons.append(el("button", { type: "button", class: "tool", "data-pen": String(l[0]),
                                        title: l[1] + " (key " + l[2] + ")" }, l[1]));
    });
    toolButtons.append(el("button", { type: "button", class: "tool", "data-pen": "0",
                                      title: "eraser (key E)" }, "eraser"));
    toolButtons.append(el("button", { type: "button", class: "tool", "data-pen": String(SEED),
                                      title: "background seed for region grow (key B)" }, "background seed"));

    function say(text) { status.textContent = text; }
    function mark() {
      bar.querySelectorAll(".tool").forEach(function (b) {
        b.classList.toggle("active", Number(b.dataset.pen) === pen);
      });
      document.getElementById("fill").classList.toggle("active", filled);
    }
    function setPen(v) {
      pen = v;
      nv.setPenValue(v, filled && v !== 0);
      mark();
    }
    async function load(n) {
      if (dirty && !window.confirm("Discard the unsaved edits?")) return;
      say("loading version " + n + " ...");
      const img = await window.niivue.NVImage.loadFromUrl({ url: maskUrlOf(n), name: "mask-v" + n + ".nii.gz" });
      if (!nv.loadDrawing(img)) {
        throw new Error("the mask's grid is not the image's: choose the reference image (FLAIR) to edit");
      }
      maskImage = img;
      const baseSelect = document.getElementById("base");
      if (baseSelect) baseSelect.disabled = true;
      base = n;
      dirty = false;
      redo.length = 0;
      nv.setDrawColormap(state.convention === "wt" ? WT_LUT : LUT);
      nv.setDrawOpacity(Number(opacity.value) / 100);
      if (nv.volumes.length > 1) nv.setOpacity(1, 0);  // the drawing shows the mask now
      nv.setDrawingEnabled(true);
      nv.opts.penSize = Number(size.value);
      setPen(pen);
      editing = true;
      bar.dataset.base = String(base);
      bar.dataset.ready = "1";
      say("editing from version " + n + ": draw with the left button; nothing is sent until Save");
    }
    nv.onDrawingChanged = function (action) {
      if (action === "draw") { redo.length = 0; dirty = true; }
      if (action === "undo") dirty = true;
      bar.dataset.changes = String(Number(bar.dataset.changes || "0") + 1);
    };
    function undo() {
      if (!editing) return;
      redo.push(nv.drawBitmap.slice());
      nv.drawUndo();
    }
    function redoOne() {
      if (!editing || !redo.length) return;
      nv.drawBitmap.set(redo.pop());
      nv.drawAddUndoBitmap();
      nv.refreshDrawing(true);
      dirty = true;
    }
    function grow() {
      if (!editing) return;
      if (!window.RegionGrow) { say("region grow is not available: regiongrow.js did not load"); return; }
      const dims = nv.back.dims, n = dims[1] * dims[2] * dims[3];
      const t0 = performance.now();
      const image = nv.volumes[0].img2RAS();  // the shown image, in the drawing's voxel order
      const limit = GROW_TOLERANCE * window.RegionGrow.spread(image, n);
      const result = window.RegionGrow.grow(image, [dims[1], dims[2], dims[3]], nv.drawBitmap, SEED,
                                            { margin: GROW_MARGIN, maxDifference: limit });
      const ms = Math.round(performance.now() - t0);
      if (!result.box) { say("region grow needs a seed: draw a label first"); return; }
      bar.dataset.grown = String(result.grown);
      if (!result.changed) { say("region grow found nothing to add within the tolerance"); return; }
      nv.drawAddUndoBitmap();
      nv.refreshDrawing(true);
      redo.length = 0;
      dirty = true;
      say("region grown from the seeds: " + result.grown + " voxels in " + ms + " ms (undo with Ctrl+Z)");
    }
    async function save() {
      if (!editing) return;
      const b = nv.drawBitmap;
      for (let i = 0; i < b.length; i++) if (b[i] === SEED) b[i] = 0;
      say("saving ...");
      const t0 = performance.now();
      const bytes = await maskImage.saveToUint8Array("mask.nii.gz", nv.drawBitmap);
      const r = await fetch(api + "?base=" + base, {
        method: "POST", body: bytes,
        headers: { "Content-Type": "application/octet-stream", "X-CSRF-Token": csrf } });
      const data = await r.json();
      if (!r.ok) { say("not saved: " + data.error + (data.hint ? " (" + data.hint + ")" : "")); return; }
      base = data.number;
      dirty = false;
      bar.dataset.base = String(base);
      bar.dataset.saved = String(data.number);
      say("saved as version " + data.number + " in " + Math.round(performance.now() - t0) + " ms");
      await refresh();
    }
    bar.querySelector("#edit-start").addEventListener("click", function () {
      const masks = state.versions.filter(function (v) { return v.kind === "mask"; });
      load(masks.length ? masks[masks.length - 1].number : 0).catch(function (e) { say(String(e)); });
    });
    toolButtons.addEventListener("click", function (e) {
      const b = e.target.closest(".tool");
      if (b && editing) setPen(Number(b.dataset.pen));
    });
    document.getElementById("fill").addEventListener("click", function () { filled = !filled; if (editing) setPen(pen); mark(); });
    document.getElementById("undo").addEventListener("click", undo);
    document.getElementById("redo").addEventListener("click", redoOne);
    document.getElementById("grow").addEventListener("click", grow);
    document.getElementById("save-mask").addEventListener("click", function () { save().catch(function (e) { say(String(e)); }); });
    document.getElementById("draw-mode").addEventListener("change", function (e) {
      if (editing) nv.setDrawingEnabled(e.target.checked);
    });
    size.addEventListener("input", function () { nv.opts.penSize = Number(size.value); });
    opacity.addEventListener("input", function () { if (editing) nv.setDrawOpacity(Number(opacity.value) / 100); });
    plane.addEventListener("change", function () { nv.setSliceType(Number(plane.value)); });
    hooks.onEditFrom = function (n) { load(n).catch(function (e) { say(String(e)); }); };
    renderVersions();
    const keys = { e: 0, b: SEED };
    labels.forEach(function (l) { keys[l[2]] = l[0]; });
    document.addEventListener("keydown", function (e) {
      if (!editing || e.target.closest("input, textarea, select")) return;
      const k = e.key.toLowerCase();
      if ((e.ctrlKey || e.metaKey) && k === "z") { e.preventDefault(); if (e.shiftKey) redoOne(); else undo(); return; }
      if ((e.ctrlKey || e.metaKey) && k === "y") { e.preventDefault(); redoOne(); return; }
      if ((e.ctrlKey || e.metaKey) && k === "s") { e.preventDefault(); save(); return; }
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      if (k in keys) setPen(keys[k]);
      else if (k === "f") { filled = !filled; setPen(pen); }
      else if (k === "g") grow();
      else if (k === "[" || k === "]") {
        size.value = String(Math.max(1, Math.min(15, Number(size.value) + (k === "]" ? 2 : -2))));
        nv.opts.penSize = Number(size.value);
      } else if (k === "d") {
        const box = document.getElementById("draw-mode");
        box.checked = !box.checked;
        nv.setDrawingEnabled(box.checked);
      } else if ("acsm".indexOf(k) >= 0) {
        plane.value = String({ a: 0, c: 1, s: 2, m: 3 }[k]);
        nv.setSliceType(Number(plane.value));
      }
    });
    window.addEventListener("beforeunload", function (e) { if (dirty) { e.preventDefault(); e.returnValue = ""; } });
    bar.hidden = false;
    return { load: load, save: save, undo: undo, redo: redoOne, grow: grow };
  }

  // -- the 2D tumour box -----------------------------------------------------------------------
  function startBox() {
    const area = document.getElementById("box-area");
    if (!area) return;
    const img = area.querySelector("img");
    const rect = el("div", { class: "tumour-box", id: "tumour-box" });
    rect.hidden = true;
    area.append(rect);
    let start = null, box = null, saved = null;
    function show(b) {  // b in original pixels
      const sx = img.clientWidth / img.naturalWidth, sy = img.clientHeight / img.naturalHeight;
      rect.style.left = (b[0] * sx) + "px";
      rect.style.top = (b[1] * sy) + "px";
      rect.style.width = ((b[2] - b[0]) * sx) + "px";
      rect.style.height = ((b[3] - b[1]) * sy) + "px";
      rect.hidden = false;
      area.dataset.box = JSON.stringify(b);
    }
    function toPixels(e) {
      const r = img.getBoundingClientRect();
      const x = Math.max(0, Math.min(r.width, e.clientX - r.left));
      const y = Math.max(0, Math.min(r.height, e.clientY - r.top));
      return [x * img.naturalWidth / r.width, y * img.naturalHeight / r.height];
    }
    area.addEventListener("mousedown", function (e) { e.preventDefault(); start = toPixels(e); });
    area.addEventListener("mousemove", function (e) {
      if (!start) return;
      const p = toPixels(e);
      box = [Math.round(Math.min(start[0], p[0])), Math.round(Math.min(start[1], p[1])),
             Math.round(Math.max(start[0], p[0])), Math.round(Math.max(start[1], p[1]))];
      show(box);
    });
    window.addEventListener("mouseup", function () { start = null; });
    window.addEventListener("resize", function () { if (box || saved) show(box || saved); });
    fetch("/api/cases/" + area.dataset.case + "/masks").then(function (r) {
      if (!r.ok) throw new Error("versions: HTTP " + r.status);
      return r.json();
    }).then(function (data) {
      const boxes = data.versions.filter(function (v) { return v.kind === "box" && v.reviewed; });
      if (boxes.length) {
        saved = boxes[boxes.length - 1].box;
        const draw = function () { show(saved); };
        if (img.complete) draw(); else img.addEventListener("load", draw);
        const note = document.getElementById("box-note");
        if (note) note.textContent = "Tumour box saved by " + boxes[boxes.length - 1].author + ": [" + saved.join(", ") + "]";
      }
    }).catch(function (e) {
      const note = document.getElementById("box-note");
      if (note) note.textContent = "The saved box could not be read: " + String(e);
    });
    // the box is saved with the review
    const form = document.getElementById("review-form");
    if (form) form.addEventListener("submit", function (e) {
      if (!box || box[2] - box[0] < 1 || box[3] - box[1] < 1) return;
      e.preventDefault();
      fetch("/api/cases/" + area.dataset.case + "/box", {
        method: "POST", body: JSON.stringify({ box: box }),
        headers: { "Content-Type": "application/json", "X-CSRF-Token": area.dataset.csrf }
      }).then(async function (r) {
        if (!r.ok) {
          const note = document.getElementById("box-note");
          if (note) note.textContent = "The box was not saved: " + (await r.json()).error;
          return;
        }
        box = null;
        form.submit();
      });
    });
  }

  window.mrimasterMasks = {
    start: async function (nv, maskUrlOf) {
      if (!panel) return null;
      await refresh();
      const editor = startEditor(nv, maskUrlOf);
      window.mrimasterEditor = editor;
      return editor;
    }
  };
  if (panel) {
    panel.querySelector("#compare-form").addEventListener("submit", function (e) {
      compare(e).catch(function (err) { panel.querySelector("#compare-result").textContent = String(err); });
    });
    refresh().catch(function (e) { document.getElementById("versions-status").textContent = String(e); });
  }
  startBox();
})();
