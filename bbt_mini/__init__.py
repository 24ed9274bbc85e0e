"""bbt_mini: Black-Box Tuning of language models, small enough to read.

Modules, in the order the book introduces them:

* :mod:`bbt_mini.lm.loading`: load the frozen model (offline default: SmolLM2-135M), wrapped
  by :mod:`bbt_mini.lm.models`; :mod:`bbt_mini.lm.tiny`: tiny random stand-ins;
* :mod:`bbt_mini.data.tasks`: tasks, templates, label words, k-shot splits;
* :mod:`bbt_mini.service.blackbox`: the model as a metered service (LMaaS), built on
  :mod:`bbt_mini.lm.encoding`, :mod:`bbt_mini.service.forward` and :mod:`bbt_mini.core.metrics`;
  :mod:`bbt_mini.service.whitebox` opens it on purpose;
* :mod:`bbt_mini.core.projection`: ``p = A z + p0`` and the samplers for ``A``;
* :mod:`bbt_mini.core.cmaes` and :mod:`bbt_mini.core.optimizers`: CMA-ES and friends;
* :mod:`bbt_mini.methods.bbt` and :mod:`bbt_mini.methods.bbtv2`: the two methods (their searches);
* :mod:`bbt_mini.methods.tuning`: the one loop both share (ask, evaluate, tell, dev check, checkpoint);
* :mod:`bbt_mini.core.results`: what a run records (one schema for every method, JSON);
* :mod:`bbt_mini.methods.baselines`, :mod:`bbt_mini.core.cost`: what the methods are measured against;
* :mod:`bbt_mini.core.profiles`: the experiment sizes (ci, small, colab, full), plain data;
  :mod:`bbt_mini.methods.registry` makes the tuners' configs from them;
* :mod:`bbt_mini.core.settings`: the device, the number format and every ``BBT_*`` variable;
  :mod:`bbt_mini.core.packaged`: the files the offline model and data ship in their PyPI packages;
* :mod:`bbt_mini.run.prepare` and :mod:`bbt_mini.run.runs`: a task, a model and a seed become a run.

Layers, ground up (a module imports only from its own layer or below; ``tests/test_layers.py``
checks it): ``core < data < lm < service < methods < run < book < __main__``.

Nothing is downloaded or seeded at import time.
"""
__version__ = "0.1.0"
