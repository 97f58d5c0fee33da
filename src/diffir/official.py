"""Catalogue of the checkpoints the DiffIR and HI-Diff authors released (``diffir list --official``, README).

diffir downloads nothing: each entry says what the file is for, where the authors publish it, which preset it
matches and how to install it (:func:`diffir.io.locate.convert_command`) so that it can be used by name
(``-m <install_name>``).

Sources: the specs' "Released weights" sections (DiffIR: the repository README and the sub-projects' configs and
scripts at ``Zj-BinXia/DiffIR`` 293f86c; HI-Diff: README and ``options/test/*.yml`` at ``zhengchen1999/HI-Diff``
b3bfd16).  The names on Google Drive are not visible in either repository, so:

* DiffIR-RealSR files carry the README model names (``DiffIRS2-GANx4`` ...) or, where the README names none, the
  name the configs load (``experiments/DiffIRS1.pth`` ...); DiffIR-SRGAN and DiffIR-demotionblur files carry the
  path their configs load, prefixed by the sub-project (both use ``experiments/train_DiffIRS1/models/...``);
  inpainting files are the Lightning checkpoint inside the experiment folder the prediction scripts use.
* HI-Diff is released as one ``.pth`` per network; an entry names the folder the test configs load
  (``experiments/pretrained_models/HI_Diff_GoPro/``).  Users report that the released file names differ from those
  paths (HI-Diff#2); diffir identifies each network from its tensors, so only the folder matters.
* Drive links: the spec abbreviates per-task folder links as ``…/folders/<id>``; they are written out here.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Top-level "pretrained models" Google Drive folder linked from the README of Zj-BinXia/DiffIR (spec §8).
DIFFIR_DRIVE_ROOT = "https://drive.google.com/drive/folders/10miVILiopE414GyaSZM3EFAZITeY9q0p"


@dataclass(frozen=True)
class OfficialWeights:
    """One officially released checkpoint (or, for HI-Diff, one released folder of per-network files)."""

    #: The released file as the authors name it; for a per-network release ``FOLDER/ (file, file, ...)``.
    file: str
    #: ``"diffir"`` or ``"hidiff"``.
    architecture: str
    #: ``"sr"`` (bicubic), ``"realsr"`` (real-world degradations), ``"deblur"`` or ``"inpaint"``.
    task: str
    scale: int
    #: One line: what a user uses it for (uncertain details are said here, in parentheses).
    purpose: str
    #: The preset (``diffir list``) whose architecture the file matches.
    preset: str
    #: Where the authors publish it.
    published: str
    #: Suggested name under ``$DIFFIR_MODELS`` (``-m <install_name>`` once converted).
    install_name: str
    #: Other names the authors use for the same file (e.g. the name a config loads it under).
    aliases: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        """What to pass to ``diffir convert``: the file, or the folder of per-network files."""
        return self.file.split(" (", 1)[0].strip()

    @property
    def per_network(self) -> bool:
        """Released as one file per network (HI-Diff): the input is a folder."""
        return self.source.endswith("/")


_REPO_DIFFIR = "Zj-BinXia/DiffIR"
_REPO_HIDIFF = "zhengchen1999/HI-Diff"


def _drive(folder: str, folder_id: str) -> str:
    return f"{_REPO_DIFFIR} README: Google Drive folder {folder!r}, https://drive.google.com/drive/folders/{folder_id}"


_SRGAN = _drive("GAN SR", "1Mmhz6Sx9tz-n3QJAd6w-UlxdugTEH2fV")
_REALSR = _drive("Real-world SR", "1G3Ep0xd-uBpIXGZFdWzH1uVCOpJaqkOF")
_REALSR_V2 = _drive("RealworldSR-DiffIRS2-GANV2", "1H4DU-9fB15fSz-OFko00HlWYbNSqmAKq")
_DEBLUR = _drive("Motion deblurring", "1JWYaP9VVPX_Mh2w1Vezn74hck-oWSyMh")
_INPAINT = _drive("Inpainting", "1RQXRWMqVaAsyyQt8T-3KtpS68ef8dh90")
_CONFIG_NAMED = "named by the configs; the spec does not confirm this exact file is in the Drive folder"
_TEACHER = "stage-1 model: needs the ground truth, used as the teacher when training"


def _d(file: str, task: str, scale: int, purpose: str, preset: str, published: str, install_name: str,
       aliases: tuple[str, ...] = ()) -> OfficialWeights:
    return OfficialWeights(file, "diffir", task, scale, purpose, preset, published, install_name, aliases)


def _h(file: str, purpose: str, preset: str, published: str, install_name: str,
       aliases: tuple[str, ...] = ()) -> OfficialWeights:
    return OfficialWeights(file, "hidiff", "deblur", 1, purpose, preset, published, install_name, aliases)


_HIDIFF_TEST = f"Google Drive link in the README of {_REPO_HIDIFF}, Models table"

#: Every released checkpoint the specs list.  For each preset the first entry is the one to recommend.
OFFICIAL_WEIGHTS: tuple[OfficialWeights, ...] = (
    # --- DiffIR-RealSR: Real-ESRGAN degradations (spec §5.2, §8) -------------------------------------------------
    _d("DiffIRS2-GANx4.pth", "realsr", 4, "real photos ×4, GAN V1 (better fidelity; configs load it as "
       "DiffIRS2-GAN.pth)", "diffir_realsr_x4_s2", _REALSR, "diffir_realsr_x4_gan", ("DiffIRS2-GAN.pth",)),
    _d("DiffIRS2-GANx4-V2.pth", "realsr", 4, "real photos ×4, GAN V2 (better perceptual quality, less faithful; "
       "same architecture)", "diffir_realsr_x4_s2", _REALSR_V2, "diffir_realsr_x4_gan_v2"),
    _d("DiffIRS2.pth", "realsr", 4, f"real photos ×4, stage 2 before GAN fine-tuning: L1 + KD, smoother; "
       f"initialises the GAN stage ({_CONFIG_NAMED})", "diffir_realsr_x4_s2", _REALSR, "diffir_realsr_x4_stage2"),
    _d("DiffIRS1.pth", "realsr", 4, f"real-world ×4 {_TEACHER} ({_CONFIG_NAMED})", "diffir_realsr_x4_s1", _REALSR,
       "diffir_realsr_x4_stage1"),
    _d("DiffIRS2-GANx2.pth", "realsr", 2, "real photos ×2, GAN V1 (better fidelity; users find ×2 weaker than "
       "Real-ESRGAN, DiffIR#4)", "diffir_realsr_x2_s2", _REALSR, "diffir_realsr_x2_gan"),
    _d("DiffIRS2-GANx2-V2.pth", "realsr", 2, "real photos ×2, GAN V2 (better perceptual quality, less faithful)",
       "diffir_realsr_x2_s2", _REALSR_V2, "diffir_realsr_x2_gan_v2"),
    _d("DiffIRS1x2.pth", "realsr", 2, f"real-world ×2 {_TEACHER} ({_CONFIG_NAMED})", "diffir_realsr_x2_s1", _REALSR,
       "diffir_realsr_x2_stage1"),
    _d("DiffIRS2-GANx1.pth", "realsr", 1, "real photos at the same size (×1: removes blur, noise, JPEG), GAN V1 "
       "(better fidelity)", "diffir_realsr_x1_s2", _REALSR, "diffir_realsr_x1_gan"),
    _d("DiffIRS2-GANx1-V2.pth", "realsr", 1, "real photos at the same size (×1), GAN V2 (better perceptual quality, "
       "less faithful)", "diffir_realsr_x1_s2", _REALSR_V2, "diffir_realsr_x1_gan_v2"),
    _d("DiffIRS1x1.pth", "realsr", 1, f"real-world ×1 {_TEACHER} ({_CONFIG_NAMED})", "diffir_realsr_x1_s1", _REALSR,
       "diffir_realsr_x1_stage1"),
    # --- DiffIR-SRGAN: bicubic DF2K, ×4 only (only ×4 has a test config; no ×2 file is named) ------------------------
    _d("DiffIR-SRGAN/experiments/train_DiffIRGANS2/models/net_g_latest.pth", "sr", 4,
       "bicubic-downscaled images ×4, GAN (sharper, less faithful; Drive file name not in the spec)",
       "diffir_sr_x4_s2", _SRGAN, "diffir_sr_x4_gan"),
    _d("DiffIR-SRGAN/experiments/train_DiffIRS1/models/net_g_latest.pth", "sr", 4,
       f"bicubic ×4 {_TEACHER} (the test config also requires it; Drive file name not in the spec)",
       "diffir_sr_x4_s1", _SRGAN, "diffir_sr_x4_stage1"),
    # --- DiffIR-demotionblur: GoPro ------------------------------------------------------------------------------
    _d("DiffIR-demotionblur/experiments/train_DiffIRS2/models/net_g_latest.pth", "deblur", 1,
       "motion-blurred photos, GoPro-trained (Drive file name not in the spec)", "diffir_deblur_s2", _DEBLUR,
       "diffir_deblur_gopro"),
    _d("DiffIR-demotionblur/experiments/train_DiffIRS1/models/net_g_latest.pth", "deblur", 1,
       f"motion deblurring {_TEACHER} (the test config also requires it; users report condition.E.* keys in it, "
       "DiffIR#61)", "diffir_deblur_s1", _DEBLUR, "diffir_deblur_gopro_stage1"),
    # --- DiffIR-inpainting: Lightning experiment folders (config.yaml + models/last.ckpt) ---------------------------
    _d("DiffIRS2-celeba/models/last.ckpt", "inpaint", 1, "face inpainting, CelebA-HQ 256×256 (image + hole mask)",
       "diffir_inpaint_celeba_s2", _INPAINT, "diffir_inpaint_celeba"),
    _d("DiffIRS1-celeba/models/last.ckpt", "inpaint", 1, f"CelebA-HQ inpainting {_TEACHER}",
       "diffir_inpaint_celeba_s1", _INPAINT, "diffir_inpaint_celeba_stage1"),
    _d("DiffIRS2-place/models/last.ckpt", "inpaint", 1, "scene inpainting, Places2 (image + hole mask)",
       "diffir_inpaint_places_s2", _INPAINT, "diffir_inpaint_places"),
    _d("Big-DiffIRS2-place/models/last.ckpt", "inpaint", 1, "scene inpainting, Places2, big model (49.5 M "
       "parameters; configs name it DiffIRbigdataS2-place2)", "diffir_inpaint_places_big_s2", _INPAINT,
       "diffir_inpaint_places_big"),
    # --- HI-Diff: one .pth per network, {'params': ...} (spec A.8, A.9) --------------------------------------------
    _h("HI_Diff_GoPro/ (net_g.pth, net_le_dm.pth, net_d.pth)", "motion-blurred photos, GoPro-trained (the authors "
       "also test it on HIDE and RealBlur)", "hidiff_gopro_s2", f"{_HIDIFF_TEST} 'HI-Diff-GoPro'", "hidiff_gopro",
       ("HI-Diff-GoPro",)),
    _h("HI_Diff_RealBlur_J/ (net_g.pth, net_le_dm.pth, net_d.pth)", "real-world camera blur, RealBlur-J-trained",
       "hidiff_realblur_j_s2", f"{_HIDIFF_TEST} 'HI-Diff-RealBlur-J'", "hidiff_realblur_j", ("HI-Diff-RealBlur-J",)),
    _h("HI_Diff_RealBlur_R/ (net_g.pth, net_le_dm.pth, net_d.pth)", "real-world camera blur, RealBlur-R-trained",
       "hidiff_realblur_r_s2", f"{_HIDIFF_TEST} 'HI-Diff-RealBlur-R'", "hidiff_realblur_r", ("HI-Diff-RealBlur-R",)),
    _h("debug_train_HI_Diff_GoPro_S1/models/ (net_g_300000.pth, net_le_300000.pth)", f"GoPro {_TEACHER} S2 (the "
       "path GoPro_S2.yml loads; the released name is not in the spec)", "hidiff_gopro_s1",
       f"Google Drive link in the README of {_REPO_HIDIFF}, Training section (stage-1 models on GoPro)",
       "hidiff_gopro_stage1"),
)


def _parts(name: str) -> list[str]:
    """Lower-cased path components of a file/folder name (the ``(files ...)`` note of a folder entry dropped)."""
    name = name.split(" (", 1)[0].strip().replace("\\", "/").lower()
    return [p for p in name.split("/") if p and p != "."]


def _stem(part: str) -> str:
    for ext in (".safetensors", ".pth", ".ckpt", ".pt"):
        if part.endswith(ext):
            return part[: -len(ext)]
    return part


def _forms(name: str) -> set[tuple[str, ...]]:
    """Every contiguous run of path components of ``name``, also without the last one's extension."""
    parts = _parts(name)
    out: set[tuple[str, ...]] = set()
    for i in range(len(parts)):
        for j in range(i + 1, len(parts) + 1):
            run = tuple(parts[i:j])
            out.add(run)
            out.add((*run[:-1], _stem(run[-1])))
    return out


def official_for(name_or_file: str) -> OfficialWeights | None:
    """The released checkpoint a file/folder name (any case, with or without folders or extension) or an install
    name stands for; ``None`` when nothing, or more than one entry equally well, matches (``last.ckpt``)."""
    query = _parts(name_or_file)
    if not query:
        return None
    stem = _stem(query[-1])
    named = [w for w in OFFICIAL_WEIGHTS if w.install_name.lower() == stem]
    if len(named) == 1:
        return named[0]
    best: list[OfficialWeights] = []
    best_len = 0
    for w in OFFICIAL_WEIGHTS:
        forms = set().union(*(_forms(n) for n in (w.file, *w.aliases)))
        # the longest tail of the query (``~/Downloads/DiffIRS2-GANx4.pth`` -> ``diffirs2-ganx4.pth``) that is a
        # run of the released name's components
        length = max((k for k in range(1, len(query) + 1)
                      if tuple(query[-k:]) in forms or (*query[-k:-1], stem) in forms), default=0)
        if length > best_len:
            best, best_len = [w], length
        elif length == best_len and length:
            best.append(w)
    return best[0] if len(best) == 1 else None
