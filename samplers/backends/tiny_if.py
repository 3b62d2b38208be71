"""A tiny, randomly initialised DeepFloyd IF pair (stage 1 + stage 2) built offline in about a
second, for tests and demos without the gated weights. It has IF's real structure: a T5 encoder
and sentencepiece tokenizer, a UNet with a 6-channel eps + learned-range variance output, IF's
scheduler config, and a super-resolution UNet conditioned on the noise level."""
from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

import torch

WORDS = ("a an the of photo oil painting lithograph pencil drawing snowy mountain village man dog "
         "hipster barista people around campfire old waterfalls skull hat high quality rocket ship "
         "amalfi coast cat astronaut coffee cup house tree sun").split()
SCHEDULER = dict(  # IF-I-XL's scheduler_config.json
    num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range",
    prediction_type="epsilon", thresholding=True, dynamic_thresholding_ratio=0.95,
    sample_max_value=1.5, clip_sample=True)


@dataclass(frozen=True)
class TinyIF:
    stage1: Path  # a diffusers IFPipeline folder (with text encoder and tokenizer)
    stage2: Path  # a diffusers IFSuperResolutionPipeline folder


def _tokenizer(folder: Path, seed: int):
    """A T5Tokenizer from a sentencepiece unigram model trained on a small generated corpus."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    rng = random.Random(seed)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(400)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=96, hard_vocab_limit=False,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>",
        eos_piece="</s>", unk_piece="<unk>", minloglevel=2)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(model.getvalue())
    return T5Tokenizer.from_pretrained(folder, extra_ids=0)


def _unet(sample_size: int, in_channels: int, dim: int, **extra):
    """IF's UNet layout (ResNet down/up blocks, simple cross-attention, text addition embedding)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=6, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        cross_attention_dim=dim, encoder_hid_dim=dim, attention_head_dim=8,
        addition_embed_type="text", addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift", act_fn="gelu",
        **extra)


def build_tiny_if(folder: str | Path, *, image_size: int = 32, embed_dim: int = 32,
                  seed: int = 0) -> TinyIF:
    """Save a tiny stage 1 (`image_size` pixels, T5 width `embed_dim`) and stage 2 (2x) under
    `folder`; returns their paths. Deterministic for a given `seed`."""
    from diffusers import DDPMScheduler, IFPipeline, IFSuperResolutionPipeline
    from transformers import T5Config, T5EncoderModel

    folder = Path(folder)
    tokenizer = _tokenizer(folder / "sentencepiece", seed)
    with torch.random.fork_rng():  # seeded weights; the caller's RNG is left alone
        torch.manual_seed(seed)
        encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=embed_dim, d_kv=8,
                                          d_ff=64, num_layers=2, num_heads=4)).eval()
        shared = dict(tokenizer=tokenizer, text_encoder=encoder, safety_checker=None,
                      feature_extractor=None, watermarker=None, requires_safety_checker=False)
        IFPipeline(unet=_unet(image_size, 3, embed_dim), scheduler=DDPMScheduler(**SCHEDULER),
                   **shared).save_pretrained(folder / "IF-I")
        IFSuperResolutionPipeline(
            unet=_unet(2 * image_size, 6, embed_dim, class_embed_type="timestep",
                       mid_block_scale_factor=1.414, time_embedding_act_fn="gelu"),
            scheduler=DDPMScheduler(**SCHEDULER),
            image_noising_scheduler=DDPMScheduler(num_train_timesteps=1000,
                                                  beta_schedule="squaredcos_cap_v2"),
            **shared).save_pretrained(folder / "IF-II")
    return TinyIF(folder / "IF-I", folder / "IF-II")
