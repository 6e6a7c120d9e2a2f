"""`mnistlab export`: ONNX (optionally int8) and TorchScript files that run without mnistlab.

The exported graph takes normalised [N, 1, 28, 28] float images with any batch size and
returns logits, or probabilities with `probs=True` (softmax, with the checkpoint's
temperature, inside the graph). Batch norm is folded into the convolutions first (the
`simple` model's BatchNorm1d over its 10 outputs stays, as one cheap node). The file
says, in its metadata, the model, the class names, the normalisation and what it outputs.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from . import page
from .card import ModelCard
from .errors import MnistlabError
from .fileio import atomic_write, write_folder
from .inference import load_model
from .onnx_backend import METADATA_KEY

FORMATS = ("onnx", "torchscript", "web")
OPSET = 17
# The page's runtime: onnxruntime-web from npm, pinned. The hashes are those of its dist files as npm
# and the CDN serve them (a test checks them against the package the tests install from npm).
ORT_WEB_VERSION = "1.30.0"
ORT_WEB_FILES = {
    "ort.wasm.min.js": "sha384-Bw6URI+Gvoadw0do7/QrSHUC9D1vCYYK5OSqChFyhyV5mzPL4oe2rOAFljAnS8Sq",
    "ort-wasm-simd-threaded.mjs": "sha384-XcXA/MtAf0WpB8e023xQH9CM7RIjiugakT7x99DIwpFf7k56BIFFcAPerIF7FDad",
    "ort-wasm-simd-threaded.wasm": "sha384-vjBJ1z7qrhkTyYsNqKeF6c7N+nOJSU94czEo+tvZcu8G75JparGq9kB+kTnEUNVM",
}
ORT_WEB_CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_WEB_VERSION}/dist/"


class _Exported(nn.Module):
    """The classifier as it is shipped: logits, or temperature-scaled probabilities."""

    def __init__(self, module: nn.Module, probs: bool, temperature: float, head: str = "softmax"):
        super().__init__()
        self.module, self.probs, self.temperature, self.head = module, probs, temperature, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.module(images)
        if not self.probs:
            return logits
        if self.head == "sigmoid":  # the sigmoids normalised, as mnistlab reports them (ood.head_outputs)
            s = torch.sigmoid(logits / self.temperature)
            return s / s.sum(dim=1, keepdim=True)
        if self.head == "none-class":  # the classes' own distribution, without "none"
            return torch.softmax(logits[:, :-1] / self.temperature, dim=1)
        return torch.softmax(logits / self.temperature, dim=1)


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy with every BatchNorm2d folded into the convolution before it.

    A BatchNorm2d may sit right after its convolution, or after a max-pool that follows it:
    a per-channel affine map with a positive scale commutes with taking a maximum, so
    BN(pool(conv(x))) = pool(BN'(conv(x))). Channels with a negative scale cannot cross the
    pool; such a BatchNorm stays as it is (said in a warning).
    """
    module = copy.deepcopy(module).eval()
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        layers = list(seq)
        for i, bn in enumerate(layers):
            if not isinstance(bn, nn.BatchNorm2d):
                continue
            j = i - 1 if i >= 1 and isinstance(layers[i - 1], nn.Conv2d) else i - 2
            if j < 0 or not isinstance(layers[j], nn.Conv2d) or (j == i - 2 and not isinstance(
                    layers[i - 1], nn.MaxPool2d)):
                continue
            conv = layers[j]
            scale, shift = _bn_scale_shift(bn)
            if j == i - 2 and (scale <= 0).any():
                warnings.warn("a batch norm with a negative scale follows a max-pool; left unfolded", stacklevel=2)
                continue
            with torch.no_grad():
                bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter(bias * scale + shift)
            seq[i] = nn.Identity()
    return module


def _metadata(card: ModelCard, probs: bool) -> dict:
    """The model card, and what the graph takes and gives."""
    return {**card.to_dict(), "input": "images [N, 1, 28, 28], float32, (pixel / 255 - mean) / std",
            "output": "probabilities" if probs else "logits"}


def export(checkpoint: str | os.PathLike, fmt: str = "onnx", out: str | os.PathLike | None = None,
           probs: bool = False, int8: bool = False, data_dir: str | os.PathLike | None = None,
           runtime: str | os.PathLike | None = None) -> Path:
    """Export a checkpoint (or a pretrained model, by name); returns the path written.

    "web" writes a folder: a static site that runs the model in the browser (see export_web)."""
    if fmt not in FORMATS:
        raise MnistlabError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'.")
    if int8 and fmt != "onnx":
        raise MnistlabError("--int8 applies to ONNX export only.")
    if (probs and fmt == "web") or (runtime and fmt != "web"):
        raise MnistlabError("--runtime applies to --format web only, and the web page takes logits, not --probs.")
    model = load_model(checkpoint)
    if model.backend.runtime != "PyTorch":
        raise MnistlabError(f"{checkpoint}: export takes a PyTorch checkpoint (model.pt), not an exported file.")
    card = model.card
    module = _Exported(fold_batchnorm(model.backend.module.to(memory_format=torch.contiguous_format)), probs,
                       card.temperature, card.head).eval()
    suffix = {"onnx": ".int8.onnx" if int8 else ".onnx", "torchscript": ".torchscript.pt", "web": "-web"}[fmt]
    out = Path(out) if out else Path(checkpoint).with_name(Path(checkpoint).stem + suffix)
    meta = _metadata(card, probs)
    if fmt == "web":
        return export_web(_onnx_bytes(module, meta), card, Path(checkpoint).name, out, runtime)
    if fmt == "torchscript":
        scripted = torch.jit.trace(module, torch.zeros(1, 1, 28, 28))
        files = {"mnistlab.json": json.dumps(meta)}
        atomic_write(out, lambda tmp: torch.jit.save(scripted, tmp, _extra_files=files))
        return out
    model_bytes = _onnx_bytes(module, meta)
    if int8:
        model_bytes = _with_metadata(quantize_int8(model_bytes, card, data_dir), meta | {"quantized": "int8"})
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(model_bytes))
    return out


def export_web(model_bytes: bytes, card: ModelCard, name: str, out: Path, runtime=None) -> Path:
    """A static site in `out`: the drawing page, its JavaScript, the ONNX model and its card. The
    page loads onnxruntime-web from the CDN, pinned and checked by subresource integrity, or with
    `runtime` (a node_modules/onnxruntime-web/dist folder) from copies of its files beside it."""
    files = {"model.onnx": model_bytes, "model.json": json.dumps({**card.to_dict(), "name": name}).encode(),
             **{f: page.asset(f).encode() for f in ("app.js", *page.BROWSER_SCRIPTS)}}
    if runtime is None:
        where, tag = ORT_WEB_CDN, page.script(ORT_WEB_CDN + "ort.wasm.min.js", ORT_WEB_FILES["ort.wasm.min.js"])
    else:
        for f in ORT_WEB_FILES:
            try:
                files[f] = (Path(runtime) / f).read_bytes()
            except OSError:
                raise MnistlabError(f"--runtime {runtime}: no {f} there; give the dist folder of onnxruntime-web "
                                    f"{ORT_WEB_VERSION} (npm install onnxruntime-web@{ORT_WEB_VERSION}).") from None
        digest = base64.b64encode(hashlib.sha384(files["ort.wasm.min.js"]).digest()).decode()
        where, tag = "./", page.script("ort.wasm.min.js", f"sha384-{digest}")
    files["index.html"] = page.page([tag, f"<script>window.MNISTLAB_ORT_PATH = {json.dumps(where)};</script>",
                                     *(page.script(f) for f in page.BROWSER_SCRIPTS)]).encode()
    return write_folder(out, files, replaceable=lambda old: (old / "model.json").is_file())


def _onnx_bytes(module: nn.Module, meta: dict) -> bytes:

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        torch.onnx.export(module, (torch.zeros(2, 1, 28, 28),), buf, input_names=["images"],
                          output_names=[meta["output"]], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, meta["output"]: {0: "batch"}})
    return _with_metadata(buf.getvalue(), meta)


def _with_metadata(model_bytes: bytes, meta: dict) -> bytes:
    import onnx

    model = onnx.load_from_string(model_bytes)
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def quantize_int8(model_bytes: bytes, card: ModelCard, data_dir=None, n_calibration: int = 2000) -> bytes:
    """Static int8 quantisation (QDQ, per channel) calibrated on training images, never test ones."""
    import tempfile

    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .data import load_split, normalize

    images, _ = load_split(card.dataset, "train", data_dir, val_size=card.val_size)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n_calibration]
    x = normalize(images[pick], card.mean, card.std).numpy()

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(x, max(1, len(x) // 100)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    with tempfile.TemporaryDirectory() as d:
        src, prepared, dst = Path(d) / "fp32.onnx", Path(d) / "prepared.onnx", Path(d) / "int8.onnx"
        src.write_bytes(model_bytes)
        quant_pre_process(str(src), str(prepared))  # shape inference and graph clean-up, as ORT advises
        quantize_static(str(prepared), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        return dst.read_bytes()
