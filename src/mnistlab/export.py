"""`mnistlab export`: ONNX (optionally int8), torch.export (.pt2) and TorchScript files that run
without mnistlab, a static site, or a folder in the Hugging Face layout.

The exported graph takes normalised [N, 1, 28, 28] float images with any batch size and
returns logits, or probabilities with `probs=True` (the head's, with the checkpoint's
temperature, inside the graph). Batch norm is folded into the convolutions first (the
`simple` model's BatchNorm1d over its 10 outputs stays, as one cheap node). The file
says, in its metadata, the model, the class names, the normalisation and what it outputs.
The Hugging Face folder holds the weights as they are (safetensors), not a graph.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch
import torch.nn as nn

from .card import HF_CONFIG, HF_README, HF_WEIGHTS, ModelCard
from .checkpoints import weights_bytes
from .errors import MnistlabError
from .fileio import atomic_write, write_folder
from .heads import Head, head_of
from .inference import UNSURE_BELOW, Classifier, load_model
from .onnx_backend import METADATA_KEY
from .serve import page
from .torch_backend import PT2_CARD, ProgramBackend, TorchBackend, quiet_loggers

# pt2 is the one to use from PyTorch; torchscript stands on torch.jit, deprecated, and goes when torch drops it
FORMATS = ("onnx", "pt2", "torchscript", "web", "hf")
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".torchscript.pt", "web": "-web", "hf": "-hf"}
OPSET = 18  # the oldest the exporter writes without converting
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

    def __init__(self, module: nn.Module, probs: bool, temperature: float, head: Head):
        super().__init__()
        self.module, self.probs, self.temperature, self.head = module, probs, temperature, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.module(images)
        return self.head.exported_probabilities(logits, self.temperature) if self.probs else logits


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    assert bn.running_var is not None and bn.running_mean is not None, "a batch norm without running statistics"
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
            conv = cast(nn.Conv2d, layers[j])
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


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise MnistlabError("ONNX export needs onnx and onnxruntime: pip install 'mnistlab[onnx]'.") from None


def export(checkpoint: str | os.PathLike, fmt: str = "onnx", out: str | os.PathLike | None = None,
           probs: bool = False, int8: bool = False, data_dir: str | os.PathLike | None = None,
           runtime: str | os.PathLike | None = None, note: Callable[[str], None] | None = None) -> Path:
    """Export a model (a checkpoint, weights file, Hugging Face folder, .pt2 program, or a pretrained
    model by name); returns the path written. What the file will lack is said to `note` (by
    default a warning).

    "web" writes a folder: a static site that runs the model in the browser (see export_web);
    "hf" a folder in the Hugging Face layout (see export_hf)."""
    if fmt not in FORMATS:
        raise MnistlabError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'.")
    if int8 and fmt != "onnx":
        raise MnistlabError("--int8 applies to ONNX export only.")
    if probs and fmt in ("web", "hf"):
        raise MnistlabError("the web page and the Hugging Face folder take logits: leave out --probs.")
    if runtime and fmt != "web":
        raise MnistlabError("--runtime applies to --format web only.")
    if fmt in ("onnx", "web"):
        _require_onnx()
    if fmt == "torchscript":
        (note or _warn)("--format torchscript stands on torch.jit, which PyTorch deprecates; --format pt2 "
                        "(torch.export) is its successor.")
    model = load_model(checkpoint)
    card = model.card
    if probs and card.reject_score not in ("", "msp"):  # msp reads from probabilities; the other scores need logits
        (note or _warn)(f"with --probs the file holds probabilities, and this model's 'not a digit' score "
                        f"({card.reject_score}) needs logits: the exported model will not reject non-digits.")
    suffix = ".int8.onnx" if int8 else SUFFIXES[fmt]
    out = Path(out) if out else Path(checkpoint).with_name(Path(checkpoint).stem + suffix)
    if Path(checkpoint).exists() and out.exists() and out.resolve() == Path(checkpoint).resolve():
        raise MnistlabError(f"{out}: that is the model being exported; name another file for the {fmt} export.")
    if fmt not in ("web", "hf") and out.is_dir():
        raise MnistlabError(f"{out}: is a folder, and --format {fmt} writes one file: give a file's name.")
    if fmt in ("onnx", "pt2") and out.suffix.lower() != SUFFIXES[fmt]:  # how mnistlab and runtimes know them
        raise MnistlabError(f"{out}: --format {fmt} writes a {SUFFIXES[fmt]} file, which is known by that suffix: "
                            f"name it {out.with_suffix(SUFFIXES[fmt]).name}.")
    if fmt == "hf":
        return export_hf(model, checkpoint, out)
    module = _graph(model, checkpoint, fmt, probs)
    meta = _metadata(card, probs)
    if fmt == "web":
        return export_web(_onnx_bytes(module, meta), card, Path(checkpoint).name, out, runtime)
    if fmt == "pt2":
        buf = io.BytesIO()  # the archive's inner folder is named after the file: a buffer's is always the same
        assert isinstance(module, nn.Module)  # _graph gives a program only for onnx and web
        torch.export.save(_program(module), buf, extra_files={PT2_CARD: json.dumps(meta)})
        atomic_write(out, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
        return out
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


def _graph(model: Classifier, source, fmt: str, probs: bool) -> nn.Module | torch.export.ExportedProgram:
    """What is exported: the model's module with batch norm folded and, with `probs`, its softmax;
    or a .pt2 file's own program, which goes on to ONNX (and the web page) as it is."""
    backend = model.backend
    if isinstance(backend, TorchBackend):
        module = fold_batchnorm(backend.module.to(memory_format=torch.contiguous_format))  # type: ignore[call-overload]
        return _Exported(module, probs, model.card.temperature, head_of(model.card.head)).eval()
    if isinstance(backend, ProgramBackend):
        if fmt in ("onnx", "web") and probs == (backend.outputs == "probabilities"):
            return backend.program
        raise MnistlabError(f"{source}: a .pt2 program exports only to ONNX or the web page, as the {backend.outputs} "
                            "it gives; export its model.pt or .safetensors for anything else.")
    raise MnistlabError(f"{source}: export takes a PyTorch model (model.pt, .safetensors, a Hugging Face folder or "
                        ".pt2), not an .onnx file.")


def _any_batch() -> tuple[tuple[torch.Tensor], dict]:
    """An example input and the shapes that trace a module for any batch size, the dimension named batch."""
    return (torch.zeros(2, 1, 28, 28),), {"images": {0: torch.export.Dim("batch", min=1)}}


def _program(module: nn.Module) -> torch.export.ExportedProgram:
    """The module as torch.export's graph, for any batch size."""
    args, shapes = _any_batch()
    return torch.export.export(module, args, dynamic_shapes=shapes)


def export_hf(model: Classifier, source, out: Path) -> Path:
    """A folder in the Hugging Face layout, for a model hub: config.json (the model card),
    model.safetensors (the weights, unchanged, the card in the metadata too) and README.md (a
    model card for people). `load_model(folder)` reads it back, offline."""
    if not isinstance(model.backend, TorchBackend):
        raise MnistlabError(f"{source}: --format hf takes the weights of a model (model.pt, .safetensors, a "
                            "Hugging Face folder), not an exported file (.pt2, .onnx).")
    card = model.card
    config = {"model_type": "mnistlab", "library_name": "mnistlab", **card.to_dict()}
    files = {HF_CONFIG: (json.dumps(config, indent=2) + "\n").encode(),
             HF_WEIGHTS: weights_bytes(card, model.backend.module.state_dict()),
             HF_README: _hf_readme(card, Path(source).name).encode()}
    # replaced only when it holds nothing but an earlier export: a hub clone's .git is never deleted
    return write_folder(out, files, replaceable=lambda old: {p.name for p in old.iterdir()} <= set(files))


def _hf_readme(card: ModelCard, source: str) -> str:
    classes = ", ".join(card.classes)
    held_out = f"{card.val_size:,} training images held out for validation" if card.val_size else "none held out"
    return f"""---
library_name: mnistlab
pipeline_tag: image-classification
tags:
- mnistlab
- {card.dataset}
---

# {card.model} on {card.dataset}

An image classifier trained with mnistlab (exported from `{source}`): a 28x28 grey image in,
one probability per class out.

| | |
| --- | --- |
| model | `{card.model}`, settings `{json.dumps(card.model_config)}` |
| dataset | `{card.dataset}`; {held_out} |
| classes | {classes} |
| input | 28x28 pixels, ink bright on a dark background, fed as (pixel / 255 - {card.mean}) / {card.std} |
| temperature | {card.temperature:.4f}: probabilities are softmax(logits / {card.temperature:.4f}) |

## Use

```
# with mnistlab installed
mnistlab predict ./THIS_FOLDER digit.png
```

or in Python: `mnistlab.load_model("THIS_FOLDER").predict("digit.png").label`. mnistlab reads the folder
as it is, offline. `config.json` is the model card it reads; `model.safetensors` holds the weights, with the
same card in its metadata.
"""


def export_web(model_bytes: bytes, card: ModelCard, name: str, out: Path, runtime=None) -> Path:
    """A static site in `out`: the drawing page, its JavaScript, the ONNX model and its card. The
    page loads onnxruntime-web from the CDN, pinned and checked by subresource integrity, or with
    `runtime` (a node_modules/onnxruntime-web/dist folder) from copies of its files beside it."""
    card_json = {**card.to_dict(), "name": name, "unsure_below": UNSURE_BELOW}  # the page says "1 or 7?" as Python
    files = {"model.onnx": model_bytes, "model.json": json.dumps(card_json).encode(),
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


def _onnx_bytes(module: nn.Module | torch.export.ExportedProgram, meta: dict) -> bytes:
    """The ONNX file of a module or a .pt2 file's program, by torch.export's graph (any batch size) and the dynamo
    exporter: the TorchScript-based one is deprecated."""
    args, shapes = _any_batch() if isinstance(module, nn.Module) else ((), None)  # a program's shapes are its own
    with warnings.catch_warnings(), quiet_loggers("torch.onnx", "onnxscript"):
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(module, args, input_names=["images"], output_names=[meta["output"]],
                                         opset_version=OPSET, dynamo=True, dynamic_shapes=shapes, verbose=False)
    assert onnx_program is not None  # dynamo=True always gives the program
    return _with_metadata(onnx_program.model_proto.SerializeToString(), meta)


def _with_metadata(model_bytes: bytes, meta: dict) -> bytes:
    import onnx

    model = onnx.load_from_string(model_bytes)
    # the exporter's notes on each node (source lines, with this machine's paths) and on the graph: not shipped
    for node in model.graph.node:
        del node.metadata_props[:]
    del model.graph.metadata_props[:]
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def quantize_int8(model_bytes: bytes, card: ModelCard, data_dir=None, n_calibration: int = 2000) -> bytes:
    """Static int8 quantisation (QDQ, per channel) calibrated on training images, never test ones."""
    import tempfile

    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .data.mnist import normalize
    from .data.own import load_split

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
