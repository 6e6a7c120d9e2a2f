// The drawing page's engine under `mnistlab serve`: the server preprocesses and predicts.
"use strict";

window.mnistlabEngine = {
  async info() {
    const h = await (await fetch("/healthz")).json();
    return {classes: h.classes, model: h.model, collect: h.collect, finetune: h.collect,
            where: "Your drawing goes to this machine's mnistlab server, which preprocesses it the MNIST way."};
  },
  // `mnistlab serve --collect DIR`: the drawing is saved in DIR/<label>/, the 28x28 image in DIR/<label>/seen/
  async correct(label, blob) {
    const data = await serverCall(`/api/correct?label=${encodeURIComponent(label)}`, {
      method: "POST", body: blob, headers: {"Content-Type": blob.type || "application/octet-stream"}});
    return `Saved as ${data.saved}.`;
  },
  startFinetune: () => serverCall("/api/finetune", {method: "POST"}),
  finetuneStatus: () => serverCall("/api/finetune"),
  async predict(source) {
    // the image's own bytes, with its content type: the cheapest request for the server to read
    const blob = source.file || await new Promise((done) => source.canvas.toBlob(done, "image/png"));
    const res = await fetch("/api/predict?explain=1", {
      method: "POST", body: blob, headers: {"Content-Type": blob.type || "application/octet-stream"}});
    const data = await res.json();
    if (!res.ok) throw new Error(data.error || "the server refused the image");
    return data;
  },
};

async function serverCall(url, options) {
  const res = await fetch(url, options);
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || `the server answered ${res.status}`);
  return data;
}
