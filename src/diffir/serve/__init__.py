"""``diffir serve``: a local web app over the same pipeline as ``diffir restore``.

* :mod:`~diffir.serve.catalog` — the models offered (bundled first, then the models folder);
* :mod:`~diffir.serve.workspace` — the one temporary folder that holds uploads and results;
* :mod:`~diffir.serve.jobs` — the bounded queue and the worker thread that restores one job at a time;
* :mod:`~diffir.serve.app` — the HTTP routes (Starlette) and the page in ``static/``.

Needs the ``serve`` extra: ``pip install 'diffir-toolkit[serve]'``.
"""
