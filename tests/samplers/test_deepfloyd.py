"""The DeepFloyd IF backend on a tiny IF pair built offline: loading through the lab's loader,
the 6-channel model call, T5 prompt embeddings and their on-disk cache, the course's
prompt_embeds_dict.pth, stage-2 upsampling, and failing fast without weights or access."""

from __future__ import annotations

import shutil
import time

import pytest
import torch
import transformers
from diffusers import DDPMScheduler, IFPipeline

import samplers
from samplers.app.backends import Backend, BackendUnavailable, load_backend, register_backend
from samplers.app.backends.deepfloyd import ACCESS_HELP, DeepFloydBackend


def test_loads_as_a_backend(if_backend):
    assert isinstance(if_backend, Backend)
    assert (if_backend.name, if_backend.image_size, if_backend.channels) == ("deepfloyd", 32, 3)
    assert if_backend.dtype == torch.float32 and if_backend.device == torch.device("cpu")
    assert if_backend.timesteps == samplers.strided_timesteps()
    reference = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    torch.testing.assert_close(if_backend.alphas_cumprod, reference.alphas_cumprod)


def test_a_folder_without_fp16_weight_files_loads_in_fp16(tiny_if):
    # fp16 (CUDA's default) asks for IF's fp16 weight files; a folder saved in fp32 has none
    backend = load_backend(
        "deepfloyd",
        model=str(tiny_if.stage1),
        stage2=str(tiny_if.stage2),
        device="cpu",
        dtype=torch.float16,
    )
    assert backend.stage1.unet.dtype == torch.float16
    assert backend.encode(["a photo of a dog"]).dtype == torch.float16  # T5 loads the same way
    assert backend.stage2.unet.dtype == torch.float16


def test_call_is_the_unet_with_eps_and_variance(if_backend):
    x, cond = torch.randn(2, 3, 32, 32), torch.randn(1, 77, 32)
    out = if_backend(x, 500, cond)
    assert out.shape == (2, 6, 32, 32) and out.dtype == torch.float32
    direct = if_backend.stage1.unet(x, 500, encoder_hidden_states=cond.expand(2, -1, -1)).sample
    torch.testing.assert_close(out, direct)
    torch.testing.assert_close(if_backend(x, torch.tensor([500, 500]), cond), direct)


def test_encode_matches_the_pipeline_and_caches_on_disk(
    if_backend, tiny_if, monkeypatch, embedding_cache
):
    prompts = ["a photo of a dog", "", "a photo of a dog"]
    embeds = if_backend.encode(prompts)
    assert embeds.shape == (3, 77, 32) and if_backend.text_encoder_loads == 1
    full = IFPipeline.from_pretrained(
        str(tiny_if.stage1),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
    expected, _ = full.encode_prompt(
        prompts[:2], do_classifier_free_guidance=False, clean_caption=False
    )
    torch.testing.assert_close(embeds[:2], expected)
    assert len(list(embedding_cache.rglob("*.safetensors"))) == 2

    def no_t5(*args, **kwargs):
        raise AssertionError("T5 must not load for cached prompts")

    monkeypatch.setattr(transformers.T5EncoderModel, "from_pretrained", no_t5)
    torch.testing.assert_close(if_backend.encode(["", "a photo of a dog"]), embeds[[1, 0]])
    reloaded = load_backend("deepfloyd", model=str(tiny_if.stage1), stage2=None, device="cpu")
    torch.testing.assert_close(reloaded.encode(["a photo of a dog"]), embeds[:1])
    assert reloaded.cache.prompts() == ["", "a photo of a dog"]
    with pytest.raises(TypeError, match="list of prompts"):
        if_backend.encode("a photo of a dog")


def test_imports_the_course_prompt_dict(if_backend, tmp_path, monkeypatch):
    course = {"a rocket ship": torch.randn(1, 77, 32).half(), "": torch.randn(1, 77, 32).half()}
    torch.save(course, tmp_path / "prompt_embeds_dict.pth")
    imported = if_backend.import_prompt_embeds(tmp_path / "prompt_embeds_dict.pth")
    assert imported == ["a rocket ship", ""]
    monkeypatch.setattr(transformers.T5EncoderModel, "from_pretrained", None)  # fails if called
    got = if_backend.encode(["a rocket ship", ""])
    torch.testing.assert_close(got, torch.cat([course["a rocket ship"], course[""]]).float())

    torch.save({"too wide": torch.zeros(1, 77, 4096)}, tmp_path / "wide.pth")
    with pytest.raises(ValueError, match="width 4096.*expects 32"):
        if_backend.import_prompt_embeds(tmp_path / "wide.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="dict"):
        if_backend.import_prompt_embeds(tmp_path / "list.pth")
    torch.save({"code": DDPMScheduler()}, tmp_path / "pickle.pth")  # weights_only refuses objects
    with pytest.raises(ValueError, match="holds Python objects other than tensors") as refused:
        if_backend.import_prompt_embeds(tmp_path / "pickle.pth")
    assert "\n" not in str(refused.value) and "weights_only" not in str(refused.value)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pth is not a file written by torch.save"):
        if_backend.import_prompt_embeds(tmp_path / "junk.pth")


def test_without_a_text_encoder_new_prompts_ask_for_precomputed_embeddings(tiny_if, tmp_path):
    folder = tmp_path / "IF-I-no-t5"
    shutil.copytree(tiny_if.stage1, folder, ignore=shutil.ignore_patterns("text_encoder"))
    backend = load_backend("deepfloyd", model=str(folder), stage2=None, device="cpu")
    with pytest.raises(BackendUnavailable, match="not in the embedding cache.*prompt_embeds_dict"):
        backend.encode(["a new prompt"])
    torch.save({"a new prompt": torch.zeros(1, 77, 32)}, tmp_path / "embeds.pth")
    backend.import_prompt_embeds(tmp_path / "embeds.pth")
    assert backend.encode(["a new prompt"]).abs().sum() == 0


def test_upsample_through_stage_2(if_backend):
    low = torch.rand(2, 3, 32, 32) * 2 - 1
    prompts = ["a photo of a dog", "a rocket ship"]

    def run(seed=0):
        return if_backend.upsample(
            low, prompts, generator=torch.Generator().manual_seed(seed), num_inference_steps=2
        )

    high = run()
    assert high.shape == (2, 3, 64, 64) and high.isfinite().all()
    torch.testing.assert_close(high, run())
    assert not torch.allclose(high, run(1))
    with pytest.raises(ValueError, match="one prompt per image"):
        if_backend.upsample(low, prompts[:1])


def test_without_stage_2_upsample_is_not_implemented(tiny_if):
    backend = DeepFloydBackend.from_pretrained(str(tiny_if.stage1), stage2=None, device="cpu")
    with pytest.raises(NotImplementedError, match="stage2=None"):
        backend.upsample(torch.zeros(1, 3, 32, 32), [""])


def _fails_fast(limit_s: float, match: str, **kwargs) -> BackendUnavailable:
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match=match) as info:
        load_backend("deepfloyd", device="cpu", **kwargs)
    assert time.monotonic() - start < limit_s
    return info.value


def test_offline_without_weights_fails_fast_with_access_help():
    err = _fails_fast(5.0, "not in the local Hugging Face cache", model="L")
    assert ACCESS_HELP in str(err)
    assert "huggingface.co/DeepFloyd/IF-I-XL-v1.0" in str(err) and "HF_TOKEN" in str(err)


def test_gated_repo_answers_with_access_help(fake_hub):
    fake_hub("gated")
    err = _fails_fast(5.0, "no access to DeepFloyd/IF-I-L-v1.0", model="L")
    assert "hf auth login" in str(err)


def test_hanging_hub_times_out(fake_hub):
    fake_hub("hang")
    err = _fails_fast(
        5.0, "cannot reach the Hugging Face hub .* within 1 s", model="M", probe_timeout=1.0
    )
    assert "DeepFloyd/IF-I-M-v1.0" in str(err) and ACCESS_HELP in str(err)


def test_bad_sources_are_clear(tmp_path):
    _fails_fast(5.0, "neither a local folder nor a hub id", model=str(tmp_path / "missing" / "dir"))
    _fails_fast(5.0, "not a diffusers/transformers model folder", model=str(tmp_path))


def test_the_stages_swapped_are_named(tiny_if):
    _fails_fast(
        10.0,
        r"holds a stage-2 \(super-resolution\) model \(IFSuperResolutionPipeline\); "
        r"a stage-1 one \(IFPipeline\) is needed here",
        model=str(tiny_if.stage2),
    )
    backend = load_backend(
        "deepfloyd", device="cpu", model=str(tiny_if.stage1), stage2=str(tiny_if.stage1)
    )
    with pytest.raises(BackendUnavailable, match="holds a stage-1 model"):
        _ = backend.stage2


def test_registry(monkeypatch):
    with pytest.raises(ValueError, match="unknown backend 'nope'; choose from deepfloyd, mnist"):
        load_backend("nope")
    monkeypatch.setattr("samplers.app.backends._registered", {})
    register_backend("plugin", "no_such_module_for_the_lab:Backend")
    with pytest.raises(BackendUnavailable, match="no_such_module_for_the_lab"):
        load_backend("plugin")
