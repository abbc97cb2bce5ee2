"""The opt-in 8-bit text path: the backbone's text encoder with int8 weights (torch dynamic quantization).

One caption's encoding is compute-bound in small matrix products (89% of CPU in `addmm`). Dynamic quantization
stores every `Linear` of the text encoder (BERT for BLIP, the text transformer for CLIP) as int8 with a scale per
tensor and quantizes its activations on the fly, so those products run as int8 GEMMs (fbgemm / oneDNN on x86,
qnnpack on ARM). Chosen over ONNX Runtime: no new dependency, no export step, the same model objects and
tokenizer, and the projections that fingerprint the backbone stay float32 (an index's model check is unchanged).
The head stays float32 too: its weights decide which terms light up. Agreement with float32 is measured, never
assumed (`bench/bench_text.py` on real-size random weights; `mlsr verify --only int8` on the real models), and
float32 stays the default until the real models agree.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings

import torch

from mlsr.errors import ModelLoadError

_TEXT_MODULES = {"blip": "text_encoder", "clip": "text_model"}


def _quantized_text_module(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of a text module whose Linear layers are dynamically quantized to int8 (the original is unchanged)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch announces the move of quantization to torchao; the API still works
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(module), {torch.nn.Linear}, dtype=torch.qint8)


def int8_text_backbone(backbone):
    """A Backbone sharing every weight of `backbone` but its text encoder, which is an int8 copy (CPU only)."""
    name = _TEXT_MODULES.get(backbone.model_type)
    if name is None or not hasattr(backbone.model, name):
        raise ModelLoadError(f"the 8-bit text path knows no text encoder for a {backbone.model_type!r} backbone.")
    if backbone.device.type != "cpu":
        raise ModelLoadError("the 8-bit text path runs on the CPU (torch's dynamic quantization); use device 'cpu'.")
    model = copy.copy(backbone.model)  # a shallow copy with its own table of submodules: the original keeps its own
    model._modules = dict(backbone.model._modules)
    model._modules[name] = _quantized_text_module(getattr(backbone.model, name))
    return dataclasses.replace(backbone, model=model)
