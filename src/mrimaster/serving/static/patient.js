// Patient page: the volume-over-time chart (an SVG built here, no library) and the two studies
// of a pair side by side in NiiVue, on one grid, their crosshairs linked.
(function () {
  const section = document.getElementById("followup");
  if (!section) return;
  const data = JSON.parse(section.dataset.followup);
  const SVG = "http://www.w3.org/2000/svg";
  const COLOURS = { WT: "#1f5fbf", TC: "#d9822b", ET: "#c0392b" };

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // x: time (the study dates; equal steps when the dates are all the same day), y: mL
  function chart() {
    const points = data.studies.filter(function (s) { return s.segmented; });
    const figure = document.getElementById("chart");
    if (!figure || points.length === 0) return;
    const W = 640, H = 300, L = 60, R = 110, T = 20, B = 50;
    const times = points.map(function (s) { return Date.parse(s.date.replace(" ", "T")); });
    const t0 = Math.min.apply(null, times), t1 = Math.max.apply(null, times);
    const xs = points.map(function (s, i) {
      if (points.length === 1) return L + (W - L - R) / 2;
      const f = t1 > t0 ? (times[i] - t0) / (t1 - t0) : i / (points.length - 1);
      return L + f * (W - L - R);
    });
    let top = 0;
    points.forEach(function (s) {
      Object.keys(COLOURS).forEach(function (r) { top = Math.max(top, s.volumes_ml[r] || 0); });
    });
    top = top > 0 ? top * 1.1 : 1;
    const y = function (v) { return T + (1 - v / top) * (H - T - B); };
    const svg = el("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img",
                            id: "volume-chart" });
    svg.appendChild(el("title", {}, "Tumour volume (mL) over time"));
    svg.appendChild(el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#5b6475" }));
    svg.appendChild(el("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#5b6475" }));
    for (let k = 0; k <= 4; k++) {
      const v = top * k / 4;
      svg.appendChild(el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end",
                                   "font-size": 11, fill: "#5b6475" }, v.toFixed(0)));
      svg.appendChild(el("line", { x1: L, y1: y(v), x2: W - R, y2: y(v), stroke: "#d9dee7" }));
    }
    svg.appendChild(el("text", { x: 14, y: T + (H - T - B) / 2, "font-size": 11, fill: "#5b6475",
                                 transform: "rotate(-90 14 " + (T + (H - T - B) / 2) + ")",
                                 "text-anchor": "middle" }, "mL"));
    points.forEach(function (s, i) {
      svg.appendChild(el("text", { x: xs[i], y: H - B + 16, "text-anchor": "middle",
                                   "font-size": 11, fill: "#1d2330" }, s.date.slice(0, 10)));
      svg.appendChild(el("text", { x: xs[i], y: H - B + 30, "text-anchor": "middle",
                                   "font-size": 10, fill: "#5b6475" }, "#" + s.case));
    });
    Object.keys(COLOURS).forEach(function (r, n) {
      const pts = [];
      points.forEach(function (s, i) {
        const v = s.volumes_ml[r];
        if (v !== null && v !== undefined) pts.push([xs[i], y(v), v, s]);
      });
      if (pts.length > 1) {
        svg.appendChild(el("polyline", { points: pts.map(function (p) { return p[0] + "," + p[1]; })
                                         .join(" "), fill: "none", stroke: COLOURS[r],
                                         "stroke-width": 2 }));
      }
      pts.forEach(function (p) {
        const dot = el("circle", { cx: p[0], cy: p[1], r: 4, fill: COLOURS[r],
                                   "data-region": r, "data-case": p[3].case,
                                   "data-ml": p[2].toFixed(1) });
        dot.appendChild(el("title", {}, r + " " + p[2].toFixed(1) + " mL (#" + p[3].case + ")"));
        svg.appendChild(dot);
      });
      svg.appendChild(el("rect", { x: W - R + 14, y: T + n * 20, width: 12, height: 12,
                                   fill: COLOURS[r] }));
      svg.appendChild(el("text", { x: W - R + 32, y: T + n * 20 + 11, "font-size": 12,
                                   fill: "#1d2330" }, r));
    });
    figure.insertBefore(svg, figure.firstChild);
  }
  chart();

  // the pair selector shows its registration figure and loads its two studies
  const select = document.getElementById("pair");
  const infos = document.querySelectorAll(".pair-info");
  function showInfo() {
    infos.forEach(function (node) { node.hidden = node.dataset.pair !== select.value; });
  }
  if (select) { showInfo(); select.addEventListener("change", showInfo); }

  // the page does not register (it answers at once): pairs still pending are registered by
  // the API, then their registration figure is shown and the viewers load
  function describe(pair) {
    const node = document.querySelector('.pair-info[data-pair="' + data.pairs.indexOf(pair) + '"]');
    if (!node) return;
    node.textContent = "";
    const p = document.createElement("p");
    if (pair.error) {
      p.className = "error";
      p.textContent = "#" + pair.earlier + " → #" + pair.later + ": " + pair.error;
      node.appendChild(p);
      return;
    }
    const q = pair.quality;
    p.className = "meta";
    p.id = "registration-" + pair.later;
    p.textContent = "#" + pair.later + " onto #" + pair.earlier + " (" + pair.moving_role +
      " onto " + pair.role + "): NMI " + q.nmi.toFixed(3) + ", rotation " +
      q.rotation_deg.toFixed(1) + "°, translation " + q.translation_mm.toFixed(1) +
      " mm, overlap " + (100 * q.overlap).toFixed(0) + "%";
    node.appendChild(p);
    (pair.problems || []).forEach(function (why) {
      const r = document.createElement("p");
      r.className = "reason";
      r.textContent = "Registration not trusted: " + why;
      node.appendChild(r);
    });
    if (pair.matched && pair.matched.error && !(pair.problems || []).length) {
      const r = document.createElement("p");
      r.className = "reason";
      r.textContent = "Not read on one scale: " + pair.matched.error;
      node.appendChild(r);
    }
  }
  let registered = null;
  function register() {
    if (!data.pairs.some(function (p) { return p.pending; })) return Promise.resolve();
    if (!registered) {
      registered = fetch("/api/patients/" + encodeURIComponent(data.pseudonym) + "/followup",
                         { credentials: "same-origin" })
        .then(function (r) {
          if (!r.ok) throw new Error("registration failed: HTTP " + r.status);
          return r.json();
        })
        .then(function (fresh) {
          data.pairs = fresh.pairs;
          data.pairs.forEach(describe);
          // the change "on one scale" comes with the registration: show it in the table
          fresh.studies.forEach(function (s) {
            if (!s.from_previous_matched) return;
            Object.keys(s.from_previous_matched).forEach(function (region) {
              const m = s.from_previous_matched[region];
              const cell = document.querySelector('tr[data-case="' + s.case + '"][data-region="' +
                                                  region + '"] td.from_previous');
              if (!cell || !m || m.ml === null || cell.querySelector(".matched")) return;
              const span = document.createElement("span");
              span.className = "matched";
              span.textContent = "on one scale: " + (m.ml >= 0 ? "+" : "") + m.ml.toFixed(1) +
                " mL" + (m.percent === null ? "" : " (" + (m.percent >= 0 ? "+" : "") +
                m.percent.toFixed(0) + "%)");
              cell.appendChild(document.createElement("br"));
              cell.appendChild(span);
            });
          });
        });
    }
    return registered;
  }

  const left = document.getElementById("viewer-left");
  const right = document.getElementById("viewer-right");
  if (!select || !left || !right || !window.niivue) {
    if (select) register().catch(function (e) { select.dataset.error = String(e); });
    return;
  }
  function viewer(canvas) {
    const nv = new window.niivue.Niivue({ backColor: [0, 0, 0, 1], isColorbar: false });
    nv.attachToCanvas(canvas);
    return nv;
  }
  const nvLeft = viewer(left), nvRight = viewer(right);
  nvLeft.broadcastTo([nvRight], { "2d": true, "3d": true });
  nvRight.broadcastTo([nvLeft], { "2d": true, "3d": true });
  window.mrimasterFollowup = [nvLeft, nvRight];

  function mask(url) {
    return { url: url, name: "mask.nii.gz", colormap: "warm", cal_min: 0.5, cal_max: 4,
             opacity: 0.5 };
  }
  // put both crosshairs on the earlier mask's centre (the same grid: the same place)
  function centre(nv, volume) {
    const dims = volume.hdr.dims, img = volume.img;
    let n = 0, sx = 0, sy = 0, sz = 0;
    for (let i = 0; i < img.length; i++) {
      if (img[i] > 0) {
        n++; sx += i % dims[1]; sy += Math.floor(i / dims[1]) % dims[2];
        sz += Math.floor(i / (dims[1] * dims[2]));
      }
    }
    if (n === 0) return null;
    const a = volume.hdr.affine, v = [sx / n, sy / n, sz / n];
    return [0, 1, 2].map(function (r) {
      return a[r][0] * v[0] + a[r][1] * v[1] + a[r][2] * v[2] + a[r][3];
    });
  }
  async function load() {
    await register();
    const pair = data.pairs[Number(select.value)];
    if (!pair || !pair.files) return;
    document.getElementById("left-title").textContent =
      "earlier: #" + pair.earlier + " (" + pair.role + ")";
    document.getElementById("right-title").textContent =
      "later: #" + pair.later + " registered onto #" + pair.earlier;
    await nvLeft.loadVolumes([{ url: pair.files.earlier_image, name: "earlier.nii.gz" },
                              mask(pair.files.earlier_mask)]);
    await nvRight.loadVolumes([{ url: pair.files.later_image, name: "later.nii.gz" },
                               mask(pair.files.later_mask)]);
    [nvLeft, nvRight].forEach(function (nv) { nv.setSliceType(nv.sliceTypeMultiplanar); });
    const mm = centre(nvLeft, nvLeft.volumes[1]);
    if (mm) {
      [nvLeft, nvRight].forEach(function (nv) {
        nv.scene.crosshairPos = nv.mm2frac(mm);
        nv.drawScene();
      });
    }
    left.dataset.loaded = String(nvLeft.volumes.length);
    right.dataset.loaded = String(nvRight.volumes.length);
  }
  select.addEventListener("change", function () {
    load().catch(function (e) { right.dataset.error = String(e); });
  });
  load().catch(function (e) { right.dataset.error = String(e); });
})();
