"""DeepFloyd IF as a sampling backend: stage 1 (64 x 64 pixels, 6-channel eps + variance output),
stage 2 super-resolution (64 -> 256), and T5 prompt embeddings through an on-disk cache.

Loading never hangs: a local folder is used as is; a hub id is tried from the local HF cache
first, then (unless HF_HUB_OFFLINE) one metadata request with a short timeout checks access before
any download. Every failure raises `BackendUnavailable` with what to do.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from samplers.schedules import strided_timesteps

from .. import images as image_io
from ..devices import resolve_device
from .base import BackendUnavailable
from .embeddings import EmbeddingCache, default_cache_root, read_prompt_dict

STAGE1_MODELS = {size: f"DeepFloyd/IF-I-{size}-v1.0" for size in ("XL", "L", "M")}
DEFAULT_STAGE1 = STAGE1_MODELS["L"]  # what the course's starter notebook loads
DEFAULT_STAGE2 = "DeepFloyd/IF-II-L-v1.0"
IF_TEXT_ENCODER = "deepfloyd-if-t5-v1_1-xxl"  # every DeepFloyd IF repo ships this same T5
ACCESS_HELP = (
    "DeepFloyd IF weights are gated on the Hugging Face hub. To use them: (1) accept the licence "
    "at https://huggingface.co/DeepFloyd/IF-I-XL-v1.0 (it covers all IF models) while logged in; "
    "(2) run `hf auth login` or set HF_TOKEN to a token of that account; (3) run with "
    "network access (not HF_HUB_OFFLINE=1) once to download. Or pass a local folder saved with "
    "`save_pretrained` (--model-dir DIR; in the dashboard, DIFFUSION_LAB_IF_MODEL=DIR)."
)


def _probe_access(repo_id: str, timeout: float) -> None:
    """One HEAD request for `model_index.json`; BackendUnavailable on any refusal or error."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    url = hf_hub_url(repo_id, "model_index.json", endpoint=os.environ.get("HF_ENDPOINT"))
    try:
        get_hf_file_metadata(url, timeout=timeout)  # token: HF_TOKEN or `hf auth login`
    except GatedRepoError as err:
        raise BackendUnavailable(f"no access to {repo_id} (gated). {ACCESS_HELP}") from err
    except RepositoryNotFoundError as err:
        raise BackendUnavailable(
            f"{repo_id} not found, or gated and no token given. {ACCESS_HELP}"
        ) from err
    except Exception as err:  # network errors come as several httpx/OS types
        raise BackendUnavailable(
            f"cannot reach the Hugging Face hub for {repo_id} within {timeout:g} s "
            f"({type(err).__name__}: {err}). {ACCESS_HELP}"
        ) from err


def _load(pipeline_cls, source: str, probe_timeout: float, **kwargs):
    """`pipeline_cls.from_pretrained(source, **kwargs)` that fails fast with BackendUnavailable.

    `source`: a local folder (used as is) or a hub repo id (local HF cache first, then an access
    probe of at most `probe_timeout` seconds, then the download).
    """
    folder = Path(source).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file() and not (folder / "config.json").is_file():
            raise BackendUnavailable(
                f"{folder} is not a diffusers/transformers model folder "
                "(no model_index.json or config.json)"
            )
        _check_pipeline_class(folder, pipeline_cls)
        if "variant" in kwargs and not _has_variant(
            folder / kwargs.get("subfolder", ""), kwargs["variant"]
        ):
            # e.g. a folder saved in fp32 only: load those weights and cast them to `dtype`
            kwargs = {k: v for k, v in kwargs.items() if k != "variant"}
        try:
            return pipeline_cls.from_pretrained(str(folder), **kwargs)
        except OSError as err:
            raise BackendUnavailable(
                f"cannot load {pipeline_cls.__name__} from {folder}: {err}"
            ) from err
    if source.count("/") != 1 or source.startswith((".", "/", "~")):
        raise BackendUnavailable(
            f"{source!r} is neither a local folder nor a hub id like {DEFAULT_STAGE1!r}"
        )
    try:
        return pipeline_cls.from_pretrained(source, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass  # not (fully) in the local cache
    from huggingface_hub import is_offline_mode

    if is_offline_mode():
        raise BackendUnavailable(
            f"{source} is not in the local Hugging Face cache and "
            f"HF_HUB_OFFLINE is set. {ACCESS_HELP}"
        )
    _probe_access(source, probe_timeout)
    try:
        return pipeline_cls.from_pretrained(source, **kwargs)
    except OSError as err:
        raise BackendUnavailable(f"downloading {source} failed: {err}. {ACCESS_HELP}") from err


def _has_variant(folder: Path, variant: str) -> bool:
    """Whether a saved model folder holds weight files of `variant` (name.fp16.safetensors, or
    name.fp16-00001-of-00002.safetensors when sharded), in any subfolder."""
    marks = (f".{variant}.", f".{variant}-")
    return any(mark in f.name for f in folder.rglob("*") for mark in marks)


def _check_pipeline_class(folder: Path, pipeline_cls) -> None:
    """BackendUnavailable when `pipeline_cls` is a diffusers pipeline and folder's model_index.json
    names another (a stage-2 folder given as stage 1, or the other way round)."""
    from diffusers import DiffusionPipeline

    if not issubclass(pipeline_cls, DiffusionPipeline):
        return
    expected = pipeline_cls.__name__
    try:
        found = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return  # no readable index: diffusers says what is wrong
    stages = {"IFPipeline": "stage-1", "IFSuperResolutionPipeline": "stage-2 (super-resolution)"}
    if found and found != expected:
        raise BackendUnavailable(
            f"{folder} holds a {stages.get(found, found)} model ({found}); "
            f"a {stages.get(expected, expected)} one ({expected}) is needed here"
        )


def _namespace(source: str) -> str:
    """The embedding-cache namespace: shared by all DeepFloyd IF hub models (one T5), else the
    model folder's absolute path."""
    if source.startswith("DeepFloyd/IF-"):
        return IF_TEXT_ENCODER
    return str(Path(source).expanduser().resolve())


class DeepFloydBackend:
    """The Backend protocol on DeepFloyd IF; build it with `DeepFloydBackend.from_pretrained`."""

    name = "deepfloyd"
    default_prompt = "a high quality photo"  # the course's weak ("null") condition
    prompts = None
    default_guidance_scale = 7.0

    def __init__(
        self,
        stage1,
        source: str,
        *,
        stage2_source: str | None,
        device: torch.device,
        dtype: torch.dtype,
        cache: EmbeddingCache,
        probe_timeout: float,
        cpu_offload: bool,
    ) -> None:
        self.stage1 = stage1
        self.source = source
        self.stage2_source = stage2_source
        self.device = device
        self.dtype = dtype
        self.cache = cache
        self.probe_timeout = probe_timeout
        self.cpu_offload = cpu_offload
        self._stage2 = None
        unet = stage1.unet
        self.image_size: int = unet.config.sample_size
        self.channels: int = unet.config.in_channels
        self.embed_dim: int = unet.config.encoder_hid_dim or unet.config.cross_attention_dim
        self.alphas_cumprod: Tensor = stage1.scheduler.alphas_cumprod.float().to(device)
        self.timesteps: list[int] = strided_timesteps()
        self.text_encoder_loads = 0  # how often T5 was loaded (cache misses)

    @property
    def can_upsample(self) -> bool:
        return self.stage2_source is not None

    @classmethod
    def from_pretrained(
        cls,
        model: str = DEFAULT_STAGE1,
        *,
        stage2: str | None = DEFAULT_STAGE2,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        cache_dir: str | os.PathLike | None = None,
        cpu_offload: bool = False,
        probe_timeout: float = 5.0,
    ) -> DeepFloydBackend:
        """Load stage 1 without its text encoder.

        `model`: "XL" | "L" | "M", a hub id, or a local folder; `stage2`: hub id or local folder
        of the super-resolution stage, loaded on the first `upsample` (None: no upsampling).
        `dtype`: default float16 (fp16 weights) on CUDA, float32 elsewhere. `cpu_offload` keeps
        each model on the CPU until used (CUDA only). `cache_dir`: embedding cache root.
        """
        from diffusers import IFPipeline

        device = resolve_device(device)
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        source = STAGE1_MODELS.get(model, model)
        stage1 = _load(IFPipeline, source, probe_timeout, **cls._pipeline_kwargs(dtype))
        cls._place(stage1, device, cpu_offload)
        root = Path(cache_dir) if cache_dir is not None else default_cache_root()
        return cls(
            stage1,
            source,
            stage2_source=stage2,
            device=device,
            dtype=dtype,
            cache=EmbeddingCache(root, _namespace(source)),
            probe_timeout=probe_timeout,
            cpu_offload=cpu_offload,
        )

    @staticmethod
    def _pipeline_kwargs(dtype: torch.dtype) -> dict:
        """No text encoder (cached embeddings instead), no safety checker or watermarker (the lab
        returns tensors); fp16 weight files when computing in fp16."""
        kwargs = dict(
            text_encoder=None,
            safety_checker=None,
            feature_extractor=None,
            watermarker=None,
            requires_safety_checker=False,
            dtype=dtype,
        )
        if dtype == torch.float16:
            kwargs["variant"] = "fp16"
        return kwargs

    @staticmethod
    def _place(pipe, device: torch.device, cpu_offload: bool) -> None:
        pipe.set_progress_bar_config(disable=True)
        if cpu_offload and device.type == "cuda":
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)

    # -- the model ----------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, x: Tensor, t: int | Tensor, cond: Tensor | None) -> Tensor:
        """x (B, 3, H, W), t int or (B,), cond (1|B, 77, D) (None = the "" prompt) ->
        (B, 6, H, W): eps and the learned-range variance values, in x's dtype."""
        cond = self.encode([""]) if cond is None else cond
        if cond.shape[0] == 1 and x.shape[0] > 1:
            cond = cond.expand(x.shape[0], -1, -1)
        t = torch.as_tensor(t, device=self.device)
        out = self.stage1.unet(
            x.to(self.device, self.dtype),
            t,
            return_dict=False,
            encoder_hidden_states=cond.to(self.device, self.dtype),
        )[0]
        return out.to(x.dtype)

    def example_images(self) -> dict[str, Tensor]:
        examples = image_io.example_images(self.image_size, self.channels)
        return {name: x.to(self.device) for name, x in examples.items()}

    # -- prompts ------------------------------------------------------------------------------
    def encode(self, prompts: Sequence[str]) -> Tensor:
        """Prompts -> (B, 77, D) in `dtype` on `device` ("" = the null prompt). T5 is loaded only
        for prompts missing from the cache, and freed right after."""
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts, not a single string")
        missing = [p for p in dict.fromkeys(prompts) if self.cache.get(p) is None]
        if missing:
            for prompt, emb in zip(missing, self._run_text_encoder(missing), strict=False):
                self.cache.put(prompt, emb)
        embeds = [self.cache.get(p) for p in prompts]
        return torch.stack(embeds).to(self.device, self.dtype)

    def _run_text_encoder(self, prompts: list[str]) -> Tensor:
        from diffusers import IFPipeline
        from transformers import T5EncoderModel

        self.text_encoder_loads += 1
        kwargs = {"variant": "fp16"} if self.dtype == torch.float16 else {}
        try:
            encoder = _load(
                T5EncoderModel,
                self.source,
                self.probe_timeout,
                subfolder="text_encoder",
                dtype=self.dtype,
                **kwargs,
            )
        except BackendUnavailable as err:
            raise BackendUnavailable(
                f"prompts {prompts} are not in the embedding cache and the T5 text encoder cannot "
                f"load ({err}). Import precomputed embeddings, e.g. the course's "
                "prompt_embeds_dict.pth (import_prompt_embeds / --import-embeds)."
            ) from err
        try:
            encoder.to(self.device).eval()
            pipe = IFPipeline(
                tokenizer=self.stage1.tokenizer,
                text_encoder=encoder,
                unet=None,
                scheduler=self.stage1.scheduler,
                safety_checker=None,
                feature_extractor=None,
                watermarker=None,
                requires_safety_checker=False,
            )
            embeds, _ = pipe.encode_prompt(
                prompts, do_classifier_free_guidance=False, device=self.device, clean_caption=False
            )
            return embeds.cpu()
        finally:
            del encoder
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def import_prompt_embeds(self, path: str | os.PathLike) -> list[str]:
        """Add the course's `prompt_embeds_dict.pth` (prompt -> [1, 77, D]) to the cache; returns
        the prompts. Raises ValueError for a wrong embedding width."""
        data = read_prompt_dict(path)
        for prompt, emb in data.items():
            if emb.shape[-1] != self.embed_dim:
                raise ValueError(
                    f"{path}: {prompt!r} has width {emb.shape[-1]}, this model "
                    f"expects {self.embed_dim}"
                )
            self.cache.put(prompt, emb)
        return list(data)

    # -- stage 2 ------------------------------------------------------------------------------
    @property
    def stage2(self):
        """The super-resolution pipeline, loaded on first use."""
        if self._stage2 is None:
            if self.stage2_source is None:
                raise NotImplementedError("this DeepFloyd backend was loaded with stage2=None")
            from diffusers import IFSuperResolutionPipeline

            self._stage2 = _load(
                IFSuperResolutionPipeline,
                self.stage2_source,
                self.probe_timeout,
                **self._pipeline_kwargs(self.dtype),
            )
            self._place(self._stage2, self.device, self.cpu_offload)
        return self._stage2

    @torch.no_grad()
    def upsample(
        self,
        images: Tensor,
        prompts: Sequence[str],
        *,
        generator: torch.Generator | None = None,
        num_inference_steps: int = 30,
        guidance_scale: float = 4.0,
        noise_level: int = 250,
    ) -> Tensor:
        """Stage 2 as the course's `upsample`: (B, 3, 64, 64) in [-1, 1] + B prompts ->
        (B, 3, 256, 256) in [-1, 1], with CFG against the "" prompt."""
        if len(prompts) != images.shape[0]:
            raise ValueError(
                f"upsample needs one prompt per image: {images.shape[0]} images, "
                f"{len(prompts)} prompts"
            )
        out = self.stage2(
            image=images.to(self.device, self.dtype),
            prompt_embeds=self.encode(prompts),
            negative_prompt_embeds=self.encode([""] * len(prompts)),
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            noise_level=noise_level,
            generator=generator,
            output_type="pt",
        ).images
        return out.float().clamp(-1, 1)
