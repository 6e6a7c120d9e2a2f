// The drawing page's engine in a static site (`mnistlab export --format web`): the model runs in
// this browser with onnxruntime-web; preprocess.js prepares the drawing as mnistlab does in Python,
// and the saliency map is mnistlab's occlusion (inference.Classifier.explain), computed here apart from
// the answer: 169 forward passes, which the page asks for only once the drawing rests.
"use strict";

window.mnistlabEngine = (() => {
  const MAX_PIXELS = 4096 * 4096, MAX_ASPECT = 20, WORKING_SIDE = 1024;  // as preprocessing.py
  let session = null, card = null;
  const STORE = "mnistlab-corrections";
  const corrections = (() => { try { return JSON.parse(localStorage.getItem(STORE)) || []; } catch (err) { return []; } })();
  const dataURL = (blob) => new Promise((done) => { const r = new FileReader(); r.onload = () => done(r.result); r.readAsDataURL(blob); });
  const bytesOf = (url) => Uint8Array.from(atob(url.slice(url.indexOf(",") + 1)), (ch) => ch.charCodeAt(0));
  function seenPNG(rows) {
    const c = document.createElement("canvas"), g = c.getContext("2d"), img = g.createImageData(28, 28);
    c.width = c.height = 28;
    rows.flat().forEach((v, i) => img.data.set([v, v, v, 255], 4 * i));
    g.putImageData(img, 0, 0);
    return new Promise((done) => c.toBlob(done, "image/png"));
  }

  const ready = (async () => {
    card = await (await fetch("model.json")).json();
    ort.env.wasm.numThreads = 1;  // a static host sends no cross-origin isolation headers: no threads
    ort.env.wasm.wasmPaths = window.MNISTLAB_ORT_PATH;  // the CDN's copy, or this folder's (--runtime)
    session = await ort.InferenceSession.create("model.onnx", {executionProviders: ["wasm"]});
  })();

  // uint8 images, n of them, 28x28 each -> the model's logits, [n, K]. One run at a time: the map of an
  // answer and the next drawing's answer share the session.
  let running = Promise.resolve();
  function logits(pixels, n) {
    const [mean, std] = card.normalization;
    const scale = Math.fround(1 / (255 * std)), shift = Math.fround(-mean / std);
    const x = new Float32Array(n * 784);
    for (let i = 0; i < x.length; i++) x[i] = Math.fround(Math.fround(pixels[i] * scale) + shift);
    const run = running.then(() => session.run({[session.inputNames[0]]: new ort.Tensor("float32", x, [n, 1, 28, 28])}));
    running = run.catch(() => {});
    return run.then((out) => out[session.outputNames[0]].data);
  }
  const logProbsOf = (z) => window.mnistlabLesson.headOf(card.head).logProbs(Array.from(z), card.temperature);
  const rows = (a) => Array.from({length: 28}, (_, y) => Array.from(a.slice(y * 28, y * 28 + 28)));

  // Classifier.explain's answer, from one forward pass; its map (saliency) comes apart, from saliency()
  async function answerOf(pixels) {
    const z = Array.from((await logits(pixels, 1)).slice(0, width())), first = logProbsOf(z);
    const target = first.indexOf(Math.max(...first)), probs = first.map(Math.exp);
    const order = [target, ...probs.map((p, i) => i).filter((i) => i !== target).sort((a, b) => probs[b] - probs[a])];
    const reject = rejection(z);
    // "1 or 7?" below the card's cut, as inference.Prediction says it
    const unsure = !reject.rejected && probs[target] < card.unsure_below;
    const answer = reject.rejected ? "not a digit" :
      unsure ? `${card.classes[target]} or ${card.classes[order[1]]}?` : card.classes[target];
    return {
      ...reject, unsure, answer, prediction: card.classes[target], confidence: probs[target],
      probabilities: Object.fromEntries(card.classes.map((c, i) => [c, probs[i]])),
      runner_up: {class: card.classes[order[1]], probability: probs[order[1]]},
      logits: z, temperature: card.temperature, preprocessed: rows(pixels), saliency: null,
    };
  }

  // Classifier.explain's occlusion map of an answer: 169 variants of its image, each with one 4x4 patch
  // (stride 2) blanked; each pixel, the mean fall of the answer's log-probability. The variants go through
  // the model CHUNK at a time, the page's events handled between two chunks, so that the next drawing's
  // answer waits for one chunk at most; where wanted() turns false between two chunks (the answer was
  // replaced), it stops, with null.
  const CHUNK = 13;
  async function saliency(answer, wanted) {
    const pixels = Uint8Array.from(answer.preprocessed.flat()), corners = [];
    for (let r = 0; r <= 24; r += 2) for (let c = 0; c <= 24; c += 2) corners.push([r, c]);
    const batch = new Uint8Array(corners.length * 784);
    corners.forEach(([r, c], k) => {
      batch.set(pixels, k * 784);
      for (let y = r; y < r + 4; y++) for (let x = c; x < c + 4; x++) batch[k * 784 + y * 28 + x] = 0;
    });
    const K = width(), out = new Float32Array(corners.length * K);
    for (let k = 0; k < corners.length; k += CHUNK) {
      await new Promise((done) => setTimeout(done));  // the page's own events first: a new stroke's answer
      if (!wanted()) return null;
      const n = Math.min(CHUNK, corners.length - k);
      out.set(await logits(batch.subarray(k * 784, (k + n) * 784), n), k * K);
    }
    const target = card.classes.indexOf(answer.prediction), base = logProbsOf(answer.logits)[target];
    const heat = new Float64Array(784), count = new Float64Array(784);
    corners.forEach(([r, c], k) => {
      const fall = base - logProbsOf(out.slice(k * K, k * K + K))[target];
      for (let y = r; y < r + 4; y++) for (let x = c; x < c + 4; x++) { heat[y * 28 + x] += fall; count[y * 28 + x] += 1; }
    });
    return rows(heat.map((v, i) => v / count[i]));
  }

  // the model's outputs per image: one per class, and "none" for a none-class head (card.outputs)
  const width = () => window.mnistlabLesson.headOf(card.head).outputs(card.classes.length);

  // "not a digit": the card's score and threshold, as inference.Prediction says it
  function rejection(z) {
    if (!card.reject_score) return {rejected: false, why: "", reject: null};
    const value = window.mnistlabLesson.oodScore(z, card.reject_score, card.temperature, card.head);
    const rejected = value < card.reject_threshold;
    return {rejected, reject: {score: card.reject_score, value, threshold: card.reject_threshold},
            why: rejected ? `not a digit: its ${card.reject_score} score is below the threshold` : ""};
  }

  async function pixelsOf(source) {
    if (source.canvas) {
      const c = source.canvas;
      return c.getContext("2d").getImageData(0, 0, c.width, c.height);
    }
    // in preprocessing.py's words: the page says the same for the same file, whichever engine answers
    if (!source.file.size) throw new Error("the file is empty");
    const head = new Uint8Array(await source.file.slice(0, 24).arrayBuffer());
    const starts = (...bytes) => bytes.every((b, i) => head[i] === b), png = starts(0x89, 0x50, 0x4e, 0x47);
    if (png && head.length === 24) {  // a PNG's size, from its header, before decoding
      const view = new DataView(head.buffer), pw = view.getUint32(16), ph = view.getUint32(20);
      if (pw * ph > 2 * MAX_PIXELS) {  // where Pillow's guard refuses it at once
        throw new Error(`the image is too large (over ${MAX_PIXELS.toLocaleString("en")} pixels)`);
      }
      if (pw * ph > MAX_PIXELS) {
        throw new Error(`the image is too large (${pw}x${ph}; at most ${MAX_PIXELS.toLocaleString("en")} pixels)`);
      }
    }
    const bitmap = await createImageBitmap(source.file).catch(() => {
      const image = png || starts(0xff, 0xd8) || starts(0x47, 0x49, 0x46) ||
        starts(0x42, 0x4d) || (starts(0x52, 0x49, 0x46, 0x46) && String.fromCharCode(...head.slice(8, 12)) === "WEBP");
      if (image) throw new Error("the image is damaged or truncated");
      if (starts(0x49, 0x49, 0x2a, 0) || starts(0x4d, 0x4d, 0, 0x2a)) {
        throw new Error("a TIFF image, which browsers cannot read (mnistlab predict reads it)");
      }
      throw new Error("not an image (or a format this browser cannot read)");
    });
    const {width: w, height: h} = bitmap;
    if (w * h > MAX_PIXELS) {
      throw new Error(`the image is too large (${w}x${h}; at most ${MAX_PIXELS.toLocaleString("en")} pixels)`);
    }
    if (Math.max(w, h) > MAX_ASPECT * Math.min(w, h)) {
      throw new Error(`the image is ${w}x${h}, too thin to hold a digit (at most ${MAX_ASPECT} times longer than wide)`);
    }
    const k = Math.max(w, h) > 2 * WORKING_SIDE ? Math.floor(Math.max(w, h) / WORKING_SIDE) : 1;
    const canvas = document.createElement("canvas");
    canvas.width = Math.ceil(w / k); canvas.height = Math.ceil(h / k);
    const g = canvas.getContext("2d");
    g.imageSmoothingQuality = "high";
    g.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    return g.getImageData(0, 0, canvas.width, canvas.height);
  }

  return {
    async info() {
      await ready;
      return {classes: card.classes, model: `${card.model} (${card.name}, onnxruntime-web ${ort.env.versions.web})`,
              collect: true, finetune: false, saved: corrections.length,
              where: "It runs in this browser: nothing you draw leaves this page."};
    },
    // Corrections stay in this browser (localStorage, or memory where it is full or off) until downloaded
    // as a zip in the folder layout: <label>/<name>.png, the drawing; <label>/seen/<name>.png, the 28x28 image.
    async correct(label, blob, answer) {
      const png = await dataURL(blob), seen = await dataURL(await seenPNG(answer.preprocessed));
      // named once the awaits are over: two corrections made at once get two names
      const name = `${new Date().toISOString().replace(/\D/g, "").slice(0, 14)}-${corrections.length + 1}`;
      corrections.push({label, name, png, seen});
      try { localStorage.setItem(STORE, JSON.stringify(corrections)); } catch (err) { /* kept in memory */ }
      return `Kept in this browser: ${corrections.length} correction${corrections.length === 1 ? "" : "s"}; ` +
             "download them as a zip for mnistlab train --init … --dataset.";
    },
    corrections: () => corrections.length,
    async download() {
      const files = [];
      for (const c of corrections) {
        files.push({name: `${c.label}/${c.name}.png`, data: bytesOf(c.png)},
                   {name: `${c.label}/seen/${c.name}.png`, data: bytesOf(c.seen)});
      }
      return window.mnistlabZip.zip(files);
    },
    forget() { corrections.length = 0; localStorage.removeItem(STORE); },
    async predict(source) {
      await ready;
      const img = await pixelsOf(source);
      return answerOf(mnistPreprocess.fromRGBA(img.data, img.width, img.height));
    },
    saliency: async (answer, wanted = () => true) => { await ready; return saliency(answer, wanted); },
    // For the tests and benchmarks/web.py: drawings (image URLs) put on the page's pad one by one and
    // preprocessed as predict() does, then classified in one batch. Returns the 28x28 images (base64,
    // 784 bytes each; none where no digit was found), the classes, each one's "not a digit" verdict
    // (rejection()), and each pad's sum of RGBA values.
    async classifyDrawings(urls) {
      await ready;
      const pad = document.getElementById("pad"), g = pad.getContext("2d", {willReadFrequently: true});
      const pixels = new Uint8Array(urls.length * 784), sums = [], found = [];
      for (const [i, url] of urls.entries()) {
        const img = new Image();
        img.src = url;
        await img.decode();
        g.fillStyle = "#fff"; g.fillRect(0, 0, pad.width, pad.height); g.drawImage(img, 0, 0);
        const rgba = g.getImageData(0, 0, pad.width, pad.height).data;
        sums.push(rgba.reduce((s, v) => s + v, 0));
        try { pixels.set(mnistPreprocess.fromRGBA(rgba, pad.width, pad.height), i * 784); found.push(true); }
        catch (err) { found.push(false); }
      }
      const out = await logits(pixels, urls.length), K = width(), classes = [], rejected = [];
      for (let i = 0; i < urls.length; i++) {
        const z = Array.from(out.slice(i * K, i * K + K));
        const digits = z.slice(0, card.classes.length);  // without a none-class head's "none"
        classes.push(found[i] ? card.classes[digits.indexOf(Math.max(...digits))] : null);
        rejected.push(found[i] ? rejection(z) : null);
      }
      let text = "";
      for (const v of pixels) text += String.fromCharCode(v);
      return {pixels: btoa(text), classes, sums, rejected};
    },
  };
})();
