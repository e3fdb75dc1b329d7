"""Figures for the app and README (matplotlib, headless)."""
import numpy as np


def _pca2(V):
    V = V - V.mean(0)
    if len(V) < 2 or not np.any(V):
        return np.zeros((len(V), 2))
    U, S, _ = np.linalg.svd(V, full_matrices=False)
    out = U[:, :2] * S[:2]
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def neighbour_map(model, res):
    """Two 2-D PCA maps: the word and its visual neighbours (columns of D), and its GloVe neighbours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .wordvec import load_glove

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    word = res["word"]
    panels = [("visual space (columns of D)", [w for w, _ in res["visual"]], "C0"),
              ("text space (GloVe 6B 50d)", [w for w, _ in res["text"]], "C1")]
    for ax, (title, words, colour) in zip(axes, panels):
        ax.set_title(title, fontsize=11)
        ax.set_xticks([]), ax.set_yticks([])
        if title.startswith("visual"):
            known = [w for w in [word] + words if w in model.vocab]
            vecs = np.array([model.D[:, model.vocab.index[w]] for w in known]) if known else np.zeros((0, 2))
        else:
            kv = load_glove()
            known = [w for w in [word] + words if w in kv.key_to_index]
            vecs = np.array([kv[w] for w in known]) if known else np.zeros((0, 2))
        if not known:
            ax.text(0.5, 0.5, f"'{word}' is not in this space", ha="center", va="center", transform=ax.transAxes)
            continue
        xy = _pca2(vecs)
        for (x, y), w in zip(xy, known):
            bold = w == word
            ax.scatter([x], [y], c="black" if bold else colour, s=60 if bold else 25)
            ax.annotate(w, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=10 if bold else 9,
                        fontweight="bold" if bold else "normal")
        ax.margins(0.2)
    fig.tight_layout()
    plt.close(fig)
    return fig
