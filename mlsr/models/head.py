"""The dense-to-sparse (D2S) head: maps a dense image/text embedding onto weighted vocabulary terms.

Compatible with the checkpoints of Nguyen et al., "Multimodal Learned Sparse Retrieval with
Probabilistic Expansion Control" (ECIR 2024), published as `lsr42/d2s_*` on the Hugging Face Hub.
The head is built from the tensor shapes alone: loading needs no DistilBERT download and no remote code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mlsr.errors import ModelLoadError
from mlsr.models.hub import resolve
from mlsr._files import atomic_path, atomic_write_json
from mlsr.settings import DEFAULT_HEAD

CONFIG_FILE = "config.json"
_WEIGHTS_FILE = "model.safetensors"
_LEGACY_WEIGHTS_FILE = "pytorch_model.bin"  # what transformers v4 wrote by default
_MODEL_TYPE = "d2s"
_WEIGHT_NAMES = (
    "proj.weight",
    "proj.bias",
    "vocab_layer_norm.weight",
    "vocab_layer_norm.bias",
    "vocab_projector.weight",
    "vocab_projector.bias",
)


@dataclass(frozen=True)
class HeadConfig:
    """Sizes of a D2S head; `mlm_head` names the masked-LM whose vocabulary layers initialised it."""

    dense_size: int = 256
    hidden_size: int = 768
    vocab_size: int = 30522
    mlm_head: str = "distilbert-base-uncased"
    layer_norm_eps: float = 1e-12  # DistilBERT's vocab_layer_norm


class SparseHead(nn.Module):
    """w = log1p(ReLU(vocab_projector(LayerNorm(proj(x))))), a (B, vocab) tensor of term weights.

    Given `input_ids`, the weights are masked to those ids: the no-expansion variant, where a text
    may only light up its own tokens (the seed paper's MLP-style query).
    """

    def __init__(self, config: HeadConfig | None = None) -> None:
        super().__init__()
        self.config = config or HeadConfig()
        self.proj = nn.Linear(self.config.dense_size, self.config.hidden_size)
        self.vocab_layer_norm = nn.LayerNorm(self.config.hidden_size, eps=self.config.layer_norm_eps)
        self.vocab_projector = nn.Linear(self.config.hidden_size, self.config.vocab_size)
        self.source: str | None = None
        self.revision: str | None = None

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def forward(
        self,
        dense: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, dense_size) -> (B, vocab_size) non-negative term weights, masked when ids are given."""
        hidden = self.vocab_layer_norm(self.proj(dense))
        weights = torch.log1p(torch.relu(self.vocab_projector(hidden)))
        if input_ids is not None:
            weights = weights * token_mask(input_ids, attention_mask, self.config.vocab_size).to(weights)
        return weights

    def fingerprint(self) -> str:
        """A short hash of the weights: an index records it and refuses a head with other weights.

        Kept until a weight changes (each tensor's storage and in-place version counter are the key), so that
        checking an index against the encoder at every search costs nothing after the first (~0.1 s at 95 MB).
        """
        state = sorted(self.state_dict().items())
        key = tuple((tensor.data_ptr(), tensor._version) for _, tensor in state)
        cached = self.__dict__.get("_fingerprint")
        if cached is not None and cached[0] == key:
            return cached[1]
        digest = hashlib.sha256()
        for name, tensor in state:
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        self.__dict__["_fingerprint"] = (key, digest.hexdigest()[:16])
        return self.__dict__["_fingerprint"][1]

    def save_pretrained(self, folder: str | Path) -> None:
        """Write `config.json` and `model.safetensors`, readable by `from_pretrained` and the reference code."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"model_type": _MODEL_TYPE, "architectures": ["D2SModel"], **asdict(self.config)}
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in self.state_dict().items()}
        with atomic_path(folder / _WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
        atomic_write_json(folder / CONFIG_FILE, config)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DEFAULT_HEAD, *, revision: str | None = None) -> SparseHead:
        """Load a head from a Hub repo id or a local folder (`model.safetensors` or a v4 `pytorch_model.bin`)."""
        source = resolve(
            name_or_path, [CONFIG_FILE, _WEIGHTS_FILE, _LEGACY_WEIGHTS_FILE], revision=revision, what="sparse head"
        )
        config_path = source.folder / CONFIG_FILE
        if not config_path.is_file():
            raise ModelLoadError(f"sparse head {source.name!r} has no {CONFIG_FILE} in {source.folder}.")
        raw = json.loads(config_path.read_text())
        if raw.get("model_type") != _MODEL_TYPE:
            raise ModelLoadError(
                f"{source.name!r} is not a D2S sparse head: its config says model_type="
                f"{raw.get('model_type')!r}, expected {_MODEL_TYPE!r}."
            )
        state = _read_weights(source.folder, source.name)
        config = _config_from_shapes(raw, state, source.name)
        head = cls(config)
        head.load_state_dict({name: state[name] for name in _WEIGHT_NAMES})
        head.eval()
        head.source, head.revision = source.name, source.revision
        return head


def token_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, vocab_size: int) -> torch.Tensor:
    """(B, L) token ids -> (B, vocab_size) float mask, 1 where a row's attended tokens occur."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    mask = torch.zeros(input_ids.shape[0], vocab_size, dtype=torch.float32, device=input_ids.device)
    return mask.scatter_(1, input_ids.long(), attention_mask.float()).clamp_(max=1.0)


def _read_weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    safetensors_path = folder / _WEIGHTS_FILE
    legacy_path = folder / _LEGACY_WEIGHTS_FILE
    try:
        if safetensors_path.is_file():
            state = load_file(str(safetensors_path))
        elif legacy_path.is_file():
            # weights_only=True: a .bin is a pickle, and only plain tensors may come out of it.
            state = torch.load(legacy_path, map_location="cpu", weights_only=True)
        else:
            raise ModelLoadError(
                f"sparse head {name!r} has neither {_WEIGHTS_FILE} nor {_LEGACY_WEIGHTS_FILE} in {folder}."
            )
    except ModelLoadError:
        raise
    except Exception as error:  # safetensors and torch raise several types for a damaged file
        raise ModelLoadError(f"sparse head {name!r}: cannot read its weights ({error}).") from None
    missing = [key for key in _WEIGHT_NAMES if key not in state]
    if missing:
        raise ModelLoadError(f"sparse head {name!r} lacks the weights {missing}; found {sorted(state)[:10]}.")
    return {key: state[key].float() for key in _WEIGHT_NAMES}


def _config_from_shapes(raw: dict, state: dict[str, torch.Tensor], name: str) -> HeadConfig:
    hidden_size, dense_size = state["proj.weight"].shape
    vocab_size, projector_in = state["vocab_projector.weight"].shape
    declared = raw.get("dense_size", dense_size)
    if declared != dense_size or projector_in != hidden_size:
        raise ModelLoadError(
            f"sparse head {name!r}: weight shapes disagree with each other or with config.json"
            f" (dense_size {declared} vs proj {tuple(state['proj.weight'].shape)},"
            f" vocab_projector {tuple(state['vocab_projector.weight'].shape)})."
        )
    return HeadConfig(
        dense_size=int(dense_size),
        hidden_size=int(hidden_size),
        vocab_size=int(vocab_size),
        mlm_head=str(raw.get("mlm_head", HeadConfig.mlm_head)),
        layer_norm_eps=float(raw.get("layer_norm_eps", HeadConfig.layer_norm_eps)),
    )
