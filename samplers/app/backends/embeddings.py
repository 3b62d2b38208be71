"""On-disk cache of prompt embeddings, so the big T5 text encoder loads only for new prompts.

Layout: `<root>/<namespace>/<sha256(prompt)[:32]>.safetensors`, one (77, D) tensor under "embeds"
with the prompt itself in the file's metadata. The namespace names the text encoder.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from ..files import atomic_path


def default_cache_root() -> Path:
    """$DIFFUSION_LAB_CACHE, else $XDG_CACHE_HOME/diffusion-lab, else ~/.cache/diffusion-lab;
    embeddings go under its `prompt-embeds/`."""
    env = os.environ.get("DIFFUSION_LAB_CACHE")
    if env:
        return Path(env) / "prompt-embeds"
    xdg = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return xdg / "diffusion-lab" / "prompt-embeds"


def slug(text: str) -> str:
    """A file-name-safe version of `text` (model ids, paths)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", text).strip("-.") or "default"


@dataclass(frozen=True)
class EmbeddingCache:
    """Prompt -> (77, D) embedding files for one text encoder (`namespace`)."""

    root: Path
    namespace: str

    @property
    def folder(self) -> Path:
        return Path(self.root) / slug(self.namespace)

    def path(self, prompt: str) -> Path:
        return self.folder / f"{hashlib.sha256(prompt.encode()).hexdigest()[:32]}.safetensors"

    def get(self, prompt: str) -> Tensor | None:
        """The cached (77, D) embedding (CPU, stored dtype), or None if absent or unreadable."""
        path = self.path(prompt)
        try:
            with safe_open(str(path), framework="pt") as f:
                if f.metadata().get("prompt") != prompt:
                    return None
            return load_file(str(path))["embeds"]
        except (FileNotFoundError, SafetensorError, KeyError, OSError):
            return None

    def put(self, prompt: str, embeds: Tensor) -> None:
        """Store one embedding, (77, D) or (1, 77, D); written atomically."""
        if embeds.dim() == 3 and embeds.shape[0] == 1:
            embeds = embeds[0]
        if embeds.dim() != 2:
            raise ValueError(
                f"a prompt embedding must be (77, D) or (1, 77, D), got {tuple(embeds.shape)}"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path(prompt)) as tmp:
            save_file(
                {"embeds": embeds.detach().cpu().contiguous()},
                str(tmp),
                metadata={"prompt": prompt},
            )

    def prompts(self) -> list[str]:
        """Every cached prompt, sorted."""
        found = []
        for path in self.folder.glob("*.safetensors"):
            try:
                with safe_open(str(path), framework="pt") as f:
                    found.append(f.metadata()["prompt"])
            except (SafetensorError, KeyError, OSError, TypeError):
                continue
        return sorted(found)


def read_prompt_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The course's `prompt_embeds_dict.pth` (prompt -> [1, 77, 4096] fp16), loaded with
    weights_only=True. Raises ValueError when the file is not such a dict."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (
        pickle.UnpicklingError
    ) as err:  # objects weights_only refuses: loading them could run code
        raise ValueError(
            f"{path} holds Python objects other than tensors, strings and numbers; "
            f"the lab refuses to load it (that could run code in the file)"
        ) from err
    except Exception as err:  # torch raises many types for a file that is not a torch.save
        raise ValueError(
            f"{path} is not a file written by torch.save "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    if not isinstance(data, dict) or not data:
        raise ValueError(
            f"{path} must hold a non-empty dict prompt -> tensor, got {type(data).__name__}"
        )
    for prompt, emb in data.items():
        if not isinstance(prompt, str) or not isinstance(emb, Tensor) or emb.dim() not in (2, 3):
            raise ValueError(f"{path}: entry {prompt!r} is not a prompt -> (1, 77, D) tensor")
    return data
