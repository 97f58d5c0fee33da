"""Stable Diffusion 2.x from a diffusers folder (``diffusers_layout``): the key conversion checked on synthetic
diffusers key sets (written here independently, in the other direction), the routing through ``load_model`` and
``-m A,B,C``, and parity with diffusers itself (UNet, VAE, the pipeline's prompt encoding) when it is installed.

diffusers and transformers are in the ``test`` extra (about 190 MB; neither pulls torchvision); without them the
parity tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import diffir
from diffir.archs import architecture
from diffir.archs.diffbir.diffusers_keys import text_to_openclip, unet_to_ldm, vae_to_ldm
from diffir.archs.diffbir.diffusers_layout import is_diffusers_folder, read_diffusers_folder, schedule_buffers
from diffir.archs.diffbir.ldm import split_sd_state_dict
from diffir.archs.diffbir.text import TextEncoder, infer_text_config
from diffir.errors import CheckpointError
from diffir.io.checkpoint import read_checkpoint
from diffir.io.locate import locate_model

TOL = 1e-4
SCHEDULER = {"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "num_train_timesteps": 1000, "prediction_type": "epsilon", "rescale_betas_zero_snr": False,
             "trained_betas": None}


# --------------------------------------------------------------------------- SD layout → diffusers (test side)
_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj", "out_layers.0": "norm2",
           "out_layers.3": "conv2", "skip_connection": "conv_shortcut", "nin_shortcut": "conv_shortcut"}


def _rename(sd: dict, blocks: dict[str, str], inner) -> dict:
    """Each key's longest prefix found in ``blocks`` replaced; ``inner(new_block, rest)`` renames the rest."""
    out = {}
    for key, tensor in sd.items():
        parts = key.split(".")
        for cut in range(len(parts), 0, -1):
            head = ".".join(parts[:cut])
            if head in blocks:
                rest, value = inner(blocks[head], ".".join(parts[cut:]), tensor)
                out[f"{blocks[head]}.{rest}"] = value
                break
        else:
            raise KeyError(key)
    return out


def _resnet_rest(block: str, rest: str, tensor: torch.Tensor):
    if ".resnets." in block:
        name, _, kind = rest.rpartition(".")
        return f"{_RESNET.get(name, name)}.{kind}", tensor
    return rest, tensor


def unet_to_diffusers(sd: dict, levels: int, n: int) -> dict:
    """LDM UNet keys → diffusers ``UNet2DConditionModel`` keys, for a UNet with attention at every level."""
    blocks = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
              "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out",
              "middle_block.0": "mid_block.resnets.0", "middle_block.1": "mid_block.attentions.0",
              "middle_block.2": "mid_block.resnets.1"}
    k = 1
    for level in range(levels):
        for j in range(n):
            blocks[f"input_blocks.{k}.0"] = f"down_blocks.{level}.resnets.{j}"
            blocks[f"input_blocks.{k}.1"] = f"down_blocks.{level}.attentions.{j}"
            k += 1
        if level < levels - 1:
            blocks[f"input_blocks.{k}.0.op"] = f"down_blocks.{level}.downsamplers.0.conv"
            k += 1
    k = 0
    for up in range(levels):
        for j in range(n + 1):
            blocks[f"output_blocks.{k}.0"] = f"up_blocks.{up}.resnets.{j}"
            blocks[f"output_blocks.{k}.1"] = f"up_blocks.{up}.attentions.{j}"
            k += 1
        if up < levels - 1:
            blocks[f"output_blocks.{k - 1}.2.conv"] = f"up_blocks.{up}.upsamplers.0.conv"
    return _rename(sd, blocks, _resnet_rest)


def vae_to_diffusers(sd: dict, levels: int, n: int, old_names: bool = False) -> dict:
    """LDM VAE keys → diffusers ``AutoencoderKL`` keys; attention projections as Linear (C, C) weights, named
    ``to_q``/``to_out.0`` (diffusers ≥ 0.14) or ``query``/``proj_attn`` (older saves)."""
    blocks = {"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"}
    for part in ("encoder", "decoder"):
        blocks.update({f"{part}.conv_in": f"{part}.conv_in", f"{part}.norm_out": f"{part}.conv_norm_out",
                       f"{part}.conv_out": f"{part}.conv_out", f"{part}.mid.block_1": f"{part}.mid_block.resnets.0",
                       f"{part}.mid.attn_1": f"{part}.mid_block.attentions.0",
                       f"{part}.mid.block_2": f"{part}.mid_block.resnets.1"})
    for i in range(levels):
        for j in range(n):
            blocks[f"encoder.down.{i}.block.{j}"] = f"encoder.down_blocks.{i}.resnets.{j}"
        blocks[f"encoder.down.{i}.downsample.conv"] = f"encoder.down_blocks.{i}.downsamplers.0.conv"
        for j in range(n + 1):
            blocks[f"decoder.up.{i}.block.{j}"] = f"decoder.up_blocks.{levels - 1 - i}.resnets.{j}"
        blocks[f"decoder.up.{i}.upsample.conv"] = f"decoder.up_blocks.{levels - 1 - i}.upsamplers.0.conv"
    names = ({"norm": "group_norm", "q": "query", "k": "key", "v": "value", "proj_out": "proj_attn"} if old_names else
             {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"})

    def inner(block: str, rest: str, tensor: torch.Tensor):
        if ".attentions." in block:
            name, _, kind = rest.rpartition(".")
            if name != "norm" and kind == "weight":
                tensor = tensor.reshape(tensor.shape[:2])
            return f"{names[name]}.{kind}", tensor
        return _resnet_rest(block, rest, tensor)

    return _rename(sd, blocks, inner)


def text_to_hf(sd: dict, prefix: str = "text_model.") -> dict:
    """OpenCLIP text keys (``model.*``) → a Hugging Face ``CLIPTextModel``'s (q/k/v split; no projection)."""
    out = {f"{prefix}embeddings.position_ids": torch.arange(77)[None]}
    names = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
             "attn.out_proj": "self_attn.out_proj"}
    for key, tensor in sd.items():
        if key in ("model.text_projection", "model.logit_scale"):
            continue
        if key == "model.positional_embedding":
            out[f"{prefix}embeddings.position_embedding.weight"] = tensor
        elif key == "model.token_embedding.weight":
            out[f"{prefix}embeddings.token_embedding.weight"] = tensor
        elif key.startswith("model.ln_final."):
            out[f"{prefix}final_layer_norm.{key.rsplit('.', 1)[1]}"] = tensor
        else:
            block, rest = key[len("model.transformer.resblocks."):].split(".", 1)
            layer = f"{prefix}encoder.layers.{block}."
            if rest.startswith("attn.in_proj_"):
                for p, chunk in zip("qkv", tensor.chunk(3), strict=True):
                    out[f"{layer}self_attn.{p}_proj.{rest.rsplit('_', 1)[1]}"] = chunk
            else:
                name, _, kind = rest.rpartition(".")
                out[f"{layer}{names[name]}.{kind}"] = tensor
    return out


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = diffir.create_model("diffbir_tiny_s2").eval()
    with torch.no_grad():  # no zero-initialised layer left: every key must land in its own place
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def official(tiny, tmp_path_factory) -> Path:
    """The tiny pipeline as released files: sd.ckpt, controlnet.pth, swinir.pth."""
    return diffir.save_model(tiny, tmp_path_factory.mktemp("official") / "files", official=True)


def _sd_parts(tiny):
    return split_sd_state_dict(architecture("diffbir").official_files(tiny)["sd"])


def write_folder(tiny, folder: Path, scheduler: dict | None = None, old_vae_names: bool = False) -> Path:
    """A diffusers-layout folder of the tiny pipeline's SD part, written without diffusers (VAE as a ``.bin``)."""
    parts = _sd_parts(tiny)
    unet, vae = tiny.cldm.unet.config, tiny.cldm.vae.config
    for sub in ("unet", "vae", "text_encoder", "scheduler", "tokenizer"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    save_file({k: v.contiguous() for k, v in unet_to_diffusers(parts.unet, len(unet.channel_mult),
                                                               unet.num_res_blocks).items()},
              folder / "unet" / "diffusion_pytorch_model.safetensors")
    widths = [unet.model_channels * m for m in unet.channel_mult]
    (folder / "unet" / "config.json").write_text(json.dumps({
        "block_out_channels": widths, "attention_head_dim": [w // 64 for w in widths], "layers_per_block": 1,
        "cross_attention_dim": unet.context_dim, "use_linear_projection": True, "flip_sin_to_cos": True,
        "freq_shift": 0}))
    torch.save(vae_to_diffusers(parts.vae, len(vae.ch_mult), vae.num_res_blocks, old_vae_names),
               folder / "vae" / "diffusion_pytorch_model.bin")
    (folder / "vae" / "config.json").write_text(json.dumps({"scaling_factor": 0.18215}))
    save_file(text_to_hf(parts.text), folder / "text_encoder" / "model.safetensors")
    (folder / "text_encoder" / "config.json").write_text(json.dumps({
        "hidden_size": 64, "num_attention_heads": 1, "hidden_act": "gelu", "layer_norm_eps": 1e-5}))
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler or SCHEDULER))
    return folder


@pytest.fixture(scope="module")
def folder(tiny, tmp_path_factory) -> Path:
    return write_folder(tiny, tmp_path_factory.mktemp("diffusers") / "sd21")


def _variant(folder: Path, tmp_path: Path, edit) -> Path:
    copy = shutil.copytree(folder, tmp_path / "variant")
    edit(copy)
    return copy


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# ------------------------------------------------------------------------------------- the mapping, synthetic
def test_unet_and_vae_keys_map_back_exactly(tiny) -> None:
    parts = _sd_parts(tiny)
    unet, vae = tiny.cldm.unet.config, tiny.cldm.vae.config
    back = unet_to_ldm(unet_to_diffusers(parts.unet, len(unet.channel_mult), unet.num_res_blocks))
    assert back.keys() == parts.unet.keys()
    assert all(torch.equal(back[k], parts.unet[k]) for k in back)
    for old_names in (False, True):
        hf = vae_to_diffusers(parts.vae, len(vae.ch_mult), vae.num_res_blocks, old_names)
        assert hf["encoder.mid_block.attentions.0.group_norm.weight"].ndim == 1
        assert hf[f"decoder.mid_block.attentions.0.{'query' if old_names else 'to_q'}.weight"].ndim == 2
        back = vae_to_ldm(hf)
        assert back.keys() == parts.vae.keys()
        assert all(torch.equal(back[k], parts.vae[k]) for k in back)  # (C, C) → (C, C, 1, 1) reshaped
        assert back["decoder.mid.attn_1.q.weight"].shape[2:] == (1, 1)


def test_four_level_sd21_layout_maps_every_key() -> None:
    """The SD 2.1-base shapes (4 levels, 2 res blocks, no attention in the last level, up samplers at index 1
    or 2): every diffusers key lands on a key of our UNet with the same shape."""
    from diffir.archs.diffbir.unet import UNet, UNetConfig

    with torch.device("meta"):
        ours = UNet(UNetConfig(model_channels=32, channel_mult=(1, 2, 4, 4), attention_resolutions=(4, 2, 1),
                               num_head_channels=32, context_dim=32))
    sd = ours.state_dict()
    # Build the diffusers names level by level, as UNet2DConditionModel does (attention in down_blocks 0-2, up 1-3).
    blocks = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
              "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out",
              "middle_block.0": "mid_block.resnets.0", "middle_block.1": "mid_block.attentions.0",
              "middle_block.2": "mid_block.resnets.1"}
    for i in range(4):
        for j in range(2):
            blocks[f"input_blocks.{3 * i + j + 1}.0"] = f"down_blocks.{i}.resnets.{j}"
            blocks[f"input_blocks.{3 * i + j + 1}.1"] = f"down_blocks.{i}.attentions.{j}"
        blocks[f"input_blocks.{3 * (i + 1)}.0.op"] = f"down_blocks.{i}.downsamplers.0.conv"
        for j in range(3):
            blocks[f"output_blocks.{3 * i + j}.0"] = f"up_blocks.{i}.resnets.{j}"
            if i:
                blocks[f"output_blocks.{3 * i + j}.1"] = f"up_blocks.{i}.attentions.{j}"
        blocks[f"output_blocks.{3 * i + 2}.{2 if i else 1}.conv"] = f"up_blocks.{i}.upsamplers.0.conv"
    hf = _rename(sd, blocks, _resnet_rest)
    assert "up_blocks.0.upsamplers.0.conv.weight" in hf and "down_blocks.3.attentions.0.proj_in.weight" not in hf
    back = unet_to_ldm(hf)
    assert back.keys() == sd.keys()
    assert all(back[k].shape == sd[k].shape for k in back)


def test_text_tower_gets_an_identity_block(tiny) -> None:
    """HF's last hidden state of an n-layer export = our "penultimate" output of n+1 blocks, the last all zeros."""
    text = _sd_parts(tiny).text
    for prefix in ("text_model.", ""):  # transformers 5 saves CLIPTextModel without the text_model. prefix
        converted = text_to_openclip(text_to_hf(text, prefix))
        assert converted.keys() - text.keys() == {k.replace(".1.", ".2.", 1) for k in text if ".resblocks.1." in k}
        assert not any(converted[k].any() for k in converted if ".resblocks.2." in k)
        assert torch.equal(converted["model.text_projection"], torch.zeros(64, 64))
    config = infer_text_config(converted)
    assert (config.layers, config.layer) == (3, "penultimate")
    loaded = TextEncoder(config)
    loaded.load_state_dict(converted)
    last = TextEncoder(dataclasses.replace(tiny.text.config, layer="last"))
    last.load_state_dict(text)
    tokens = torch.randint(0, 49408, (2, 77))
    assert torch.allclose(loaded.encode(tokens), last.encode(tokens), atol=1e-6)
    bad = {**text_to_hf(text), "text_model.encoder.layers.0.self_attn.rotary.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="rotary"):
        text_to_openclip(bad)


def test_unknown_unet_key_is_named() -> None:
    with pytest.raises(CheckpointError, match="class_embedding.linear_1.weight.*not supported"):
        unet_to_ldm({"conv_in.weight": torch.zeros(1), "down_blocks.0.resnets.0.norm1.weight": torch.zeros(1),
                     "class_embedding.linear_1.weight": torch.zeros(1)})


def test_schedule_buffers_give_the_parameterization() -> None:
    eps = schedule_buffers(SCHEDULER)["alphas_cumprod"]
    assert eps.shape == (1000,) and math.isclose(float(eps[0]), 1 - 0.00085, rel_tol=1e-6) and eps[-1] > 0
    zsnr = schedule_buffers({**SCHEDULER, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True})
    assert float(zsnr["alphas_cumprod"][-1]) == 0.0
    assert schedule_buffers({}) == {}
    for bad, match in (({"prediction_type": "v_prediction"}, "SD 2.1-768"),
                       ({"rescale_betas_zero_snr": True}, "no x0"),
                       ({"prediction_type": "sample"}, "sample"),
                       ({"beta_schedule": "linear"}, "not SD 2.1-base's schedule")):
        with pytest.raises(CheckpointError, match=match):
            schedule_buffers({**SCHEDULER, **bad})


# ---------------------------------------------------------------------------------------------- routing
def test_load_model_reads_a_diffusers_folder(tiny, folder, official) -> None:
    assert is_diffusers_folder(folder) and not is_diffusers_folder(official)
    files = [folder, official / "controlnet.pth", official / "swinir.pth"]
    model = diffir.load_model(files)
    assert model.config.parameterization == "eps" and not model.config.zero_snr
    for key in ("unet", "controlnet", "vae", "cleaner_config"):
        assert getattr(model.config, key) == getattr(tiny.config, key), key
    # + the identity block; the placeholder projection is width × width (1024 × 1024 in SD 2.x, as released)
    assert model.config.text == {**tiny.config.text, "layers": 3, "embed_dim": 64}
    ours = tiny.state_dict()
    got = model.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in got.items() if not k.startswith("text."))
    assert all(torch.equal(v, ours[k]) for k, v in got.items() if k.startswith("text.") and ".resblocks.2." not in k
               and "text_projection" not in k and "logit_scale" not in k)
    with torch.no_grad():  # the prompt path: penultimate of 3 blocks = the tiny tower's last of 2 blocks
        assert (model.text.encode(torch.arange(77)[None]) - _last_layer(tiny)(torch.arange(77)[None])).abs().max() \
            < 1e-6
    # -m "A,B,C" (what the CLI's -m resolves through) and the same string given to load_model
    spec = ",".join(str(f) for f in files)
    assert locate_model(spec).source == "files"
    again = diffir.load_model(spec)
    assert all(torch.equal(v, got[k]) for k, v in again.state_dict().items())
    # the folder as an SD checkpoint written back: the released .ckpt layout, loaded like the original files
    back = diffir.load_model(diffir.save_model(model, folder.parent / "written", official=True))
    assert all(torch.equal(v, got[k]) for k, v in back.state_dict().items())


def _last_layer(tiny):
    enc = TextEncoder(dataclasses.replace(tiny.text.config, layer="last"))
    enc.load_state_dict(tiny.text.state_dict())
    return enc.encode


def test_zero_snr_folder_is_v_prediction(tiny, tmp_path, official) -> None:
    zsnr = {**SCHEDULER, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True}
    folder = write_folder(tiny, tmp_path / "zsnr", zsnr, old_vae_names=True)
    model = diffir.load_model([folder, official / "controlnet.pth", official / "swinir.pth"])
    assert model.config.parameterization == "v" and model.config.zero_snr
    assert "parameterization" not in " ".join(model.config.meta["assumed"])


def test_folder_errors(folder, official, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no stage-1 cleaner given"):
        diffir.load_model(folder)
    with pytest.raises(CheckpointError, match="also needs the IRControlNet"):
        diffir.load_model(folder, cleaner="none")
    no_text = _variant(folder, tmp_path, lambda f: (f / "text_encoder" / "model.safetensors").unlink())
    with pytest.raises(CheckpointError, match="text_encoder: no weights"):
        read_diffusers_folder(no_text, lambda f: read_checkpoint(f)[0])
    shutil.rmtree(no_text)
    sd15 = _variant(folder, tmp_path, lambda f: _edit_json(f / "unet" / "config.json", attention_head_dim=8))
    with pytest.raises(CheckpointError, match="SD 1.x-style"):
        read_diffusers_folder(sd15, lambda f: read_checkpoint(f)[0])
    shutil.rmtree(sd15)
    narrow = _variant(folder, tmp_path, lambda f: _edit_json(f / "unet" / "config.json", attention_head_dim=[2, 4]))
    with pytest.warns(UserWarning, match="num_head_channels=32"):
        read_diffusers_folder(narrow, lambda f: read_checkpoint(f)[0])
    shutil.rmtree(narrow)
    quick = _variant(folder, tmp_path, lambda f: _edit_json(f / "text_encoder" / "config.json",
                                                            hidden_act="quick_gelu"))
    with pytest.raises(CheckpointError, match="quick_gelu"):
        read_diffusers_folder(quick, lambda f: read_checkpoint(f)[0])


def _diffusers():
    """diffusers and transformers (the test extra has them); skipped without them, except under CI."""
    missing = [name for name in ("diffusers", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the diffusers comparison must run in CI: pip install -e '.[test]' ({missing} missing)")
        pytest.skip(f"needs {' and '.join(missing)} (pip install -e '.[test]')")
    import diffusers
    import transformers

    return diffusers, transformers


# ------------------------------------------------------------------------------------- parity with diffusers
def test_matches_diffusers(tmp_path, official) -> None:
    """A tiny random SD 2.x pipeline built and saved by diffusers: our UNet (no control), VAE (posterior mode,
    decode) and prompt encoding equal diffusers' own within 1e-4."""
    diffusers, transformers = _diffusers()
    from diffir.archs.diffbir.tokenizer import EOT, SOT, CLIPTokenizer

    torch.manual_seed(0)
    ours_tok = CLIPTokenizer.load()  # the shipped OpenAI CLIP BPE, written as a Hugging Face tokenizer
    vocab = {("<|startoftext|>" if k == SOT else "<|endoftext|>" if k == EOT else k): v
             for k, v in ours_tok.encoder.items()}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    merges = sorted(ours_tok.ranks, key=ours_tok.ranks.get)
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    tokenizer = transformers.CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"),
                                           pad_token="!", model_max_length=77)  # SD 2.x pads with "!" (id 0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, layers_per_block=1, block_out_channels=(64, 128), attention_head_dim=(1, 2),
        down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
        cross_attention_dim=64, use_linear_projection=True)
    vae = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=4, sample_size=32)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=1,
        max_position_embeddings=77, hidden_act="gelu"))
    for module in (unet, vae, text):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.save_pretrained(tmp_path / "sd21")
    model = diffir.load_model([tmp_path / "sd21", official / "controlnet.pth", official / "swinir.pth"])
    assert model.config.parameterization == "eps"

    errors = {}
    with torch.no_grad():
        x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), torch.randn(2, 77, 64)
        expected = unet(x, t, encoder_hidden_states=context).sample
        errors["unet"] = (model.cldm.unet(x, t, context) - expected).abs().max()
        image = torch.rand(1, 3, 32, 32) * 2 - 1
        errors["vae encode"] = (model.cldm.vae.encode(image).mode() - vae.encode(image).latent_dist.mode()).abs().max()
        z = torch.randn(1, 4, 4, 4)
        errors["vae decode"] = (model.cldm.vae.decode(z) - vae.decode(z).sample).abs().max()
        for prompt in ("", "a photo of a cat, high quality"):
            expected = pipe.encode_prompt(prompt, "cpu", 1, False)[0]
            errors[f"text {prompt!r}"] = (model.encode_text([prompt]) - expected).abs().max()
    print({k: f"{float(e):.2e}" for k, e in errors.items()})
    assert all(float(e) < TOL for e in errors.values()), errors


def test_sd21_base_layout_matches_diffusers() -> None:
    """diffusers' SD 2.1-base configuration (built on the meta device, no memory): every key of its UNet, VAE and
    23-layer text encoder maps onto the released layout that our full-size modules have, shape for shape."""
    diffusers, transformers = _diffusers()
    from diffir.archs.diffbir.text import TextConfig
    from diffir.archs.diffbir.unet import SD21_UNET, UNet
    from diffir.archs.diffbir.vae import SD_VAE, AutoencoderKL

    with torch.device("meta"):
        theirs = {
            "unet": diffusers.UNet2DConditionModel(
                sample_size=64, attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024,
                use_linear_projection=True, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
            "vae": diffusers.AutoencoderKL(
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4),
            "text": transformers.CLIPTextModel(transformers.CLIPTextConfig(
                vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                num_attention_heads=16, hidden_act="gelu")),
        }
        ours = {"unet": UNet(SD21_UNET), "vae": AutoencoderKL(SD_VAE), "text": TextEncoder(TextConfig())}
    for name, convert in (("unet", unet_to_ldm), ("vae", vae_to_ldm), ("text", text_to_openclip)):
        converted, expected = convert(theirs[name].state_dict()), ours[name].state_dict()
        assert converted.keys() == expected.keys(), name
        assert all(converted[k].shape == expected[k].shape for k in expected), name
