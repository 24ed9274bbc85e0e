"""BBT and BBTv2 on one screen: the model, the k-shot split, the black box, ``A``,
``p0``, pycma's CMA-ES and the loop.

    z* = argmin_z  loss( f(A z + p0; X_train), Y_train )

    service, train = load("rotten_tomatoes", "smollm2", k=16, seed=1)
    losses, prompt = bbt(service, train, seed=1)  # L = 50, d = 500, 8,000 API calls

For the same seed and settings the numbers are those of the full runner
(:func:`bbt_mini.methods.bbt.run_bbt`, :func:`bbt_mini.methods.bbtv2.run_bbtv2`, with
their default ``p0``, sampler and optimiser): each generation's best training loss and
the best prompt. Left out here, and done by the runner: the dev checks and the test of
the best-dev prompt, checkpoints, ``test_at``, the other optimisers, samplers and
``p0``s, and the result's record.
"""
import cma
import numpy as np

from bbt_mini.core.projection import build_p0, normal_A, normal_std, uniform_A
from bbt_mini.data.splits import kshot_split
from bbt_mini.data.tasks import get_task
from bbt_mini.lm.loading import load_model
from bbt_mini.methods.experiment import texts_for
from bbt_mini.service.blackbox import BlackBox


def load(task="rotten_tomatoes", model="smollm2", k=16, seed=1):
    """The black box serving ``model``, and the training set: ``k`` examples a class."""
    task, lm = get_task(task), load_model(model)
    verbalizer, train = task.verbalizer(lm.kind), kshot_split(task, k, seed).train
    service = BlackBox(lm, verbalizer.words)  # prompts in, losses out; counts the calls
    texts = texts_for(task, verbalizer, train, service)  # the template, filled in
    return service, service.encode(texts, [example["label"] for example in train])


def cma_es(d, sigma0, popsize, seed, **options):
    """pycma's CMA-ES, started at z = 0, drawing from a random generator of its own;
    its step size adapts by CSA at every d, as in the papers' pycma (4.5 picks TPA
    from d = 300 on when not told)."""
    options.update(popsize=popsize, randn=np.random.RandomState(seed).randn, verbose=-9)
    options.setdefault("AdaptSigma", cma.sigma_adaptation.CMAAdaptSigmaCSA)
    return cma.CMAEvolutionStrategy(np.zeros(d), sigma0, options)


def bbt(service, train, seed=1, L=50, d=500, popsize=20, budget=8000, sigma0=1.0,
        record=None, **options):
    """BBT: CMA-ES over ``z`` in R^d; a candidate's prompt is ``A z + p0``.

    Returns the best training loss of each generation and the best prompt. ``d=None``:
    the whole prompt space (``A = I``); ``record(losses, logits, prompts)`` sees each
    generation; ``options`` go to pycma (``CMA_diagonal=True``: sep-CMA-ES)."""
    p0 = build_p0("tokens", service, L)  # (L, H): the embeddings of tokens 1000..
    # A: (L * H, d), entries U(-1/sqrt(d), 1/sqrt(d)), drawn once from the seed
    A = None if d is None else uniform_A(p0.size, d, np.random.default_rng([seed, 0xA]))
    es, curve, best = cma_es(d or p0.size, sigma0, popsize, seed, **options), [], None
    for calls in range(0, budget, popsize):
        Z = np.array(es.ask())[:budget - calls]  # the last generation may be short
        X = Z.astype(np.float32)
        prompts = (X if A is None else X @ A.T).reshape(len(Z), *p0.shape) + p0
        # len(Z) API calls: the losses on the training set; with p0's tokens 1000..
        # (a masked LM adds A z after its embedding module, as the authors do)
        r = service(prompts, train, base=range(1000, 1000 + L))
        if len(Z) == popsize:  # pycma learns from whole generations only
            es.tell(list(Z), r.loss.tolist())
        if record:
            record(r.loss, r.logits, prompts)
        if r.loss.min() < min(curve, default=np.inf):
            best = prompts[r.loss.argmin()]
        curve.append(float(r.loss.min()))
    return curve, best


def bbtv2(service, train, seed=1, L=50, d=500, popsize=20, budget=8000, sigma0=1.0):
    """BBTv2: a deep prompt, ``A_l z_l`` added at every layer ``l`` (+ ``p0`` at 0).

    Divide and conquer: one CMA-ES per layer; a generation moves one layer's ``z_l``
    with the other layers' prompts fixed, the layers take turns from the bottom up, and
    each layer's prompt stays at the best its generations found. ``A_l`` is normal,
    scaled to the spread of what it is added to. Returns what :func:`bbt` returns."""
    p0, layers = build_p0("tokens", service, L), service.num_layers
    stats = service.hidden_stats(train)  # mean and std of what enters each layer
    stats[0] = service.embedding_stats()  # at layer 0: the word embeddings'
    rng = np.random.default_rng([seed, 0xB])
    # A_l: entries N(0, std_l^2), std_l = sigma_l / (sqrt(d) sigma0), sigma_l from stats
    As = [normal_A(p0.size, d, normal_std(s, d, sigma0), rng) for _, s in stats]
    es = [cma_es(d, sigma0, popsize, 1000 * seed + n + 1) for n in range(layers)]
    fixed = np.zeros((layers, *p0.shape), np.float32)  # each layer's prompt so far
    fixed[0], fixed_loss, curve, best = p0, np.full(layers, np.inf), [], None
    for calls in range(0, budget, popsize):
        n = calls // popsize % layers  # the layer whose turn it is
        Z = np.array(es[n].ask())[:budget - calls]
        prompts = np.repeat(fixed[None], len(Z), 0)  # (len(Z), layers, L, H)
        prompts[:, n] = (Z @ As[n].T).reshape(len(Z), *p0.shape) + (p0 if n == 0 else 0)
        r = service(prompts, train, base=range(1000, 1000 + L))
        if len(Z) == popsize:  # as in BBT
            es[n].tell(list(Z), r.loss.tolist())
        i = r.loss.argmin()
        if r.loss[i] < fixed_loss[n]:  # fix layer n at its best prompt so far
            fixed_loss[n], fixed[n] = r.loss[i], prompts[i, n]
        if r.loss[i] < min(curve, default=np.inf):
            best = prompts[i]
        curve.append(float(r.loss[i]))
    return curve, best
