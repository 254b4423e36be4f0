// Seeded region growing on the CPU, for the mask editor (maskedit.js): a pure function over typed
// arrays, no DOM, deterministic (ties go to the entry queued first).
//
// Adams R, Bischof L. Seeded region growing. IEEE Trans. Pattern Anal. Mach. Intell.
// 1994;16(6):641-647. Each label value is one region A_i, seeded by every voxel that already
// carries it (the doctor's strokes, the AI's mask, the background seed). The paper's boundary
// set T holds the unlabelled voxels with a labelled neighbour; each step takes the x in T with
// the smallest
//     delta(x) = | g(x) - mean_{y in A_i} g(y) |,
// A_i the region that reaches x, gives x to A_i and updates A_i's running mean. The paper's
// sequentially sorted list is a binary heap here. A voxel that several regions reach is queued
// again whenever a region offers it a smaller delta (with that region's mean of the moment) and
// goes to the smallest; the paper flags such voxels as boundary instead (cf. Mehnert and
// Jackway's improved SRG, Pattern Recognit. Lett. 1997;18(10):1065-1071, which also gives them
// to the nearest region).
//
// Two limits keep it local and fast: voxels are visited only inside the bounding box of the
// non-background seeds widened by `margin` voxels, and a voxel whose delta exceeds
// `maxDifference` is never queued (so a region stops at an edge rather than flooding the
// brain). Seeds are never changed; the background seed's voxels are set to 0 at the end.
// spread() gives a scale for that limit in the image's own units (its interquartile range).
(function (root) {
  "use strict";

  // A binary min-heap of (delta, voxel, label), ordered by delta, then by the order of pushes.
  function Queue(capacity) {
    this.delta = new Float64Array(capacity);
    this.order = new Float64Array(capacity);
    this.voxel = new Int32Array(capacity);
    this.label = new Uint8Array(capacity);
    this.size = 0;
    this.pushed = 0;
    this.topVoxel = -1;
    this.topLabel = 0;
  }
  Queue.prototype.enlarge = function () {
    const n = this.delta.length * 2;
    const d = new Float64Array(n), o = new Float64Array(n), v = new Int32Array(n),
          l = new Uint8Array(n);
    d.set(this.delta); o.set(this.order); v.set(this.voxel); l.set(this.label);
    this.delta = d; this.order = o; this.voxel = v; this.label = l;
  };
  Queue.prototype.push = function (delta, voxel, label) {
    if (this.size === this.delta.length) this.enlarge();
    const D = this.delta, O = this.order, V = this.voxel, L = this.label;
    const order = this.pushed++;
    let i = this.size++;
    while (i > 0) {  // move the hole up past every parent that comes later
      const p = (i - 1) >> 1;
      if (D[p] < delta || (D[p] === delta && O[p] < order)) break;
      D[i] = D[p]; O[i] = O[p]; V[i] = V[p]; L[i] = L[p];
      i = p;
    }
    D[i] = delta; O[i] = order; V[i] = voxel; L[i] = label;
  };
  // removes the first entry; its voxel and label are left in topVoxel and topLabel
  Queue.prototype.pop = function () {
    const D = this.delta, O = this.order, V = this.voxel, L = this.label;
    this.topVoxel = V[0];
    this.topLabel = L[0];
    const n = --this.size;
    if (n === 0) return;
    const d = D[n], o = O[n], v = V[n], l = L[n];
    let i = 0;
    for (;;) {  // move the hole down past every child that comes earlier than the last entry
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && (D[c + 1] < D[c] || (D[c + 1] === D[c] && O[c + 1] < O[c]))) c++;
      if (d < D[c] || (d === D[c] && o < O[c])) break;
      D[i] = D[c]; O[i] = O[c]; V[i] = V[c]; L[i] = L[c];
      i = c;
    }
    D[i] = d; O[i] = o; V[i] = v; L[i] = l;
  };

  // [x0, y0, z0, x1, y1, z1] (x1 exclusive) of the labels other than 0 and `background`, or null
  function seedBox(labels, nx, ny, nz, background) {
    let x0 = nx, y0 = ny, z0 = nz, x1 = -1, y1 = -1, z1 = -1, i = 0;
    for (let z = 0; z < nz; z++) {
      for (let y = 0; y < ny; y++) {
        for (let x = 0; x < nx; x++, i++) {
          const v = labels[i];
          if (v === 0 || v === background) continue;
          if (x < x0) x0 = x;
          if (x > x1) x1 = x;
          if (y < y0) y0 = y;
          if (y > y1) y1 = y;
          if (z < z0) z0 = z;
          if (z > z1) z1 = z;
        }
      }
    }
    return x1 < 0 ? null : [x0, y0, z0, x1 + 1, y1 + 1, z1 + 1];
  }

  /**
   * Grow every labelled region over the unlabelled voxels, in place.
   *
   * image: typed array of intensities, at least nx*ny*nz, x fastest (the drawing's voxel order).
   * dims: [nx, ny, nz].
   * labels: Uint8Array of nx*ny*nz; 0 = unlabelled, any other value a seed of that region.
   * background: the background seed's label value (grows like the others, then set to 0), or
   *   null for none.
   * options: margin (voxels around the seeds' box, default 10), maxDifference (largest
   *   delta in image units that a voxel may join with; default, or null: no limit).
   * Returns {grown: voxels given a non-background label, changed: voxels whose label changed
   *   (grown and cleared background seeds), box: the box visited (x1 exclusive) or null when
   *   there is no non-background seed (nothing is changed then)}.
   */
  function grow(image, dims, labels, background, options) {
    const nx = dims[0], ny = dims[1], nz = dims[2], n = nx * ny * nz;
    if (labels.length !== n || image.length < n) {
      throw new Error("region grow: labels have " + labels.length + " voxels and the image " +
                      image.length + ", the grid " + nx + "x" + ny + "x" + nz + " has " + n);
    }
    const opts = options || {};
    const margin = opts.margin == null ? 10 : opts.margin;
    const maxDifference = opts.maxDifference == null ? Infinity : opts.maxDifference;
    const bg = background == null ? null : background;
    const seeds = seedBox(labels, nx, ny, nz, bg);
    if (seeds === null) return { grown: 0, changed: 0, box: null };
    const box = [Math.max(0, seeds[0] - margin), Math.max(0, seeds[1] - margin),
                 Math.max(0, seeds[2] - margin), Math.min(nx, seeds[3] + margin),
                 Math.min(ny, seeds[4] + margin), Math.min(nz, seeds[5] + margin)];
    const sx = box[3] - box[0], sy = box[4] - box[1], sz = box[5] - box[2], sxy = sx * sy;
    const m = sxy * sz;
    // the box's intensities and labels, local index x + sx*y + sxy*z
    const g = new Float64Array(m), lab = new Uint8Array(m);
    for (let z = 0, i = 0; z < sz; z++) {
      for (let y = 0; y < sy; y++) {
        const from = box[0] + nx * (box[1] + y) + nx * ny * (box[2] + z);
        for (let x = 0; x < sx; x++, i++) {
          g[i] = image[from + x];
          lab[i] = labels[from + x];
        }
      }
    }
    // each region's running mean: sum and count over its voxels in the box
    const sum = new Float64Array(256), count = new Float64Array(256);
    for (let i = 0; i < m; i++) {
      if (lab[i] !== 0 && g[i] === g[i]) { sum[lab[i]] += g[i]; count[lab[i]] += 1; }
    }
    const queue = new Queue(Math.min(6 * m, 1 << 16) + 1);
    // queue the unlabelled 6-neighbours of voxel i (at x, y, z in the box) for region L
    function reach(i, x, y, z, L) {
      const mean = sum[L] / count[L];
      if (x > 0 && lab[i - 1] === 0) offer(i - 1, mean, L);
      if (x < sx - 1 && lab[i + 1] === 0) offer(i + 1, mean, L);
      if (y > 0 && lab[i - sx] === 0) offer(i - sx, mean, L);
      if (y < sy - 1 && lab[i + sx] === 0) offer(i + sx, mean, L);
      if (z > 0 && lab[i - sxy] === 0) offer(i - sxy, mean, L);
      if (z < sz - 1 && lab[i + sxy] === 0) offer(i + sxy, mean, L);
    }
    // An entry that does not beat the voxel's best queued delta could never be taken first
    // (the earlier entry wins a tie), so it is not queued: the result is the same, the queue
    // shorter.
    const best = new Float64Array(m).fill(Infinity);
    function offer(j, mean, L) {
      const delta = Math.abs(g[j] - mean);
      if (delta <= maxDifference && delta < best[j]) {  // NaN is never queued
        best[j] = delta;
        queue.push(delta, j, L);
      }
    }
    // the initial boundary set T: every seed's unlabelled neighbours
    for (let z = 0, i = 0; z < sz; z++) {
      for (let y = 0; y < sy; y++) {
        for (let x = 0; x < sx; x++, i++) if (lab[i] !== 0) reach(i, x, y, z, lab[i]);
      }
    }
    while (queue.size > 0) {
      queue.pop();
      const j = queue.topVoxel, L = queue.topLabel;
      if (lab[j] !== 0) continue;  // reached earlier by a closer region
      lab[j] = L;
      sum[L] += g[j];
      count[L] += 1;
      const x = j % sx, y = ((j - x) / sx) % sy, z = (j - x - sx * y) / sxy;
      reach(j, x, y, z, L);
    }
    // write the grown voxels back (background as 0); seeds are left as they are
    let grown = 0;
    for (let z = 0, i = 0; z < sz; z++) {
      for (let y = 0; y < sy; y++) {
        const from = box[0] + nx * (box[1] + y) + nx * ny * (box[2] + z);
        for (let x = 0; x < sx; x++, i++) {
          if (labels[from + x] === 0 && lab[i] !== 0 && lab[i] !== bg) {
            labels[from + x] = lab[i];
            grown++;
          }
        }
      }
    }
    let changed = grown;
    if (bg !== null) {
      for (let i = 0; i < n; i++) if (labels[i] === bg) { labels[i] = 0; changed++; }
    }
    return { grown: grown, changed: changed, box: box };
  }

  /**
   * The interquartile range of the voxels above the image's minimum (so without the background
   * of a skull-stripped or z-scored volume), from an even sample of at most `samples` of the
   * first n voxels: a scale for `maxDifference` that follows the image's units. 0 when every
   * voxel is at the minimum.
   */
  function spread(image, n, samples) {
    const count = n === undefined ? image.length : n;
    let min = Infinity;
    for (let i = 0; i < count; i++) if (image[i] < min) min = image[i];
    const step = Math.max(1, Math.floor(count / (samples || 100000)));
    const kept = [];
    for (let i = 0; i < count; i += step) if (image[i] > min) kept.push(image[i]);
    if (!kept.length) return 0;
    const sorted = Float64Array.from(kept).sort();
    const last = sorted.length - 1;
    return sorted[Math.floor(0.75 * last)] - sorted[Math.floor(0.25 * last)];
  }

  root.RegionGrow = { grow: grow, spread: spread };
})(typeof window !== "undefined" ? window : globalThis);
