"""DiffBIR's prompt path: the CLIP BPE tokenizer (ids checked against open_clip 3.3.0 with ftfy 6.3 and regex) and
the OpenCLIP text tower (tiny parity file, released layout, causal mask, penultimate layer)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from diffbir_parity import case, case_names
from diffir.archs.diffbir.text import TextConfig, TextEncoder, infer_text_config, text_state_dict
from diffir.archs.diffbir.tokenizer import CLIPTokenizer, byte_to_char, clean_text, split_pattern
from diffir.errors import ConfigError

# open_clip.tokenizer.SimpleTokenizer()(text), up to and including <end_of_text>
REFERENCE_IDS = [
    ("a photo of a cat", [49406, 320, 1125, 539, 320, 2368, 49407]),
    ("A PHOTO of a Cat!!", [49406, 320, 1125, 539, 320, 2368, 748, 49407]),
    ("", [49406, 49407]),
    ("hello, world. it's 2024; don't stop—ok?",
     [49406, 3306, 267, 1002, 269, 585, 568, 273, 271, 273, 275, 282, 847, 713, 1691, 2005, 2481, 286, 49407]),
    ("numbers 12345 and 3.14", [49406, 6121, 272, 273, 274, 275, 276, 537, 274, 269, 272, 275, 49407]),
    ("naïve café résumé", [49406, 1097, 35689, 563, 15304, 29106, 7054, 4166, 49407]),
    ("日本語のテキスト", [49406, 39121, 44353, 34002, 252, 21575, 2429, 228, 47121, 32421, 486, 49407]),
    ("emoji 😀👍🏽", [49406, 16327, 12832, 43722, 49407]),
    ("curly ‘quotes’ don’t", [49406, 20795, 262, 5808, 262, 847, 713, 49407]),
    ("ﬁne ｆｕｌｌ\u3000ＡＢ", [49406, 3797, 1476, 3937, 49407]),
    ("&amp; &lt;b&gt;", [49406, 261, 283, 321, 285, 49407]),
    ("x² ½ Ⅻ", [49406, 343, 41175, 33613, 158, 227, 375, 49407]),
    ("Ελληνικά кириллица", [49406, 138, 113, 138, 119, 138, 119, 138, 115, 138, 121, 138, 117, 138, 118, 138, 361,
                            27152, 16701, 16370, 29503, 119, 47611, 16701, 141, 228, 27080, 49407]),
    ("I'LL WE'VE", [49406, 328, 1342, 649, 1200, 49407]),
    ("high-resolution, 8k, ultra detailed photograph",
     [49406, 1400, 268, 9977, 267, 279, 330, 267, 8118, 12609, 8853, 49407]),
]


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.load()


@pytest.mark.parametrize(("text", "ids"), REFERENCE_IDS)
def test_tokenizer_matches_open_clip(tokenizer, text: str, ids: list[int]) -> None:
    row = tokenizer(text)
    assert row.shape == (1, 77) and row.dtype == torch.long
    assert row[0, : len(ids)].tolist() == ids
    assert not row[0, len(ids):].any()  # padded with 0


def test_truncation_keeps_eot_last(tokenizer) -> None:
    rows = tokenizer([" ".join(["word"] * 100), "a photo of a cat"])
    assert rows.shape == (2, 77)
    assert rows[0].tolist() == [49406] + [2653] * 75 + [49407]
    assert tokenizer(" ".join(["word"] * 75))[0, -2:].tolist() == [2653, 49407]  # exactly 77: nothing cut


def test_pattern_classes_are_unicode_letters_and_numbers() -> None:
    pattern = split_pattern(("<start_of_text>", "<end_of_text>"))
    # '²' and 'Ⅻ' are numbers (one token per character), not letters, although `[^\W\d_]` would take them
    assert pattern.findall("ab²cd ⅻ9x") == ["ab", "²", "cd", "ⅻ", "9", "x"]
    assert pattern.findall("it's ſ'ſ <end_of_text>!?") == ["it", "'s", "ſ", "'ſ", "<end_of_text>", "!?"]
    assert pattern.findall("\u0345x") == ["x"]  # dropped, as by open_clip's case-insensitive `regex` pattern
    assert clean_text("  Tab\tand\n\nNEW ‘lines’ \x00 ") == "tab and new 'lines'"
    # ftfy unescapes until stable, but stops once the text holds '<' (here made from a full-width ＜)
    assert clean_text("&amp;amp;amp;amp;") == "&" and clean_text("＜&amp;amp;amp;") == "<&"
    assert len(byte_to_char()) == 256 and len(set(byte_to_char().values())) == 256


def test_hugging_face_tokenizer_folder(tokenizer, tmp_path) -> None:
    """A ``tokenizer/`` folder (vocab.json + merges.txt, ``<|startoftext|>`` names) gives the same ids."""
    vocab = {tok: i for tok, i in tokenizer.encoder.items()}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = vocab.pop("<start_of_text>"), vocab.pop("<end_of_text>")
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merges = sorted(tokenizer.ranks, key=tokenizer.ranks.get)
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                         encoding="utf-8")
    hf = CLIPTokenizer.load(tmp_path)
    for text, ids in REFERENCE_IDS:
        assert hf(text)[0, : len(ids)].tolist() == ids
    with pytest.raises(ConfigError):
        CLIPTokenizer.load(tmp_path / "vocab.json").encode("x")  # not a gzip BPE file either


def _tiny_sd(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    c = case(name)
    return load_file(str(c.path("sd"))), c.meta


def _reference_encode(sd: dict[str, torch.Tensor], tokens: torch.Tensor, heads: int, blocks: int) -> torch.Tensor:
    """The tower written out with plain tensor ops (float64): causal softmax attention, exact GELU, pre-LN."""
    w = {k: v.double() for k, v in text_state_dict(sd).items()}
    n = tokens.shape[1]
    x = w["model.token_embedding.weight"][tokens] + w["model.positional_embedding"][:n]
    width = x.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool).triu(1)
    for i in range(blocks):
        p = f"model.transformer.resblocks.{i}."
        h = F.layer_norm(x, (width,), w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        q, k, v = (h @ w[p + "attn.in_proj_weight"].T + w[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(width // heads)
        attn = scores.masked_fill(causal, float("-inf")).softmax(-1) @ v
        x = x + attn.transpose(1, 2).flatten(2) @ w[p + "attn.out_proj.weight"].T + w[p + "attn.out_proj.bias"]
        h = F.layer_norm(x, (width,), w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        h = F.gelu(h @ w[p + "mlp.c_fc.weight"].T + w[p + "mlp.c_fc.bias"])
        x = x + h @ w[p + "mlp.c_proj.weight"].T + w[p + "mlp.c_proj.bias"]
    return F.layer_norm(x, (width,), w["model.ln_final.weight"], w["model.ln_final.bias"])


@pytest.mark.parametrize("name", case_names())
def test_tower_loads_the_tiny_sd_file(name: str) -> None:
    sd, meta = _tiny_sd(name)
    text_cfg = meta["clip_cfg_unused"]["text_cfg"]
    enc = TextEncoder.from_state_dict(sd, heads=text_cfg["heads"]).eval()
    cfg = enc.config
    assert (cfg.context_length, cfg.vocab_size, cfg.width, cfg.heads, cfg.layers) == (
        text_cfg["context_length"], text_cfg["vocab_size"], text_cfg["width"], text_cfg["heads"], text_cfg["layers"])
    assert cfg.layer == meta["clip_cfg_unused"]["layer"] == "penultimate"
    official = [k for k in meta["state_dicts"]["sd"]["keys_in_module_order"] if k.startswith("cond_stage_model.")]
    assert list(enc.state_dict()) == [k[len("cond_stage_model."):] for k in official]
    tokens = torch.randint(0, cfg.vocab_size, (3, cfg.context_length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = enc.encode(tokens)
    assert out.shape == (3, cfg.context_length, cfg.width)
    ref = _reference_encode(sd, tokens, cfg.heads, cfg.layers - 1)
    assert torch.allclose(out.double(), ref, atol=1e-5), float((out.double() - ref).abs().max())


def test_heads_are_not_guessed_for_non_vit_h_widths() -> None:
    sd, _ = _tiny_sd(case_names()[0])
    with pytest.raises(ConfigError):
        infer_text_config(sd)  # width 8: head width 64 does not apply


def _small_tower(layer: str = "penultimate") -> TextEncoder:
    torch.manual_seed(0)
    enc = TextEncoder(TextConfig(context_length=77, vocab_size=49408, width=64, heads=2, layers=3, embed_dim=32,
                                 layer=layer)).eval()
    with torch.no_grad():
        for p in enc.parameters():
            if p.dim() < 2:  # biases and norm weights: non-trivial values
                p.normal_(0, 0.2)
    return enc


@torch.no_grad()
def test_prompt_context_shape_and_causality() -> None:
    enc = _small_tower()
    tokens = CLIPTokenizer.load()(["a photo of a cat", "a blurry photograph of a dog at night"])
    out = enc.encode(tokens)
    assert out.shape == (2, 77, 64)
    changed = tokens.clone()
    changed[:, 4] = 1000
    diff = (enc.encode(changed) - out).abs().amax(dim=(0, 2))
    assert torch.equal(diff[:4], torch.zeros(4))  # positions before the change do not see it
    assert (diff[4:] > 0).all()


@torch.no_grad()
def test_penultimate_layer_skips_the_last_block() -> None:
    tokens = CLIPTokenizer.load()("restore this photo")
    for layer, affects in (("penultimate", False), ("last", True)):
        enc = _small_tower(layer)
        before = enc.encode(tokens)
        for p in enc.model.transformer.resblocks[-1].parameters():
            p.add_(1.0)
        assert torch.equal(enc.encode(tokens), before) != affects


def test_released_layout_from_a_meta_build() -> None:
    layout = case(case_names()[0]).released_layout["clip"]
    assert layout["checkpoint_prefix"] == "cond_stage_model."
    with torch.device("meta"):
        enc = TextEncoder(TextConfig())
    cfg = enc.config
    assert (cfg.width, cfg.heads, cfg.layers, cfg.context_length, cfg.vocab_size) == (1024, 16, 24, 77, 49408)
    assert [(k, list(v.shape)) for k, v in enc.state_dict().items()] == [(k, s) for k, s in layout["keys"]]
    assert len(layout["keys"]) == layout["n_keys"] == 294
    assert sum(p.numel() for p in enc.parameters()) == layout["n_params"]
    shapes = {k: torch.empty(s, device="meta") for k, s in layout["keys"]}
    assert infer_text_config({"cond_stage_model." + k: v for k, v in shapes.items()}) == cfg
    with_visual = {**shapes, "model.visual.proj": torch.empty(1280, 1024, device="meta")}
    assert set(text_state_dict(with_visual)) == set(shapes)
