"""BBT and BBTv2 on one screen: the model, the k-shot split, the black box, ``A``, ``p0``, CMA-ES and the loop.

    z* = argmin_z  loss( f(A z + p0; X_train), Y_train )      (BBTv2: A_l z_l added at every layer l)

    service, train = load("rotten_tomatoes", "smollm2", k=16, seed=1)
    losses, prompt = bbt(service, train, seed=1)  # the papers' sizes: L = 50, d = 500, 8,000 API calls

For the same seed and settings the numbers are the full runner's (:func:`bbt_mini.methods.bbt.run_bbt` and
:func:`bbt_mini.methods.bbtv2.run_bbtv2`, with the default ``p0`` of tokens and CMA-ES): each generation's best
training loss and the best prompt found. The runner adds what is left out here: the dev checks and the test of
the best-dev prompt, checkpoints, ``test_at``, the other optimisers, samplers and ``p0``s, and the result record.
"""
import cma
import numpy as np

from bbt_mini.core.projection import build_p0, make_A
from bbt_mini.data.splits import kshot_split
from bbt_mini.data.tasks import get_task
from bbt_mini.lm.loading import load_model
from bbt_mini.methods.experiment import texts_for
from bbt_mini.service.blackbox import BlackBox


def load(task="rotten_tomatoes", model="smollm2", k=16, seed=1):
    """The black box serving ``model``, and the training set: ``k`` examples per class, drawn with ``seed``."""
    task, lm = get_task(task), load_model(model)
    verbalizer, train = task.verbalizer(lm.kind), kshot_split(task, k, seed).train
    service = BlackBox(lm, verbalizer.words)  # prompts in; logits and losses out; it counts the API calls
    return service, service.encode(texts_for(task, verbalizer, train, service), [ex["label"] for ex in train])


def cma_es(d, sigma0, popsize, seed, **options):
    """pycma's CMA-ES, started at z = 0, sampling from a random generator of its own."""
    options = {"popsize": popsize, "randn": np.random.RandomState(seed).randn, "verbose": -9, **options}
    return cma.CMAEvolutionStrategy(np.zeros(d), sigma0, options)


def bbt(service, train, seed=1, L=50, d=500, popsize=20, budget=8000, sigma0=1.0, sampler="uniform", alpha=1.0,
        record=None, **options):
    """BBT: CMA-ES over ``z`` in R^d; a candidate's prompt is ``A z + p0``. Returns the best loss of each
    generation and the best prompt. ``d=None``: the whole prompt space (``A = I``); ``record(losses, logits,
    prompts)`` sees every generation; ``options`` go to pycma (``CMA_diagonal=True``: sep-CMA-ES)."""
    p0 = build_p0("tokens", service, L)  # (L, H): the embeddings of tokens 1000 .. 1000 + L - 1
    mu, sigma = service.embedding_stats() if sampler != "uniform" else (0.0, None)  # the normal samplers' scale
    A = None if d is None else make_A(sampler, p0.size, d, np.random.default_rng([seed, 0xA]), mu_hat=mu,
                                      sigma_hat=sigma, sigma0=sigma0, alpha=alpha)  # (L * H, d), fixed
    es, curve = cma_es(d or p0.size, sigma0, popsize, seed, **options), []
    for calls in range(0, budget, popsize):
        Z = np.array(es.ask())[:budget - calls]  # a last generation may stop short: the budget is spent exactly
        X = Z.astype(np.float32)
        prompts = (X if A is None else X @ A.T).reshape(len(Z), *p0.shape) + p0
        r = service(prompts, train)  # len(Z) API calls: each candidate's loss on the training set
        if len(Z) == popsize:
            es.tell(list(Z), r.loss.tolist())
        if record:
            record(r.loss, r.logits, prompts)
        if r.loss.min() < min(curve, default=np.inf):
            best = prompts[r.loss.argmin()]
        curve.append(float(r.loss.min()))
    return curve, best


def bbtv2(service, train, seed=1, L=50, d=500, popsize=20, budget=8000, sigma0=1.0, alpha=1.0):
    """BBTv2: a deep prompt, ``A_l z_l`` added at every layer ``l`` (``+ p0`` at layer 0), one CMA-ES per layer.

    Divide and conquer: a generation moves one layer's ``z_l`` while the other layers' prompts stay fixed; the
    layers take turns from the bottom up, and each layer's prompt is fixed at the best its generations found.
    ``A_l`` is normal, scaled to the spread of what it is added to. Returns what :func:`bbt` returns."""
    p0, layers = build_p0("tokens", service, L), service.num_layers
    stats = service.hidden_stats(train)  # (layers, 2): mean and std of the hidden states entering each layer
    stats[0] = service.embedding_stats()  # layer 0: those of the word embeddings
    rng = np.random.default_rng([seed, 0xB])
    As = [make_A("normal", p0.size, d, rng, mu_hat=mu, sigma_hat=s, sigma0=sigma0, alpha=alpha) for mu, s in stats]
    ess = [cma_es(d, sigma0, popsize, seed * 1000 + layer + 1) for layer in range(layers)]
    fixed = np.zeros((layers, *p0.shape), np.float32)  # each layer's prompt while the others move
    fixed[0], fixed_loss, curve = p0, np.full(layers, np.inf), []
    for calls in range(0, budget, popsize):
        layer = calls // popsize % layers  # the layer whose turn it is
        Z = np.array(ess[layer].ask())[:budget - calls]
        prompts = np.repeat(fixed[None], len(Z), 0)  # (n, layers, L, H)
        prompts[:, layer] = (Z @ As[layer].T).reshape(len(Z), *p0.shape) + (p0 if layer == 0 else 0)
        r = service(prompts, train)
        if len(Z) == popsize:
            ess[layer].tell(list(Z), r.loss.tolist())
        if r.loss.min() < fixed_loss[layer]:
            fixed_loss[layer], fixed[layer] = r.loss.min(), prompts[r.loss.argmin(), layer]
        if r.loss.min() < min(curve, default=np.inf):
            best = prompts[r.loss.argmin()]
        curve.append(float(r.loss.min()))
    return curve, best
