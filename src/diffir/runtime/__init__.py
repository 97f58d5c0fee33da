"""How the process runs a model: which formulation of the network (fast or reference), the memory allocator,
and the number of threads.  Set once per process by the CLI and the pipelines; nothing for a user to set."""

from diffir.runtime.allocator import keep_freed_memory
from diffir.runtime.execution import fast_path, reference_path
from diffir.runtime.threads import choose_threads, configure_threads

__all__ = ["choose_threads", "configure_threads", "fast_path", "keep_freed_memory", "reference_path"]
