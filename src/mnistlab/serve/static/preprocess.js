// Any drawing or image -> an MNIST-like 28x28 digit, in the browser: a port of mnistlab's
// preprocessing.py, step for step, so that the static page feeds its model what Python would.
// Light ink on black, cropped to the ink, longer side scaled to 20 px with Pillow's Lanczos
// (and its reducing_gap=3 box reduction first), centred by its centre of mass.
// Float32 where Python computes in float32 (Math.fround), float64 where it uses float64.
"use strict";

const mnistPreprocess = (() => {
  const f32 = Math.fround;

  // Python's round() and numpy's np.round: halves go to the even neighbour
  function roundHalfEven(x) {
    const r = Math.round(x);
    return (Math.abs(x % 1) === 0.5 && r % 2 !== 0) ? r - 1 : r;
  }

  // preprocessing.to_gray: Pillow's RGB -> L (ITU-R 601-2 luma, integer arithmetic), then
  // transparency composited onto a background that contrasts with the ink
  function toGray(rgba, n) {
    const gray = new Uint8Array(n);
    let transparent = false;
    for (let i = 0; i < n; i++) {
      const p = 4 * i;
      gray[i] = (rgba[p] * 19595 + rgba[p + 1] * 38470 + rgba[p + 2] * 7471 + 0x8000) >> 16;
      if (rgba[p + 3] !== 255) transparent = true;
    }
    if (!transparent) return gray;
    let sum = 0, count = 0;
    for (let i = 0; i < n; i++) if (rgba[4 * i + 3] / 255 > 0.5) { sum += gray[i]; count++; }
    const bg = (count === 0 || sum / count < 127.5) ? 255 : 0;
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const alpha = f32(rgba[4 * i + 3] / 255);
      out[i] = roundHalfEven(f32(f32(gray[i] * alpha) + f32(bg * f32(1 - alpha))));
    }
    return out;
  }

  // a quantile of uint8 values from their histogram, as preprocessing._quantile
  function quantile(values, q) {
    const counts = new Float64Array(256);
    for (const v of values) counts[v]++;
    const target = q * values.length;
    let cum = 0;
    for (let v = 0; v < 256; v++) {
      cum += counts[v];
      if (cum >= target) return v;
    }
    return 256;
  }

  function border(a, h, w) {
    const b = Math.max(1, Math.floor(Math.min(h, w) / 20));
    const out = [];
    for (let r = 0; r < b; r++) for (let c = 0; c < w; c++) out.push(a[r * w + c]);
    for (let r = h - b; r < h; r++) for (let c = 0; c < w; c++) out.push(a[r * w + c]);
    for (let r = 0; r < h; r++) for (let c = 0; c < b; c++) out.push(a[r * w + c]);
    for (let r = 0; r < h; r++) for (let c = w - b; c < w; c++) out.push(a[r * w + c]);
    return Uint8Array.from(out);
  }

  // preprocessing._tile_medians: [u, v, median] of each tile, u and v in half-tile units from the centre
  const LIGHT_TILT = 8, LIGHT_TILES = 8, LIGHT_ROUNDS = 10, MIN_INK = 8, MIN_SIDE = 4, THIN_PEAK = 0.5;
  function tileMedians(a, h, w) {
    const tiles = [];
    for (let i = 0; i < LIGHT_TILES; i++) {
      const r0 = Math.floor(i * h / LIGHT_TILES), r1 = Math.floor((i + 1) * h / LIGHT_TILES);
      for (let j = 0; j < LIGHT_TILES; j++) {
        const c0 = Math.floor(j * w / LIGHT_TILES), c1 = Math.floor((j + 1) * w / LIGHT_TILES);
        const values = [];
        for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) values.push(a[r * w + c]);
        tiles.push([2 * j + 1 - LIGHT_TILES, 2 * i + 1 - LIGHT_TILES, quantile(values, 0.5)]);
      }
    }
    return tiles;
  }

  const terms = (u, v) => [1, u, v, u * u, u * v, v * v];
  const surface = (c, u, v) => c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * u * v + c[5] * v * v;

  // preprocessing._least_squares: the normal equations by Gaussian elimination, the same float64 steps
  function leastSquares(tiles) {
    const k = 6;
    if (tiles.length < 2 * k) return null;
    const rows = tiles.map(([u, v, m]) => [...terms(u, v), m]);
    const a = [];
    for (let i = 0; i < k; i++) {
      a.push([]);
      for (let j = 0; j <= k; j++) {
        let s = 0;
        for (const r of rows) s += r[i] * r[j];
        a[i].push(s);
      }
    }
    for (let p = 0; p < k; p++) {
      if (a[p][p] <= 1e-9 * a[0][0]) return null;
      for (let i = p + 1; i < k; i++) {
        const f = a[i][p] / a[p][p];
        for (let j = p; j <= k; j++) a[i][j] -= f * a[p][j];
      }
    }
    const coef = new Array(k).fill(0);
    for (let i = k - 1; i >= 0; i--) {
      let s = 0;
      for (let j = i + 1; j < k; j++) s += a[i][j] * coef[j];
      coef[i] = (a[i][k] - s) / a[i][i];
    }
    return coef;
  }

  // preprocessing.paper_surface: a quadratic fitted to the tiles, those far above it (ink) left out; null where
  // half the tiles or more are nearer the ink than the paper (a crop as tight as the digit)
  function paperSurface(gray, h, w) {
    if (Math.min(h, w) < 2 * LIGHT_TILES) return null;
    const tiles = tileMedians(gray, h, w);
    const levels = unlevelled(gray, h, w);
    if (levels !== null && 2 * tiles.filter((t) => t[2] > (levels[1] + levels[2]) / 2).length >= tiles.length) {
      return null;
    }
    const middle = tiles.map((t) => t[2]).sort((x, y) => x - y)[tiles.length / 2 - 1];
    let kept = tiles.filter((t) => t[2] <= middle), coef = null;
    for (let round = 0; round < LIGHT_ROUNDS; round++) {
      coef = leastSquares(kept);
      if (coef === null) return null;
      const again = tiles.filter((t) => t[2] - surface(coef, t[0], t[1]) <= LIGHT_TILT);
      const same = again.length === kept.length && again.every((t, i) => t === kept[i]);
      kept = again;
      if (same) break;
    }
    return coef;
  }

  // preprocessing._direction: the i-th of 4m whole-number directions across half a turn
  const SHADOW_SIDE = 128, SHADOW_STEPS = 12, SHADOW_FINER = 8, SHADOW_DARK = 0.35, SHADOW_BRIGHT = 0.88,
    SHADOW_TILES = 3;
  function direction(i, m) {
    i = ((i % (4 * m)) + 4 * m) % (4 * m);
    return i < 2 * m ? [m, i - m] : [3 * m - i, m];
  }

  // preprocessing._light_along: each pixel's bin along (a, b), the running median of the bins' medians
  function lightAlong(s, h, w, a, b, m) {
    const d = new Int32Array(h * w);
    let dmin = Infinity, dmax = -Infinity;
    for (let r = 0; r < h; r++) {
      for (let c = 0; c < w; c++) {
        const v = Math.floor((a * c + b * r) / m);
        d[r * w + c] = v;
        if (v < dmin) dmin = v;
        if (v > dmax) dmax = v;
      }
    }
    const n = dmax - dmin + 1;
    const counts = new Int32Array(n * 256), pixels = new Int32Array(n), medians = new Int32Array(n);
    for (let i = 0; i < h * w; i++) {
      d[i] -= dmin;
      counts[d[i] * 256 + s[i]]++;
      pixels[d[i]]++;
    }
    const lowerHalf = (hist, total) => {  // how many levels lie below the median: the first whose count reaches half
      let cum = 0, below = 0;
      for (let v = 0; v < 256; v++) {
        cum += hist[v];
        if (2 * cum < total) below++;
      }
      return below;
    };
    let most = 0;
    for (let t = 0; t < n; t++) {
      medians[t] = lowerHalf(counts.subarray(t * 256, (t + 1) * 256), pixels[t]);
      most = Math.max(most, pixels[t]);
    }
    let lo = 0, hi = n - 1;
    while (4 * pixels[lo] < most) lo++;
    while (4 * pixels[hi] < most) hi--;
    const half = Math.max(2, Math.floor((hi - lo + 1) / 10));
    const light = new Int32Array(n), window = new Int32Array(256);
    let inside = 0, from = lo, to = lo - 1;  // the window holds the medians of bins from..to
    for (let t = lo; t <= hi; t++) {
      const want0 = Math.max(lo, t - half), want1 = Math.min(hi, t + half);
      while (to < want1) { to++; window[medians[to]]++; inside++; }
      while (from < want0) { window[medians[from]]--; from++; inside--; }
      light[t] = lowerHalf(window, inside);
    }
    for (let t = 0; t < lo; t++) light[t] = light[lo];
    for (let t = hi + 1; t < n; t++) light[t] = light[hi];
    return { d, light, pixels, lo, hi };
  }

  // every k-th pixel of every k-th row
  function sampled(a, h, w, k) {
    const sh = Math.ceil(h / k), sw = Math.ceil(w / k), out = new Uint8Array(sh * sw);
    for (let r = 0; r < sh; r++) for (let c = 0; c < sw; c++) out[r * sw + c] = a[r * k * w + c * k];
    return [out, sh, sw];
  }

  const lowerMedian = (values) => Array.from(values).sort((x, y) => x - y)[Math.floor((values.length - 1) / 2)];

  // preprocessing.find_shadow: the direction whose light leaves least behind; a shadow if that light steps once
  function findShadow(gray, h, w) {
    if (Math.min(h, w) < 2 * LIGHT_TILES) return null;
    const k = Math.ceil(Math.max(h, w) / SHADOW_SIDE);
    const [sample, sh, sw] = sampled(gray, h, w, k);
    if (Math.min(sh, sw) < 2 * LIGHT_TILES) return null;
    const tiles = tileMedians(sample, sh, sw).map((t) => 255 - t[2]);
    const lightest = Math.max(...tiles);
    const inShadow = tiles.filter((t) => SHADOW_DARK * lightest <= t && t <= SHADOW_BRIGHT * lightest).length;
    if (inShadow < SHADOW_TILES) return null;
    const fitted = (img, ih, iw, i, m) => {
      const [a, b] = direction(i, m);
      const f = lightAlong(img, ih, iw, a, b, m);
      let err = 0;
      for (let p = 0; p < ih * iw; p++) err += Math.abs(img[p] - f.light[f.d[p]]);
      return { err, a, b, m, ...f };
    };
    const [coarseImg, ch, cw] = sampled(sample, sh, sw, 2);
    let coarse = 0, coarseFit = null;
    for (let i = 0; i < 4 * SHADOW_STEPS; i++) {
      const f = fitted(coarseImg, ch, cw, i, SHADOW_STEPS);
      if (coarseFit === null || f.err < coarseFit.err) [coarse, coarseFit] = [i, f];
    }
    // the coarse direction's light, held to the test with twice the slack, spares most pictures the finer search
    if (litSide(coarseFit, 2) === null) return null;
    let best = null;
    for (let j = -SHADOW_FINER; j <= SHADOW_FINER; j++) {
      const f = fitted(sample, sh, sw, SHADOW_FINER * coarse + j, SHADOW_FINER * SHADOW_STEPS);
      if (best === null || f.err < best.err) best = f;
    }
    const lit = litSide(best, 1);
    return lit === null ? null : { a: best.a, b: best.b, m: best.m, lit };
  }

  // preprocessing._lit_side: the lit paper's level where the light steps up once; slack 2 is twice as lenient
  function litSide({ light, pixels, lo, hi }, slack) {
    const span = Math.max(2, Math.floor((hi - lo + 1) / 8));
    if (hi - lo + 1 <= span) return null;
    let j = 0, rise = 0;
    for (let t = 0; t <= hi - lo - span; t++) {
      const r = light[lo + span + t] - light[lo + t];
      if (Math.abs(r) > Math.abs(rise)) [j, rise] = [t, r];
    }
    const edge = lo + j + Math.floor(span / 2);
    const before = light.slice(lo, Math.max(lo, edge - span)), after = light.slice(edge + span, hi + 1);
    const [lit, shade] = rise > 0 ? [before, after] : [after, before];
    if (lit.length === 0 || shade.length === 0) return null;
    const qLit = lowerMedian(lit), qShade = lowerMedian(shade);
    let total = 0, shaded = 0;
    for (let t = 0; t < pixels.length; t++) {
      total += pixels[t];
      if (rise > 0 ? t >= edge : t < edge) shaded += pixels[t];
    }
    const astray = (side, q) => side.reduce((acc, v) => acc + Math.abs(v - q), 0);
    const level = [[lit, qLit], [shade, qShade]].every(
      ([side, q]) => 10 * astray(side, q) <= slack * (qShade - qLit) * side.length);
    if (!(SHADOW_DARK * (255 - qLit) <= 255 - qShade && 255 - qShade <= SHADOW_BRIGHT * (255 - qLit)
          && total <= 10 * slack * shaded && 10 * slack * shaded <= (10 * slack - 1) * total && level)) return null;
    return qLit;
  }

  // preprocessing.level_shadow: the light taken again at full resolution along the shadow's direction, and each
  // pixel's darkening divided out (float64, rounded half to even)
  function levelShadow(gray, h, w) {
    const found = findShadow(gray, h, w);
    if (found === null) return gray;
    const { a, b, m, lit } = found;
    const { d, light } = lightAlong(gray, h, w, a, b, m);
    const out = new Uint8Array(h * w);
    for (let i = 0; i < h * w; i++) {
      const paper = Math.max(1, 255 - Math.max(light[d[i]], lit));
      const v = 255 - roundHalfEven((255 - gray[i]) * (255 - lit) / paper);
      out[i] = Math.min(255, Math.max(0, v));
    }
    return out;
  }

  // preprocessing.level_light: the paper's surface taken out (float32, rounded half to even, clipped)
  function levelLight(gray, h, w) {
    const coef = paperSurface(gray, h, w);
    if (coef === null) return gray;
    const values = [];
    for (let v = -LIGHT_TILES + 1; v < LIGHT_TILES; v += 2) {
      for (let u = -LIGHT_TILES + 1; u < LIGHT_TILES; u += 2) values.push(surface(coef, u, v));
    }
    const range = Math.max(...values) - Math.min(...values);
    if (range < LIGHT_TILT || range > 255) return gray;
    const c = coef.map(f32);
    const su = f32(2 * LIGHT_TILES / w), sv = f32(2 * LIGHT_TILES / h);
    const cu = f32((w - 1) / 2), cv = f32((h - 1) / 2);
    const u = new Float32Array(w), across = new Float32Array(w);
    for (let x = 0; x < w; x++) {
      u[x] = f32(f32(x - cu) * su);
      across[x] = f32(f32(c[1] * u[x]) + f32(c[3] * f32(u[x] * u[x])));
    }
    const out = new Uint8Array(h * w);
    for (let r = 0; r < h; r++) {
      const v = f32(f32(r - cv) * sv);
      const down = f32(f32(c[2] * v) + f32(c[5] * f32(v * v))), cross = f32(c[4] * v);
      for (let x = 0; x < w; x++) {
        const paper = f32(f32(across[x] + down) + f32(cross * u[x]));
        out[r * w + x] = Math.min(255, Math.max(0, roundHalfEven(f32(gray[r * w + x] - paper))));
      }
    }
    return out;
  }

  // preprocessing.ink_levels: dark ink unless three quarters of the border are dark, the other side where that
  // one holds no ink before levelling and the other does, or none once levelled; the paper's level and noise
  // from the border's darker quarter, the ink's top among the pixels above the floor; null where none is
  function inkLevels(gray, h, w) {
    const inverse = gray.map((v) => 255 - v);
    let [side, other] = quantile(border(gray, h, w), 0.75) > 127 ? [inverse, gray] : [gray, inverse];
    if (!hasInk(side, h, w) && hasInk(other, h, w)) [side, other] = [other, side];
    const levels = levelsOf(side, h, w);
    if (levels === null || levels[2] - levels[1] < MIN_INK) return levelsOf(other, h, w) || levels;
    return levels;
  }

  function levelsOf(gray, h, w) {  // inkLevels for gray already light ink on dark
    return unlevelled(levelLight(levelShadow(gray, h, w), h, w), h, w);
  }

  function hasInk(gray, h, w) {  // before any levelling
    const levels = unlevelled(gray, h, w);
    return levels !== null && levels[2] - levels[1] >= MIN_INK;
  }

  // preprocessing._unlevelled: [gray, its floor, its ink's top] as it is, or null where no pixel is above the floor
  function unlevelled(gray, h, w) {
    const floor = inkFloor(border(gray, h, w));
    const top = inkTop(gray, floor);
    return top === null ? null : [gray, floor, top];
  }

  function inkFloor(bd) {
    const low = quantile(bd, 0.01), quartile = quantile(bd, 0.25);
    const spread = (quartile - low) / 1.65;
    return quartile + 0.67 * spread + Math.max(MIN_INK, 4 * spread);
  }

  function inkTop(gray, floor) {
    const above = gray.filter((v) => v > floor);
    return above.length === 0 ? null : quantile(above, 0.995);
  }

  // Pillow's Image.reduce((fx, fy), box) for a float32 image (ImagingReduceNxN_32bpc and
  // ImagingReduceCorners_32bpc): box averages, float32 partial sums as C adds them
  function reduceF(src, w, factorX, factorY, box) {
    const [x0, y0, bw, bh] = [box[0], box[1], box[2] - box[0], box[3] - box[1]];
    const ow = Math.floor((bw - 1) / factorX) + 1, oh = Math.floor((bh - 1) / factorY) + 1;
    const out = new Float32Array(ow * oh);
    const at = (x, y) => src[y * w + x];
    const mult = 1.0 / (factorY * factorX);
    for (let y = 0; y < Math.floor(bh / factorY); y++) {
      const yyFrom = y0 + y * factorY;
      for (let x = 0; x < Math.floor(bw / factorX); x++) {
        const xxFrom = x0 + x * factorX;
        let ss = 0, yy = yyFrom, xx;
        for (; yy < yyFrom + factorY - 1; yy += 2) {
          for (xx = xxFrom; xx < xxFrom + factorX - 1; xx += 2) {
            ss += f32(f32(f32(at(xx, yy) + at(xx + 1, yy)) + at(xx, yy + 1)) + at(xx + 1, yy + 1));
          }
          if (factorX & 1) ss += f32(at(xx, yy) + at(xx, yy + 1));
        }
        if (factorY & 1) {
          for (xx = xxFrom; xx < xxFrom + factorX - 1; xx += 2) ss += f32(at(xx, yy) + at(xx + 1, yy));
          if (factorX & 1) ss += at(xx, yy);
        }
        out[y * ow + x] = ss * mult;
      }
    }
    const cornerSum = (xs, xe, ys, ye) => {
      let ss = 0;
      for (let yy = ys; yy < ye; yy++) for (let xx = xs; xx < xe; xx++) ss += at(xx, yy);
      return ss;
    };
    if (bw % factorX) {
      const x = Math.floor(bw / factorX);
      for (let y = 0; y < Math.floor(bh / factorY); y++) {
        const ys = y0 + y * factorY;
        out[y * ow + x] = cornerSum(x0 + x * factorX, x0 + bw, ys, ys + factorY) * (1.0 / ((bw % factorX) * factorY));
      }
    }
    if (bh % factorY) {
      const y = Math.floor(bh / factorY);
      for (let x = 0; x < Math.floor(bw / factorX); x++) {
        const xs = x0 + x * factorX;
        out[y * ow + x] = cornerSum(xs, xs + factorX, y0 + y * factorY, y0 + bh) * (1.0 / (factorX * (bh % factorY)));
      }
    }
    if (bw % factorX && bh % factorY) {
      const x = Math.floor(bw / factorX), y = Math.floor(bh / factorY);
      out[y * ow + x] = cornerSum(x0 + x * factorX, x0 + bw, y0 + y * factorY, y0 + bh) *
        (1.0 / ((bw % factorX) * (bh % factorY)));
    }
    return [out, ow, oh];
  }

  const sinc = (x) => { if (x === 0) return 1; x *= Math.PI; return Math.sin(x) / x; };
  const lanczos = (x) => (x >= -3 && x < 3) ? sinc(x) * sinc(x / 3) : 0;

  // Resample.c's precompute_coeffs (in0 and in1 are C floats)
  function coefficients(inSize, in0, in1, outSize) {
    const scale = f32(in1 - in0) / outSize;
    const filterscale = Math.max(scale, 1);
    const support = 3 * filterscale;
    const bounds = [], kernels = [];
    for (let xx = 0; xx < outSize; xx++) {
      const center = in0 + (xx + 0.5) * scale;
      const xmin = Math.max(0, Math.trunc(center - support + 0.5));
      const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
      const k = [];
      let ww = 0;
      for (let x = 0; x < xmax; x++) {
        const v = lanczos((x + xmin - center + 0.5) * (1 / filterscale));
        k.push(v);
        ww += v;
      }
      bounds.push([xmin, xmax]);
      kernels.push(ww !== 0 ? k.map((v) => v / ww) : k);
    }
    return [bounds, kernels];
  }

  // Pillow's ImagingResample (LANCZOS) for a float32 image of w x h, to outW x outH, from box
  function resample(src, w, h, outW, outH, box) {
    const needH = outW !== w || box[0] !== 0 || box[2] !== outW;
    const needV = outH !== h || box[1] !== 0 || box[3] !== outH;
    const horizontalFirst = !((h - outH) > 0 && (h - outH) > (w - outW) * 2);
    let vert = null, horiz = null, img = src, iw = w, ih = h;
    if ((needH && horizontalFirst) || needV) vert = coefficients(h, box[1], box[3], outH);
    let yFirst = 0, yLast = h;
    if (needH) {
      if (horizontalFirst) {
        yFirst = vert[0][0][0];
        yLast = vert[0][outH - 1][0] + vert[0][outH - 1][1];
        vert[0] = vert[0].map(([m, n]) => [m - yFirst, n]);
      }
      horiz = coefficients(w, box[0], box[2], outW);
    }
    const passH = (rows, offset) => {
      const out = new Float32Array(outW * rows);
      for (let yy = 0; yy < rows; yy++) {
        for (let xx = 0; xx < outW; xx++) {
          const [xmin, xmax] = horiz[0][xx], k = horiz[1][xx];
          let ss = 0;
          for (let x = 0; x < xmax; x++) ss += img[(yy + offset) * iw + x + xmin] * k[x];
          out[yy * outW + xx] = ss;
        }
      }
      img = out; iw = outW; ih = rows;
    };
    const passV = () => {
      const out = new Float32Array(iw * outH);
      for (let yy = 0; yy < outH; yy++) {
        const [ymin, ymax] = vert[0][yy], k = vert[1][yy];
        for (let xx = 0; xx < iw; xx++) {
          let ss = 0;
          for (let y = 0; y < ymax; y++) ss += img[(y + ymin) * iw + xx] * k[y];
          out[yy * iw + xx] = ss;
        }
      }
      img = out; ih = outH;
    };
    if (horizontalFirst) {
      if (needH) passH(yLast - yFirst, yFirst);
      if (needV) passV();
    } else {
      if (needV) passV();
      if (needH) passH(outH, 0);
    }
    return img === src ? Float32Array.from(src) : img;
  }

  // Image.fromarray(float32).resize((outW, outH), Image.Resampling.LANCZOS, reducing_gap=3.0)
  function resizeLanczos(src, w, h, outW, outH) {
    if (w === outW && h === outH) return Float32Array.from(src);
    let box = [0, 0, w, h], img = src, iw = w, ih = h;
    const fx = Math.trunc(w / outW / 3.0) || 1, fy = Math.trunc(h / outH / 3.0) || 1;
    if (fx > 1 || fy > 1) {
      const sx = 2.5 * (w / outW), sy = 2.5 * (h / outH);  // Image._get_safe_box, Lanczos support 3 - 0.5
      const rb = [Math.max(0, Math.trunc(-sx)), Math.max(0, Math.trunc(-sy)),
                  Math.min(w, Math.ceil(w + sx)), Math.min(h, Math.ceil(h + sy))];
      [img, iw, ih] = reduceF(src, w, fx, fy, rb);
      box = [(0 - rb[0]) / fx, (0 - rb[1]) / fy, (w - rb[0]) / fx, (h - rb[1]) / fy];
    }
    box = box.map(f32);  // the C side takes the box as floats
    if (box[0] === Math.trunc(box[0]) && box[2] - box[0] === outW && box[1] === Math.trunc(box[1]) &&
        box[3] - box[1] === outH) {  // _resize_impl: a crop
      const out = new Float32Array(outW * outH);
      for (let y = 0; y < outH; y++) for (let x = 0; x < outW; x++) out[y * outW + x] = img[(y + box[1]) * iw + x + box[0]];
      return out;
    }
    return resample(img, iw, ih, outW, outH, box);
  }

  // preprocessing.stretched: a faint image on flat paper (a range of FAINT_LEAST to FAINT_RANGE) stretched to 0-255
  const FAINT_RANGE = 32, FAINT_LEAST = 12, FAINT_INK = 16, FAINT_PAPER = 0.1, FAINT_FLAT = 0.8;
  function stretched(gray, h, w) {
    let lo = 255, hi = 0;
    const counts = new Array(256).fill(0);
    for (const v of gray) { lo = Math.min(lo, v); hi = Math.max(hi, v); counts[v]++; }
    const span = hi - lo;
    if (!(span >= FAINT_LEAST && span < FAINT_RANGE)) return gray;
    let paper = 0;
    for (let v = 1; v < 256; v++) if (counts[v] > counts[paper]) paper = v;
    if ((paper !== lo && paper !== hi) || counts[paper] < FAINT_PAPER * gray.length) return gray;
    let pairs = 0, firsts = 0;  // paper pixels with a next pixel across (then down), and those whose next is paper
    for (let r = 0; r < h; r++) {
      for (let c = 0; c < w; c++) {
        if (gray[r * w + c] !== paper) continue;
        if (c + 1 < w) { firsts++; if (gray[r * w + c + 1] === paper) pairs++; }
        if (r + 1 < h) { firsts++; if (gray[(r + 1) * w + c] === paper) pairs++; }
      }
    }
    if (pairs < FAINT_FLAT * firsts || !pairs) return gray;  // scattered: noise cut off at black or white
    return gray.map((v) => Math.floor(((v - lo) * 510 + span) / (2 * span)));
  }

  // preprocessing.unblocked: a smaller image enlarged by repeating its pixels, enlarged again smoothly
  const BLOCK_CHANGES = 5, LATTICE_SLACK = 1.0, LATTICE_LEAST = 4;
  function changes(gray, h, w, rows) {  // preprocessing._changes: the rows (or columns) that differ from the one before
    const out = [], [n, m] = rows ? [h, w] : [w, h];
    const at = rows ? (i, j) => gray[i * w + j] : (i, j) => gray[j * w + i];
    for (let i = 1; i < n; i++) {
      for (let j = 0; j < m; j++) if (at(i, j) !== at(i - 1, j)) { out.push(i); break; }
    }
    return out;
  }

  const gcd = (a, b) => (b === 0 ? a : gcd(b, a % b));
  const gaps = (ch) => ch.slice(1).map((p, i) => p - ch[i]);

  function lattice(ch, side, step, like = 0) {  // preprocessing._lattice: [middles, box start, box end, block]
    const span = ch[ch.length - 1] - ch[0];
    let start, block;
    if (step >= 2 && 2 * ch.length >= Math.floor(span / step) + 1) {
      start = ch[0] % step ? ch[0] % step - step : 0;
      block = step;
    } else {
      const tries = [like];
      if (ch.length >= LATTICE_LEAST) for (let k = ch.length - 1; k < 2 * ch.length; k++) if (k) tries.push(span / k);
      let fits = null;
      for (const b of tries) {
        if (b < 2) continue;
        const j = ch.map((p) => Math.floor((p - ch[0]) / b + 0.5));
        if (ch.every((p, i) => Math.abs((p - ch[0]) - j[i] * b) <= LATTICE_SLACK)) { fits = j; block = b; break; }
      }
      if (fits === null) return null;
      const n = ch.length;
      let sj = 0, sp = 0, sjj = 0, sjp = 0;
      ch.forEach((p, i) => { sj += fits[i]; sp += p; sjj += fits[i] * fits[i]; sjp += fits[i] * p; });
      if (n * sjj - sj * sj > 0) block = (n * sjp - sj * sp) / (n * sjj - sj * sj);
      start = (sp - block * sj) / n;
      const whole = Math.floor(side / block + 0.5);
      if (whole && ch.every((p) => Math.abs(p - Math.floor(p * whole / side + 0.5) * side / whole) <= LATTICE_SLACK)) {
        start = 0;
        block = side / whole;
      }
      if (block < 2) return null;
    }
    const first = Math.floor(-start / block), last = Math.ceil((side - start) / block) - 1;
    const middles = [];
    for (let c = first; c <= last; c++) middles.push(Math.min(side - 1, Math.max(0, Math.floor(start + (c + 0.5) * block))));
    return [middles, -start / block - first, (side - start) / block - first, block];
  }

  function unblocked(gray, h, w) {
    const rows = changes(gray, h, w, true), cols = changes(gray, h, w, false);
    if (!rows.length || !cols.length || rows.length + cols.length < BLOCK_CHANGES ||
        Math.min(2, ...gaps(rows), ...gaps(cols)) < 2) return gray;
    let down = gaps(rows).reduce(gcd, 0), across = gaps(cols).reduce(gcd, 0);
    [down, across] = [across >= 2 && down % across === 0 ? across : down, down >= 2 && across % down === 0 ? down : across];
    const rowsFirst = rows.length >= cols.length;  // the axis with more changes, then the other with its block
    const [more, moreSide, moreStep, fewer, fewerSide, fewerStep] =
      rowsFirst ? [rows, h, down, cols, w, across] : [cols, w, across, rows, h, down];
    const first = lattice(more, moreSide, moreStep);
    const second = first === null ? null : lattice(fewer, fewerSide, fewerStep, first[3]);
    if (first === null || second === null) return gray;
    const [[rowAt, top, bottom], [colAt, left, right]] = rowsFirst ? [first, second] : [second, first];
    const small = new Float32Array(rowAt.length * colAt.length);
    rowAt.forEach((r, i) => colAt.forEach((c, j) => { small[i * colAt.length + j] = gray[r * w + c]; }));
    const big = resample(small, colAt.length, rowAt.length, w, h, [left, top, right, bottom].map(f32));
    return Uint8Array.from(big, (v) => roundHalfEven(Math.min(255, Math.max(0, v))));
  }

  // preprocessing.ruling_cells and without_ruling: a ruled or squared page's lines taken out of gray
  const RULING_CELLS = 128, RULING_SLANT = 24, RULING_FULL = 0.75, RULING_LEAST = 48, RULING_END = 8;
  const RULING_FAINTER = 0.85, RULING_LONE = 0.6, RULING_DIGIT = 12, RULING_ENDS_LEFT = 0.05, RULING_THICK = 3;

  // preprocessing._lines: the lines along the rows of cells (rows x cols, row by row), each as
  // {shift, start, stop, reaches}, whether the rows are ruled, and whether a line runs from edge to edge away from
  // the image's edge, cut by its first and last columns
  function rulingLines(cells, rows, cols) {
    const inked = new Uint8Array(rows * cols);
    for (let y = 0; y < rows; y++) for (let x = 0; x < cols; x++) {
      inked[y * cols + x] = cells[y * cols + x] || (y + 1 < rows && cells[(y + 1) * cols + x]) ? 1 : 0;
    }
    const half = Math.floor(cols / 2), edge = Math.max(1, Math.floor(rows / 8));
    const near = (y, x) => y < RULING_END || y >= rows - RULING_END || x < RULING_END || x >= cols - RULING_END;
    const shifts = [];
    let most = 0;
    for (let slope = -RULING_SLANT; slope <= RULING_SLANT; slope++) {
      const shift = new Int32Array(cols);
      let least = Infinity;
      for (let x = 0; x < cols; x++) { shift[x] = Math.floor(slope * x / RULING_CELLS); least = Math.min(least, shift[x]); }
      for (let x = 0; x < cols; x++) { shift[x] -= least; most = Math.max(most, shift[x]); }
      shifts.push(shift);
    }
    const cutAt = (shift, start, stop, x) => {  // preprocessing._cut_at: the line holds ink in column x
      for (let y = Math.max(0, start - shift[x]); y < Math.min(rows, stop - shift[x] + 1); y++) {
        if (cells[y * cols + x]) return true;
      }
      return false;
    };
    const n = rows + most, lines = [];
    let ruled = false, lone = false;
    for (const shift of shifts) {
      const span = new Int32Array(n + 1), covered = new Int32Array(n), left = new Uint8Array(n), right = new Uint8Array(n);
      for (let x = 0; x < cols; x++) { span[shift[x]]++; span[shift[x] + rows]--; }
      for (let d = 1; d <= n; d++) span[d] += span[d - 1];
      for (let y = 0; y < rows; y++) for (let x = 0; x < cols; x++) {
        if (!inked[y * cols + x]) continue;
        const d = y + shift[x];
        covered[d]++;
        if (near(y, x)) { if (x < half) left[d] = 1; else right[d] = 1; }
      }
      const full = (d) => span[d] > 0 && covered[d] >= RULING_FULL * span[d];
      let reaching = 0, reachingInner = 0;
      for (let d = 0; d < n;) {
        if (!full(d)) { d++; continue; }
        const start = d;
        let ends = false;
        for (; d < n && full(d); d++) if (left[d] && right[d]) ends = true;
        const stop = d;
        const paper = [start - 2, stop + 1].every((b) => b < 0 || b >= n || 2 * covered[b] < span[b] || span[b] === 0);
        if (stop - start > RULING_THICK || !paper) continue;
        const reaches = ends && 2 * span[start] >= cols && 2 * span[stop - 1] >= cols;  // across half the image
        const middle = (start + stop) / 2 - shift[half];
        const inner = edge <= middle && middle <= rows - 1 - edge;
        lines.push({ shift, start, stop, reaches });
        reaching += reaches; reachingInner += reaches && inner;
        if (reaches && inner && cutAt(shift, start, stop, 0) && cutAt(shift, start, stop, cols - 1)) lone = true;
      }
      if (reaching >= 2 && reachingInner >= 1) ruled = true;
    }
    return [lines, ruled, lone];
  }

  function mayBeRuled(mask, h, w) {  // preprocessing._may_be_ruled
    const k = Math.ceil(Math.max(h, w) / RULING_CELLS), rows = Math.ceil(h / k), cols = Math.ceil(w / k);
    const ring = (RULING_END + 1) * k, bottom = (rows - RULING_END - 1) * k, right = (cols - RULING_END - 1) * k;
    if (Math.min(rows, cols) < RULING_LEAST) return false;
    for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
      if (mask[r * w + c] && (r < ring || r >= bottom || c < ring || c >= right)) return true;
    }
    return false;
  }

  function rulingCells(above, h, w) {  // Uint8Array(rows * cols), or null where the page has no lines
    const k = Math.ceil(Math.max(h, w) / RULING_CELLS), rows = Math.ceil(h / k), cols = Math.ceil(w / k);
    if (Math.min(rows, cols) < RULING_LEAST) return null;
    const cells = new Uint8Array(rows * cols), turned = new Uint8Array(rows * cols);
    for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
      if (!above[r * w + c]) continue;
      const cr = Math.floor(r / k), cc = Math.floor(c / k);
      cells[cr * cols + cc] = 1;
      turned[cc * rows + cr] = 1;
    }
    const [across, ruledRows, loneAcross] = rulingLines(cells, rows, cols);
    const [down, ruledColumns, loneDown] = rulingLines(turned, cols, rows);
    const lone = !ruledRows && !ruledColumns;  // then a page's lone line, with the others from edge to edge
    const ruled = lone ? loneAcross : ruledRows, squared = lone ? loneDown : ruledColumns;
    if (!ruled && !squared) return null;
    const out = new Uint8Array(rows * cols);
    for (const { shift, start, stop, reaches } of across) {
      if ((!ruled || lone) && !reaches) continue;
      for (let y = 0; y < rows; y++) for (let x = 0; x < cols; x++) {
        const b = y + shift[x];
        if (b >= start && b <= stop) out[y * cols + x] = 1;
      }
    }
    for (const { shift, start, stop, reaches } of down) {  // rows and columns turned: y runs along the shift
      if ((!squared || lone) && !reaches) continue;
      for (let y = 0; y < rows; y++) for (let x = 0; x < cols; x++) {
        const b = x + shift[y];
        if (b >= start && b <= stop) out[y * cols + x] = 1;
      }
    }
    return { cells: out, rows, cols, ruled, squared, lone };
  }

  function withoutRuling(gray, h, w, floor, top) {
    const above = gray.map((v) => (v > floor ? 1 : 0));
    if (!mayBeRuled(above, h, w)) return gray;  // nor can the box's ink, which lies within it
    const found = rulingCells(above, h, w) ?? rulingCells(boxInk(gray, h, w, floor, top), h, w);  // then, less noise
    if (found === null) return gray;
    const { cells, rows, cols, ruled, squared, lone } = found;
    const k = Math.ceil(Math.max(h, w) / RULING_CELLS);
    const onLines = new Uint8Array(h * w), lineInk = [], restInk = [];
    for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
      const on = cells[Math.floor(r / k) * cols + Math.floor(c / k)];
      onLines[r * w + c] = on;
      if (above[r * w + c]) (on ? lineInk : restInk).push(gray[r * w + c]);
    }
    const level = quantile(lineInk, 0.5);
    if (level - floor > RULING_FAINTER * (top - floor)) return gray;  // lines as dark as the ink: a digit's own
    // a lone line must be fainter than the ink off it: a fine pen's 7 has a bar as faint as its stem
    if (lone && (restInk.length === 0 || level - floor > RULING_LONE * (quantile(restInk, 0.5) - floor))) return gray;
    const keep = (level + top) / 2;
    const cleaned = gray.map((v, i) => (onLines[i] && v <= keep ? 0 : v));
    // the digit is the ink left, as its box is taken: there must be one, with under RULING_ENDS_LEFT of it in an
    // eighth of the image where the lines end
    const ink = boxInk(cleaned, h, w, floor, top), left = new Uint8Array(rows * cols);
    for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
      if (ink[r * w + c]) left[Math.floor(r / k) * cols + Math.floor(c / k)] = 1;
    }
    const r8 = Math.floor(rows / 8), c8 = Math.floor(cols / 8);
    let cellsLeft = 0, nearLeft = 0, nearRight = 0, nearTop = 0, nearBottom = 0;
    for (let y = 0; y < rows; y++) for (let x = 0; x < cols; x++) {
      if (!left[y * cols + x]) continue;
      cellsLeft++; nearLeft += x < c8; nearRight += x >= cols - c8; nearTop += y < r8; nearBottom += y >= rows - r8;
    }
    const most = Math.max(2, RULING_ENDS_LEFT * cellsLeft);  // as many at the lines' ends is a digit, fewer noise
    if (cellsLeft < RULING_DIGIT || (ruled && (nearLeft >= most || nearRight >= most)) ||
        (squared && (nearTop >= most || nearBottom >= most))) return gray;
    return cleaned;
  }

  // preprocessing._box_ink: the ink above a twentieth of the way to the top, less isolated specks (no other ink in
  // their 3x3 neighbourhood)
  function boxInk(gray, h, w, floor, top) {
    const threshold = floor + 0.05 * (top - floor);
    const mask = new Uint8Array(w * h);
    for (let i = 0; i < w * h; i++) if (gray[i] > threshold) mask[i] = 1;
    const kept = new Uint8Array(w * h);
    for (let r = 0; r < h; r++) {
      for (let c = 0; c < w; c++) {
        if (!mask[r * w + c]) continue;
        let n = 0;
        for (let dr = -1; dr <= 1; dr++) for (let dc = -1; dc <= 1; dc++) {
          const rr = r + dr, cc = c + dc;
          if (rr >= 0 && rr < h && cc >= 0 && cc < w) n += mask[rr * w + cc];
        }
        if (n >= 2) kept[r * w + c] = 1;
      }
    }
    return kept;
  }

  // preprocessing._preprocess on RGBA pixels: Uint8Array(784), or throws Error("no digit found ...")
  const BOX_STRONG = 0.3, BOX_REACH = 0.25, BOX_CELLS = 128, BOX_LEAVE = 0.25, BOX_SPECKS = 0.1, FRAME_SIDES = 0.75;

  // preprocessing._joined: `reached` (cells marked 1, the same listed in `queue`) grown, 8 ways, through the ink's
  // cells until nothing more is reached
  function joined(cells, reached, queue, rows, cols) {
    while (queue.length) {
      const cell = queue.pop(), cr = Math.floor(cell / cols), cc = cell % cols;
      for (let dr = -1; dr <= 1; dr++) for (let dc = -1; dc <= 1; dc++) {
        const rr = cr + dr, c2 = cc + dc, next = rr * cols + c2;
        if (rr >= 0 && rr < rows && c2 >= 0 && c2 < cols && cells[next] && !reached[next]) {
          reached[next] = 1;
          queue.push(next);
        }
      }
    }
    return reached;
  }

  // preprocessing._trimmed: the first and last index once BOX_SPECKS of the counts' sum is left out at each end
  function trimmed(counts) {
    let total = 0;
    for (const v of counts) total += v;
    const cut = BOX_SPECKS * total;
    let first = 0, last = 0, sum = 0;
    while (first < counts.length && sum + counts[first] <= cut) sum += counts[first++];
    sum = 0;
    while (last < counts.length && sum + counts[last] < total - cut) sum += counts[last++];
    return [first, last];
  }

  // preprocessing._near_the_digit: the ink less what is neither joined to the strong ink (on cells of k x k
  // pixels, 8-connected) nor within BOX_REACH of the square about the strong ink's box; all of it where more
  // than BOX_LEAVE of what stays would leave
  function nearTheDigit(ink, gray, h, w, strongLevel) {
    const k = Math.ceil(Math.max(h, w) / BOX_CELLS), rows = Math.ceil(h / k), cols = Math.ceil(w / k);
    const cells = new Uint8Array(rows * cols), reached = new Uint8Array(rows * cols), queue = [];
    const perRow = new Float64Array(h), perCol = new Float64Array(w);
    let any = false;
    for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
      if (ink[r * w + c] && gray[r * w + c] > strongLevel) { perRow[r]++; perCol[c]++; any = true; }
    }
    if (!any) return ink;
    // preprocessing._without_specks: strong ink beyond the reach of the box that holds all but BOX_SPECKS of it
    const [t0, t1] = trimmed(perRow), [u0, u1] = trimmed(perCol);
    const spread = Math.floor(BOX_REACH * (Math.max(t1 - t0, u1 - u0) + 1));
    const core = (r, c) => r >= t0 - spread && r <= t1 + spread && c >= u0 - spread && c <= u1 + spread;
    let r0 = h, r1 = -1, c0 = w, c1 = -1;
    for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
      if (!ink[r * w + c]) continue;
      const cell = Math.floor(r / k) * cols + Math.floor(c / k);
      cells[cell] = 1;
      if (gray[r * w + c] > strongLevel && core(r, c)) {
        if (!reached[cell]) { reached[cell] = 1; queue.push(cell); }
        r0 = Math.min(r0, r); r1 = Math.max(r1, r); c0 = Math.min(c0, c); c1 = Math.max(c1, c);
      }
    }
    joined(cells, reached, queue, rows, cols);  // the cells of ink joined to the strong ink's
    const side = Math.max(r1 - r0, c1 - c0) + 1, reach = Math.floor(BOX_REACH * side);
    const top = Math.floor((r0 + r1 + 1 - side) / 2) - reach, left = Math.floor((c0 + c1 + 1 - side) / 2) - reach;
    const out = new Uint8Array(w * h);
    let all = 0, kept = 0;
    for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
      if (!ink[r * w + c]) continue;
      all++;
      const near = r >= top && r < top + side + 2 * reach && c >= left && c < left + side + 2 * reach;
      if (near || reached[Math.floor(r / k) * cols + Math.floor(c / k)]) { out[r * w + c] = 1; kept++; }
    }
    if (all - kept > BOX_LEAVE * kept) return ink;  // the strong ink must be the digit
    return out;
  }

  // preprocessing._without_frame: the ink less the ink joined to the image's outer eighth (on cells, 8 ways) where
  // it is a thin rectangle's outline, along FRAME_SIDES of each side, with other ink apart inside it
  function withoutFrame(ink, h, w) {
    const k = Math.ceil(Math.max(h, w) / BOX_CELLS), rows = Math.ceil(h / k), cols = Math.ceil(w / k);
    const cells = new Uint8Array(rows * cols), outer = new Uint8Array(rows * cols), queue = [];
    for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
      if (ink[r * w + c]) cells[Math.floor(r / k) * cols + Math.floor(c / k)] = 1;
    }
    const band = Math.max(1, Math.floor(Math.min(rows, cols) / 8));
    let top = false, bottom = false, left = false, right = false;
    for (let y = 0; y < rows; y++) for (let x = 0; x < cols; x++) {
      if (!cells[y * cols + x]) continue;
      top ||= y < band; bottom ||= y >= rows - band; left ||= x < band; right ||= x >= cols - band;
      if (y < band || y >= rows - band || x < band || x >= cols - band) { outer[y * cols + x] = 1; queue.push(y * cols + x); }
    }
    if (!(top && bottom && left && right)) return ink;
    joined(cells, outer, queue, rows, cols);  // the cells of ink joined to the outer eighth's
    let inside = 0, y0 = rows, y1 = -1, x0 = cols, x1 = -1;
    for (let y = 0; y < rows; y++) for (let x = 0; x < cols; x++) {
      const i = y * cols + x;
      if (cells[i] && !outer[i]) inside++;
      if (outer[i]) { y0 = Math.min(y0, y); y1 = Math.max(y1, y); x0 = Math.min(x0, x); x1 = Math.max(x1, x); }
    }
    if (inside < RULING_DIGIT) return ink;
    const thick = Math.max(2, Math.floor(Math.min(y1 - y0, x1 - x0) / 16));
    const along = [new Uint8Array(x1 - x0 + 1), new Uint8Array(x1 - x0 + 1),
                   new Uint8Array(y1 - y0 + 1), new Uint8Array(y1 - y0 + 1)];  // top, bottom, left, right
    for (let y = y0; y <= y1; y++) for (let x = x0; x <= x1; x++) {
      if (!outer[y * cols + x]) continue;
      if (Math.min(y - y0, y1 - y, x - x0, x1 - x) > thick) return ink;  // not an outline
      if (y <= y0 + thick) along[0][x - x0] = 1;
      if (y >= y1 - thick) along[1][x - x0] = 1;
      if (x <= x0 + thick) along[2][y - y0] = 1;
      if (x >= x1 - thick) along[3][y - y0] = 1;
    }
    if (along.some((side) => side.reduce((a, v) => a + v, 0) < FRAME_SIDES * side.length)) return ink;
    return ink.map((v, i) => (v && !outer[Math.floor(Math.floor(i / w) / k) * cols + Math.floor((i % w) / k)] ? 1 : 0));
  }

  function fromRGBA(rgba, w, h) {
    const enough = (l) => l !== null && l[2] - l[1] >= MIN_INK;
    const seen = unblocked(toGray(rgba, w * h), h, w);
    let levels = inkLevels(seen, h, w);
    if (levels === null || levels[2] - levels[1] < FAINT_INK) {  // faint ink, or none, on flat paper: stretched
      const faint = stretched(seen, h, w);
      if (faint !== seen) levels = inkLevels(faint, h, w);
    }
    if (!enough(levels)) throw new Error("no digit found (the image has no ink)");
    const [levelled, floor, top] = levels;
    const gray = withoutRuling(levelled, h, w, floor, top);
    const ink = nearTheDigit(withoutFrame(boxInk(gray, h, w, floor, top), h, w), gray, h, w,
                             floor + BOX_STRONG * (top - floor));
    let r0 = h, r1 = -1, c0 = w, c1 = -1;
    for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
      if (ink[r * w + c]) { r0 = Math.min(r0, r); r1 = Math.max(r1, r); c0 = Math.min(c0, c); c1 = Math.max(c1, c); }
    }
    const ch = r1 - r0 + 1, cw = c1 - c0 + 1;
    if (r1 < 0 || Math.max(ch, cw) < Math.min(MIN_SIDE, h, w)) throw new Error("no digit found (only specks)");
    const crop = new Float32Array(ch * cw);
    const fFloor = f32(floor), fRange = f32(top - floor);
    for (let r = 0; r < ch; r++) for (let c = 0; c < cw; c++) {
      const v = f32(f32(gray[(r + r0) * w + c + c0] - fFloor) / fRange);
      crop[r * cw + c] = Math.min(1, Math.max(0, v));
    }
    const scale = 20.0 / Math.max(ch, cw);
    const sw = Math.max(1, roundHalfEven(cw * scale)), sh = Math.max(1, roundHalfEven(ch * scale));
    const small = resizeLanczos(crop, cw, ch, sw, sh).map((v) => Math.min(1, Math.max(0, v)));
    const peak = small.reduce((a, v) => Math.max(a, v), 0);
    if (peak > 0 && peak < THIN_PEAK) for (let i = 0; i < small.length; i++) small[i] = small[i] / peak;  // a fine pen
    let total = 0, my = 0, mx = 0;
    for (let r = 0; r < sh; r++) for (let c = 0; c < sw; c++) {
      const v = small[r * sw + c];
      total += v; my += r * v; mx += c * v;
    }
    if (total <= 0) throw new Error("no digit found (the ink vanishes at 20 pixels)");
    const topRow = Math.min(Math.max(roundHalfEven(14 - my / total), 0), 28 - sh);
    const left = Math.min(Math.max(roundHalfEven(14 - mx / total), 0), 28 - sw);
    const out = new Uint8Array(784);
    for (let r = 0; r < sh; r++) for (let c = 0; c < sw; c++) {
      out[(r + topRow) * 28 + c + left] = roundHalfEven(f32(small[r * sw + c] * 255));
    }
    return out;
  }

  return { fromRGBA, roundHalfEven, resizeLanczos };
})();
