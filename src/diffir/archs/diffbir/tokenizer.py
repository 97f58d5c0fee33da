"""OpenCLIP's prompt tokenizer (byte-level BPE of OpenAI CLIP), written from its description.

Text → clean (a deterministic subset of ``ftfy.fix_text``, HTML unescaping, whitespace collapsing, lower case) →
split by the CLIP pattern → UTF-8 bytes mapped to printable characters → BPE merges (lowest rank first) → ids.
A prompt becomes ``[<start_of_text>, ids…, <end_of_text>]`` padded with 0 to 77; a longer one is cut and its last
id replaced by ``<end_of_text>``.  The vocabulary is the bundled ``assets/bpe_simple_vocab_16e6.txt.gz`` (MIT,
OpenAI) or a Hugging Face ``tokenizer/`` folder (``vocab.json`` + ``merges.txt``).

Not reproduced from ``ftfy``: its mojibake repair (``fix_encoding`` and its helpers), which guesses; prompts that
are valid text tokenize identically (checked against open_clip in ``tests/test_diffbir_text.py``).
"""

from __future__ import annotations

import functools
import gzip
import html
import json
import re
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import torch

from diffir.bundled import asset_path
from diffir.errors import ConfigError

SOT, EOT = "<start_of_text>", "<end_of_text>"
_HF_SOT, _HF_EOT = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77
#: CLIP keeps the first 49152 − 256 − 2 merges of the file (line 0 is a version header).
N_MERGES = 49152 - 256 - 2
VOCAB_ASSET = "bpe_simple_vocab_16e6.txt.gz"


@functools.cache
def byte_to_char() -> dict[int, str]:
    """CLIP's reversible byte → character map: printable Latin-1 bytes stay, the others get 256, 257, …"""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = (b for b in range(256) if b not in kept)
    table = {b: chr(b) for b in kept}
    table.update({b: chr(256 + i) for i, b in enumerate(extra)})
    return table  # insertion order (kept bytes, then the others) is the vocabulary order


def _ranges(codepoints: list[int]) -> str:
    out, start = [], None
    for i, cp in enumerate(codepoints):
        if start is None:
            start = cp
        if i + 1 == len(codepoints) or codepoints[i + 1] != cp + 1:
            out.append(f"\\U{start:08x}" if start == cp else f"\\U{start:08x}-\\U{cp:08x}")
            start = None
    return "".join(out)


@functools.cache
def _letter_number_classes() -> tuple[str, str]:
    # \p{L} and \p{N} spelled out from unicodedata: the stdlib `re` has no \p{..}, and [^\W\d_] is not \p{L}
    # (it also holds No/Nl characters such as '²' and 'Ⅻ').
    cats = [unicodedata.category(chr(cp))[0] for cp in range(sys.maxunicode + 1)]
    return (_ranges([cp for cp, c in enumerate(cats) if c == "L"]),
            _ranges([cp for cp, c in enumerate(cats) if c == "N"]))


def split_pattern(specials: Sequence[str]) -> re.Pattern[str]:
    """The CLIP pre-tokenizer of lower-cased text: specials | contractions | letter runs | single digits |
    other symbol runs."""
    letters, numbers = _letter_number_classes()
    alternatives = [re.escape(s) for s in specials]
    # The text is lower-cased first, so open_clip's IGNORECASE matters for two characters only: U+0345 (a combining
    # mark that case-folds to ι) matches no alternative of its `regex` pattern and is dropped, and the long s (ſ)
    # folds to s in the contraction 's.  Both are spelled out here; the stdlib `re` then needs no IGNORECASE.
    alternatives += ["'[s\u017f]", "'t", "'re", "'ve", "'m", "'ll", "'d", f"[{letters}]+", f"[{numbers}]",
                     rf"[^\s{letters}{numbers}\u0345]+"]
    return re.compile("|".join(alternatives))


@functools.cache
def _ftfy_table() -> dict[int, str | None]:
    """Per-character part of ``ftfy.fix_text``'s defaults (checked character by character against ftfy 6.3)."""
    table: dict[int, str | None] = {}
    removed = [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070), 0xFEFF,
               *range(0xFFF9, 0xFFFD)]
    table.update(dict.fromkeys(removed))
    table.update({0x0D: "\n", 0x2028: "\n", 0x2029: "\n"})
    for cp in range(0x80, 0xA0):  # C1 controls are Windows-1252 bytes decoded as Latin-1
        try:
            table[cp] = bytes([cp]).decode("cp1252")
        except UnicodeDecodeError:
            continue
    wide = [0x132, 0x133, *range(0x1C4, 0x1CD), *range(0x1F1, 0x1F4), 0x149, 0x3000, *range(0xFB00, 0xFB05),
            0xFB06, *range(0xFF01, 0xFFEF)]  # Latin ligatures and full/half-width forms → NFKC
    table.update({cp: unicodedata.normalize("NFKC", chr(cp)) for cp in wide
                  if unicodedata.normalize("NFKC", chr(cp)) != chr(cp)})
    table[0xFB05] = "\u017ft"  # ftfy keeps the long s of the ſt ligature
    quotes = {**{cp: "'" for cp in (0x2BC, *range(0x2018, 0x201C))}, **{cp: '"' for cp in range(0x201C, 0x2020)}}
    table = {cp: None if v is None else v.translate(quotes) for cp, v in table.items()}
    return {**table, **quotes}


_TERMINAL_ESCAPE = re.compile(r"\x1b\[[\d;]*[a-zA-Z]")


def _fix_text(text: str) -> str:
    # ftfy repeats its fixes until the text stops changing; it unescapes HTML itself unless the text (at that
    # round) contains '<', i.e. looks like HTML
    while True:
        fixed = html.unescape(text) if "<" not in text else text
        fixed = unicodedata.normalize("NFC", _TERMINAL_ESCAPE.sub("", fixed).translate(_ftfy_table()))
        if fixed == text:
            return text
        text = fixed


def clean_text(text: str) -> str:
    """open_clip's default cleaning: fix_text, HTML unescape twice, collapse whitespace, strip, lower case."""
    text = html.unescape(html.unescape(_fix_text(text))).strip()
    return " ".join(text.split()).lower()


class CLIPTokenizer:
    """``tokenizer(texts) -> (B, 77)`` int64 ids; ``encode(text)`` gives the ids without SOT/EOT/padding."""

    def __init__(self, encoder: dict[str, int], merges: Sequence[tuple[str, str]], sot: str = SOT, eot: str = EOT,
                 context_length: int = CONTEXT_LENGTH) -> None:
        if sot not in encoder or eot not in encoder:
            raise ConfigError(f"the vocabulary lacks the special tokens {sot} / {eot}")
        self.encoder = encoder
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.sot_id, self.eot_id = encoder[sot], encoder[eot]
        self.context_length = context_length
        self.pattern = split_pattern((sot, eot))
        self._cache: dict[str, list[int]] = {sot: [self.sot_id], eot: [self.eot_id]}

    @classmethod
    def from_bpe_file(cls, path: str | Path | None = None) -> CLIPTokenizer:
        """From CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (default: the bundled copy); ids are the 256 byte characters,
        the same with ``</w>``, the merges, SOT, EOT."""
        path = path or asset_path(VOCAB_ASSET)
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                lines = f.read().split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not a CLIP BPE vocabulary (bpe_simple_vocab_16e6.txt.gz): {exc}") from exc
        merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]
        chars = list(byte_to_char().values())
        vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [SOT, EOT]
        return cls({tok: i for i, tok in enumerate(vocab)}, merges)

    @classmethod
    def from_hf_folder(cls, folder: str | Path) -> CLIPTokenizer:
        """From a Hugging Face CLIP ``tokenizer/`` folder (``vocab.json`` and ``merges.txt``)."""
        folder = Path(folder)
        if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
            raise ConfigError(f"{folder} is not a CLIP tokenizer folder: it needs vocab.json and merges.txt")
        encoder = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
        sot, eot = (_HF_SOT, _HF_EOT) if _HF_SOT in encoder else (SOT, EOT)
        return cls(encoder, merges, sot, eot)

    @classmethod
    def load(cls, source: str | Path | None = None) -> CLIPTokenizer:
        """The bundled vocabulary (``None``), a Hugging Face tokenizer folder or a ``bpe_simple_vocab`` file."""
        if source is None:
            return cls.from_bpe_file()
        return cls.from_hf_folder(source) if Path(source).is_dir() else cls.from_bpe_file(source)

    def _bpe(self, word: str) -> list[int]:
        if word in self._cache:
            return self._cache[word]
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in zip(parts, parts[1:], strict=False)}
            best = min(pairs, key=lambda p: self.ranks.get(p, len(self.ranks)))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):  # merge every occurrence, left to right
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = [self.encoder[p] for p in parts]
        self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        chars = byte_to_char()
        ids: list[int] = []
        for piece in self.pattern.findall(clean_text(text)):
            ids += self._bpe("".join(chars[b] for b in piece.encode("utf-8")))
        return ids

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        n = context_length or self.context_length
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(texts), n, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > n:
                ids = [*ids[: n - 1], self.eot_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out
