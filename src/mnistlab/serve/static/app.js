// The drawing page, whatever answers it: `mnistlab serve` (server.js) or the model running in
// this browser (browser.js, from `mnistlab export --format web`). Both engines answer
// {prediction, answer, unsure, probabilities, preprocessed, logits, temperature, saliency, runner_up, rejected, why,
// reject}; the static engine's saliency is null, and its engine.saliency(answer, wanted) makes it.
"use strict";

const engine = window.mnistlabEngine;
const $ = (id) => document.getElementById(id);
const pad = $("pad"), ctx = pad.getContext("2d", {willReadFrequently: true});
const seen = $("seen").getContext("2d"), why = $("why").getContext("2d");
let drawing = false, last = null, inFlight = false, pending = false, answer = null, truth = null;
let generation = 0;  // bumped by Clear: answers to requests sent before it are dropped
let classes = [], source = null;  // source: what the answer shown is for (the pad, or an uploaded file)

// The tutorial's lesson, as mnistlab/lesson.py computes it: log-softmax with the max subtracted first
function logSoftmax(z) {
  const m = Math.max(...z);
  const shifted = z.map((v) => v - m);
  const logSum = Math.log(shifted.reduce((s, v) => s + Math.exp(v), 0));
  return shifted.map((v) => v - logSum);
}
const crossEntropy = (z, target) => -logSoftmax(z)[target];

// A model's head, as mnistlab/heads.py defines it; the one place the page reads card.head's kind.
// outputs: the model's outputs for n classes; logProbs: the logs of the class probabilities at temperature t,
// softmax(z / T), the sigmoids normalised, or a none-class head's softmax without its last output, "none"
function headOf(kind) {
  const scaled = (z, t) => z.map((v) => v / t);
  const logSigmoid = (v) => -(Math.max(-v, 0) + Math.log1p(Math.exp(-Math.abs(v))));
  if (kind === "sigmoid") return {outputs: (n) => n, logProbs: (z, t) => logSoftmax(scaled(z, t).map(logSigmoid))};
  if (kind === "none-class") return {outputs: (n) => n + 1, logProbs: (z, t) => logSoftmax(scaled(z, t).slice(0, -1))};
  return {outputs: (n) => n, logProbs: (z, t) => logSoftmax(scaled(z, t))};  // softmax, and cards from before heads
}

// "Not a digit", as mnistlab/ood.py computes it from the logits: higher scores look more like a digit
// (msp: the largest of the head's probabilities)
function oodScore(z, name, t, head) {
  const s = z.map((v) => v / t), top = Math.max(...s);
  if (name === "msp") return Math.exp(Math.max(...headOf(head).logProbs(z, t)));
  if (name === "energy") return t * (top + Math.log(s.reduce((sum, v) => sum + Math.exp(v - top), 0)));
  if (name === "max-sigmoid") return 1 / (1 + Math.exp(-top));
  if (name === "not-none") return 1 - Math.exp(logSoftmax(s)[s.length - 1]);  // a none-class head: 1 - p(none)
  throw new Error(`unknown reject score ${name}`);
}
window.mnistlabLesson = {logSoftmax, crossEntropy, oodScore, headOf};

function reset() {
  generation += 1; pending = false; truth = null; source = null;
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, pad.width, pad.height);
  $("correct-note").textContent = "";
  noAnswer("");
}

// No answer to show (a cleared pad, or a failure, said in `message`): everything shown for an earlier
// drawing goes, the picture the model saw included, so that none of it passes for this one's
function noAnswer(message) {
  answer = null;
  $("prediction").textContent = ""; $("prediction").classList.remove("rejected", "unsure");
  $("nearest").textContent = ""; $("runner-up").textContent = ""; $("message").textContent = message;
  $("correct-box").style.visibility = "hidden";  // hidden, not gone: what is below it stays in place
  seen.clearRect(0, 0, 28, 28); why.clearRect(0, 0, 28, 28);
  showBars(null); showLesson();
}

// A failure in words for the person who drew or uploaded the image, the same whichever engine answered.
// The engines say why in the API's terms: both say "no digit found (…)" for a drawing or a picture with
// no digit to read, and "not an image (…)" for a file that is none (the server, "send an image …" where
// the file's type is not an image's).
function failure(err, what) {
  const reason = (err.message || String(err)).replace(/\.?$/, ".");
  const name = what.file ? what.file.name : "";  // a long one shortened: the message keeps to its three lines
  const file = name.length > 40 ? `${name.slice(0, 24)}…${name.slice(-14)}` : name;
  if (/no digit found/i.test(reason)) {
    return file ? `No digit found in ${file}: use a picture of one digit whose strokes stand out from the paper.`
      : "No digit found: draw one digit, with a darker or thicker stroke and white space around it.";
  }
  if (file && /not an image|send an image/i.test(reason)) return `${file} is not a picture this page can read.`;
  return file ? `${file}: ${reason}` : reason.charAt(0).toUpperCase() + reason.slice(1);
}

function setBrush() {
  ctx.strokeStyle = "#000"; ctx.lineWidth = Number($("brush").value); ctx.lineCap = "round"; ctx.lineJoin = "round";
  $("brush-size").textContent = `${$("brush").value} px`;
}

function showBars(result) {
  const bars = $("bars");
  bars.innerHTML = "";
  for (const c of classes) {
    const p = result ? result.probabilities[c] : 0;
    const row = document.createElement("div");
    row.className = "bar" + (result && result.prediction === c ? " best" : "");
    row.setAttribute("role", "meter");
    row.setAttribute("aria-valuemin", "0"); row.setAttribute("aria-valuemax", "100");
    row.setAttribute("aria-valuenow", (100 * p).toFixed(1));
    row.setAttribute("aria-label", `${c}: ${(100 * p).toFixed(1)} percent`);
    row.innerHTML = `<span></span><div class="track"><div class="fill"></div></div><span></span>`;
    row.children[0].textContent = c;
    row.querySelector(".fill").style.width = (100 * p).toFixed(1) + "%";
    row.children[2].textContent = (100 * p).toFixed(1) + "%";
    bars.appendChild(row);
  }
}

function showSeen(pixels, saliency) {
  const img = seen.createImageData(28, 28);
  pixels.flat().forEach((v, i) => { img.data.set([v, v, v, 255], 4 * i); });
  seen.putImageData(img, 0, 0);
  why.clearRect(0, 0, 28, 28);
  if (saliency) showWhy(saliency);
}

function showWhy(saliency) {
  const heat = why.createImageData(28, 28), flat = saliency.flat();
  const top = Math.max(...flat.map(Math.abs)) || 1;
  flat.forEach((v, i) => {
    const a = Math.round(200 * Math.min(1, Math.abs(v) / top));
    heat.data.set(v >= 0 ? [230, 40, 30, a] : [40, 90, 230, a], 4 * i);
  });
  why.putImageData(heat, 0, 0);
  $("why").style.visibility = $("show-why").checked ? "visible" : "hidden";
}

// An engine that answers without the map (the static page's: the map costs 169 forward passes in this
// browser) makes it once the drawing rests, so that drawing never waits for it; an answer replaced
// meanwhile (a new stroke, Clear, a failure) gets none, and the engine stops making it.
function explainWhenIdle() {
  const shown = answer;
  if (!shown || shown.saliency || !engine.saliency || drawing || pending) return;
  engine.saliency(shown, () => answer === shown).then((map) => {
    if (!map || answer !== shown) return;
    shown.saliency = map;
    showWhy(map);
  }).catch(() => {});  // the answer stands without its map
}

function showLesson() {
  const body = $("logits");
  body.innerHTML = "";
  $("loss").textContent = ""; $("loss").removeAttribute("data-value");
  for (const b of $("truth").children) b.setAttribute("aria-pressed", String(classes[Number(b.value)] === truth));
  if (!answer) return;
  const soft = logSoftmax(answer.logits).map(Math.exp);
  answer.logits.forEach((z, i) => {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td></td><td>${z.toFixed(3)}</td><td>${soft[i].toFixed(4)}</td>`;
    tr.children[0].textContent = classes[i] ?? "none";  // a none-class head's last output
    body.appendChild(tr);
  });
  const t = answer.temperature;
  $("temperature-note").textContent = t === 1 ? "" :
    `The bars above use softmax(z / T) with T = ${t.toFixed(3)}, fitted on held-out images so that ` +
    "the probabilities are honest; the lesson uses z itself.";
  if (truth !== null) {
    const y = classes.indexOf(truth), loss = crossEntropy(answer.logits, y);
    $("loss").textContent = `cross-entropy = -log softmax(z)[${truth}] = ${loss.toFixed(4)}` +
      (answer.prediction === truth ? " (right: a small loss)" : ` (the model said ${answer.prediction}: a large loss)`);
    $("loss").setAttribute("data-value", String(loss));
  }
}

function show(result) {
  answer = window.mnistlabAnswer = result;
  $("message").textContent = "";
  // a rejected drawing is said to be no digit, plainly; the nearest digit is still shown, small
  const percent = (c) => `${(100 * result.probabilities[c]).toFixed(1)}%`;
  $("prediction").textContent = result.rejected ? "not a digit" : result.answer;
  $("prediction").classList.toggle("rejected", Boolean(result.rejected));
  $("prediction").classList.toggle("unsure", Boolean(result.unsure));
  $("nearest").textContent = result.rejected ?
    `This does not look like a digit to the model. The nearest digit is ${result.prediction} ` +
    `(${percent(result.prediction)}).` : result.unsure ?
    `The model cannot tell ${result.prediction} (${percent(result.prediction)}) from ` +
    `${result.runner_up.class} (${percent(result.runner_up.class)}).` : "";
  $("runner-up").textContent = `runner-up: ${result.runner_up.class} (${(100 * result.runner_up.probability).toFixed(1)}%)`;
  showSeen(result.preprocessed, result.saliency);
  showBars(result);
  showLesson();
  $("correct-box").style.visibility = "visible";
}

async function classify(what) {
  const sentIn = generation;
  try {
    const result = await engine.predict(what);
    if (sentIn !== generation) return;  // the pad was cleared meanwhile: a late answer must not come back
    source = what;
    show(result);
    explainWhenIdle();
  } catch (err) {
    if (sentIn !== generation) return;
    noAnswer(failure(err, what));
  }
}

function predictDrawing() {
  // one request at a time; the latest drawing wins
  if (inFlight) { pending = true; return; }
  inFlight = true;
  classify({canvas: pad}).finally(() => {
    inFlight = false;
    if (pending) { pending = false; predictDrawing(); }
  });
}

function point(e) {
  const r = pad.getBoundingClientRect();
  return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
}
pad.addEventListener("pointerdown", (e) => {
  e.preventDefault(); drawing = true; last = point(e); pad.setPointerCapture(e.pointerId);
  ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(...last); ctx.stroke();
});
pad.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  e.preventDefault();
  const p = point(e);
  ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(...p); ctx.stroke();
  last = p; predictDrawing();
});
for (const ev of ["pointerup", "pointercancel"]) {
  pad.addEventListener(ev, () => { if (drawing) predictDrawing(); drawing = false; });
}
pad.addEventListener("touchmove", (e) => e.preventDefault(), {passive: false});  // no scrolling while drawing
$("clear").addEventListener("click", reset);
$("brush").addEventListener("input", setBrush);
$("show-why").addEventListener("change", () => { $("why").style.visibility = $("show-why").checked ? "visible" : "hidden"; });
$("upload").addEventListener("change", (e) => {
  const f = e.target.files[0]; if (!f) return;
  generation += 1; classify({file: f}); e.target.value = "";
});
document.addEventListener("keydown", (e) => {
  const t = e.target, typing = t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
    (t.tagName === "INPUT" && !["range", "checkbox", "button", "file"].includes(t.type));
  if (e.ctrlKey || e.metaKey || e.altKey || typing) return;
  if (e.key === "c" || e.key === "C") { e.preventDefault(); reset(); }
  if (e.key === "u" || e.key === "U") { e.preventDefault(); $("upload").click(); }
});

// "Wrong? It's a …": the drawing (as sent) and the 28x28 image the model saw are kept for fine-tuning
let collecting = false;
let corrected = null;  // the answer last corrected, and its label: a double-click keeps the drawing once
async function correct(label) {
  const note = $("correct-note");
  if (!answer || !source || (corrected && corrected.answer === answer && corrected.label === label)) return;
  corrected = {answer, label};
  try {
    const blob = source.file || await new Promise((done) => source.canvas.toBlob(done, "image/png"));
    note.textContent = await engine.correct(label, blob, answer);
    if (engine.download) $("download").hidden = false;
  } catch (err) { corrected = null; note.textContent = err.message || String(err); }
}

// "Fine-tune on my digits" (mnistlab serve --collect): the server trains in a child process; this page polls it
const percent = ([c, n]) => `${c}/${n} = ${(100 * c / Math.max(n, 1)).toFixed(2)}%`;
async function followFinetune() {
  const bar = $("finetune-progress"), say = (text) => { $("finetune-status").textContent = text; };
  $("finetune").disabled = true;
  try {
    for (;;) {
      const s = await engine.finetuneStatus();
      if (s.state === "running") {
        bar.hidden = false; bar.max = s.steps || 1; bar.value = s.step;
        say(s.steps ? `Fine-tuning: step ${s.step} of ${s.steps}…` : `Fine-tuning: ${s.lines.at(-1) || "starting"}…`);
      } else {
        bar.hidden = true;
        if (s.state === "done") {
          say(`Fine-tuned in ${s.seconds.toFixed(1)} s. Held-out corrected digits: before ${percent(s.before)}, ` +
              `after ${percent(s.after)}. Now serving ${s.model_path} (give it to mnistlab predict or export).`);
          const info = await engine.info();
          $("model").textContent = info.model;
          if (source) { generation += 1; classify(source); }  // the new model's answer to the drawing shown
        } else if (s.state === "failed") {
          say(`The fine-tune failed: ${s.error} The served model is unchanged.`);
        }
        break;
      }
      await new Promise((r) => setTimeout(r, 400));
    }
  } catch (err) { say(err.message || String(err)); }
  $("finetune").disabled = false;
}
$("finetune").addEventListener("click", async () => {
  try { await engine.startFinetune(); } catch (err) { $("finetune-status").textContent = err.message || String(err); return; }
  followFinetune();
});
$("download").addEventListener("click", async () => {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await engine.download());
  a.download = "mnistlab-corrections.zip";
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
});

engine.info().then((info) => {
  classes = info.classes;
  $("model").textContent = info.model;
  $("where").textContent = info.where;
  const group = $("truth");
  classes.forEach((c, i) => {
    const b = document.createElement("button");
    b.type = "button"; b.value = String(i); b.textContent = c; b.setAttribute("aria-pressed", "false");
    b.addEventListener("click", () => { truth = c; showLesson(); });
    group.appendChild(b);
  });
  collecting = Boolean(info.collect);
  classes.forEach((c) => {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = c; b.dataset.label = c;
    b.addEventListener("click", () => correct(c));
    $("correct").appendChild(b);
  });
  $("collect").hidden = !collecting;
  $("correct-box").hidden = !engine.correct || !collecting;
  $("finetune").hidden = !info.finetune;
  $("download").hidden = !engine.download || !info.saved;
  if (info.finetune) engine.finetuneStatus().then((s) => { if (s.state === "running") followFinetune(); }).catch(() => {});
  setBrush(); reset();
  document.body.dataset.ready = "true";
}).catch((err) => { $("message").textContent = `the model could not be loaded: ${err.message || err}`; });
