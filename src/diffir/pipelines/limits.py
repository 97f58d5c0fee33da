"""Limits on what one restore may ask for; torch-free, so ``diffir restore -h`` can show them without torch."""

#: Output-size limit (pixels of the network's output or of the final image, whichever is larger), checked before
#: any work: the decompression-bomb limit bounds the input, this the work (a tiny 81 MP gray PNG passed the input
#: limit and ran for minutes toward a 1.3-gigapixel x4 output).  250 MP is e.g. a 7900x7900 input at x2.
DEFAULT_MAX_OUTPUT_PIXELS = 250_000_000
#: Largest ``outscale``: beyond it a value is a typo, not a request.
MAX_OUTSCALE = 64.0
#: torch's seed range.
MAX_SEED = 2**64 - 1
