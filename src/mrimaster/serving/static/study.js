// 3D case page: follow the segmentation job, then show the mask over each modality in NiiVue
// (three planes), with a modality selector, the mask's opacity and, when the case has one, the
// uncertainty map as a heat overlay (off until ticked); then the mask editor and the mask
// versions (maskedit.js).
(function () {
  const study = document.getElementById("study");
  if (!study) return;
  const state = document.getElementById("job-state");
  if (state && (state.dataset.state === "queued" || state.dataset.state === "running")) {
    const bar = document.getElementById("job-progress");
    const poll = async function () {
      const r = await fetch("/api/cases/" + study.dataset.case + "/job");
      if (r.ok) {
        const job = await r.json();
        state.textContent = job.message;
        bar.value = job.progress;
        if (job.state === "done" || job.state === "failed") { window.location.reload(); return; }
      }
      setTimeout(poll, 1500);
    };
    setTimeout(poll, 1000);
    return;
  }
  const canvas = document.getElementById("viewer");
  if (!canvas || !window.niivue) return;
  const files = canvas.dataset.files;
  const base = document.getElementById("base");
  const opacity = document.getElementById("mask-opacity");
  const uncertainty = document.getElementById("uncertainty");  // absent: no uncertainty map
  const nv = new window.niivue.Niivue({ backColor: [0, 0, 0, 1], show3Dcrosshair: true,
                                        isColorbar: false });
  window.mrimasterViewer = nv;
  nv.attachToCanvas(canvas);
  // the uncertainty map (0 = the members agree .. 1) in magenta, transparent at 0: NiiVue's
  // colormapType 1 gives a voxel the alpha (value / cal_min)^2, times the layer's opacity:
  // cal_min 0.5 and opacity 0.5 make it 2 value^2 (0.3: 0.18, 0.5: 0.5, opaque from 0.71)
  nv.addColormap("mrimaster-uncertainty", { R: [255, 255], G: [0, 0], B: [255, 255],
                                            A: [0, 255], I: [0, 255] });
  let heat = null;  // the uncertainty layer, once loaded (after the image and the mask)
  let busy = Promise.resolve();  // the viewer's loads, one after the other
  function serial(task) {
    busy = busy.catch(function () {}).then(task);
    return busy;
  }
  async function show() {
    const mask = { url: files + "mask.nii.gz", name: "mask.nii.gz", colormap: "warm",
                   cal_min: 0.5, cal_max: 4, opacity: Number(opacity.value) / 100 };
    await nv.loadVolumes([{ url: files + base.value + ".nii.gz", name: base.value + ".nii.gz" },
                          mask]);
    nv.setSliceType(nv.sliceTypeMultiplanar);
    try { centreOnMask(nv.volumes[1]); } catch (e) { canvas.dataset.centreError = String(e); }
    canvas.dataset.loaded = String(nv.volumes.length);
    await showUncertainty();
  }
  async function showUncertainty() {
    if (!uncertainty) return;
    if (uncertainty.checked && nv.volumes.indexOf(heat) < 0) {  // not loaded, or show() reloaded
      heat = await nv.addVolumeFromUrl({ url: files + "uncertainty.nii.gz",
                                         name: "uncertainty.nii.gz",
                                         colormap: "mrimaster-uncertainty", cal_min: 0.5,
                                         cal_max: 1 });
      heat.colormapType = 1;
    }
    if (nv.volumes.indexOf(heat) >= 0) {
      heat.opacity = uncertainty.checked ? 0.5 : 0;
      nv.updateGLVolume();
    }
    canvas.dataset.uncertainty = uncertainty.checked ? "on" : "off";
  }
  // put the crosshair on the mask's centre, so the three planes go through the tumour
  function centreOnMask(mask) {
    const dims = mask.hdr.dims, img = mask.img;
    let n = 0, sx = 0, sy = 0, sz = 0;
    for (let i = 0; i < img.length; i++) {
      if (img[i] > 0) {
        const x = i % dims[1], y = Math.floor(i / dims[1]) % dims[2];
        const z = Math.floor(i / (dims[1] * dims[2]));
        n++; sx += x; sy += y; sz += z;
      }
    }
    if (n === 0) return;
    // the file's voxel order -> scanner mm (its affine) -> the viewer's fractions
    const a = mask.hdr.affine, v = [sx / n, sy / n, sz / n, 1];
    const mm = [0, 1, 2].map(function (r) {
      return a[r][0] * v[0] + a[r][1] * v[1] + a[r][2] * v[2] + a[r][3];
    });
    nv.scene.crosshairPos = nv.mm2frac(mm);
    nv.drawScene();
  }
  base.addEventListener("change", function () {
    if (editing()) return;  // the drawing lives on this image's grid: locked while editing
    serial(show).catch(function (e) { canvas.dataset.error = String(e); });
  });
  const editor = document.getElementById("mask-editor");
  const editing = function () { return editor && editor.dataset.ready === "1"; };
  opacity.addEventListener("input", function () {
    // while editing, the drawing layer shows the mask (maskedit.js sets its opacity)
    if (nv.volumes.length > 1 && !editing()) nv.setOpacity(1, Number(opacity.value) / 100);
  });
  if (uncertainty) {
    uncertainty.addEventListener("change", function () {
      serial(showUncertainty).catch(function (e) { canvas.dataset.error = String(e); });
    });
  }
  let started = false;
  serial(show).then(function () {
    if (started || !window.mrimasterMasks) return;
    started = true;
    return window.mrimasterMasks.start(nv, function (n) {
      return "/api/cases/" + study.dataset.case + "/masks/" + n;
    });
  }).catch(function (e) { canvas.dataset.error = String(e); });
})();
