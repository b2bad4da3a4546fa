"""Stage 4 of lobes: are the co-occurrence lobes spatial, and what do they do?

* :func:`ami_test` — adjusted mutual information between co-occurrence and geometry lobes against a
  seeded permutation null;
* :func:`logreg_test` — balanced accuracy of a logistic regression predicting the lobe from the
  decoder rows, against random Gaussian geometries;
* :func:`lobe_genre_table` — genre x winning-lobe contingency on held-out blocks, with chi-square and
  Cramer's V;
* :func:`split_by_document` — training / held-out blocks, holding out whole documents.

Each test returns a small typed record (:class:`AmiTest`, :class:`LogregTest`, :class:`GenreTable`);
undefined values (a null with zero spread, a test that could not run) are None, never NaN.

References
----------
Vinh, Epps & Bailey, "Information theoretic measures for clusterings comparison", JMLR 11 (2010).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import sparse

from featuregeo.core.errors import InputError
from featuregeo.core.util import resolve_rng, seed_sequence
from featuregeo.tl.lobes.common import ArrayEq, Firing, check_seed, finite_or_none, int_at_least, threads_for


@dataclass(eq=False)
class AmiTest(ArrayEq):
    """The AMI between two labelings and its permutation null.

    Attributes
    ----------
    ami : float
        scikit-learn's adjusted mutual information (arithmetic normalisation).
    null_mean, null_std : float or None
        Mean and standard deviation (ddof=1) of the AMI over permutations.
    sigma : float or None
        ``(ami - null_mean) / null_std``; None when the null has no spread.
    p : float
        ``(1 + #(null >= ami)) / (1 + n_permutations)``.
    n_permutations : int
    null : ndarray or None
        The null draws (only with ``return_null=True``).
    """

    ami: float
    null_mean: float | None
    null_std: float | None
    sigma: float | None
    p: float | None
    n_permutations: int
    null: np.ndarray | None = None


@dataclass
class LogregTest:
    """Balanced accuracy of lobe prediction from decoder rows, against random geometries.

    Attributes
    ----------
    bal_acc : float or None
        Balanced accuracy on the test split (mean over folds); None when no split was possible.
    null_mean, null_std, sigma, p : float or None
        The same on ``null_repeats`` standard-Gaussian matrices of the same shape and labels.
    n_used, n_dropped : int
        Rows used, and rows of lobes too small for a stratified split (left out).
    n_classes : int
        Lobes used.
    null_repeats : int
    n_not_converged : int
        Logistic-regression fits that hit ``max_iter``.
    note : str
        Why the test did not run, if it did not.
    split_repeats : int
        Independent stratified splits (each with its own seed); ``bal_acc`` is their mean.
    bal_acc_splits : list of float
        The accuracy of each split (its own spread across splits).
    bal_acc_sd : float or None
        Their standard deviation (ddof=1).
    sigma_null_only : float or None
        ``(bal_acc - null_mean) / null_std``: the old statistic, which ignores the accuracy's own spread.

    ``sigma`` compares the two distributions: ``(bal_acc - null_mean) / sqrt(bal_acc_sd^2 + null_std^2)``
    (each null repeat uses one of the splits in turn).
    """

    bal_acc: float | None = None
    null_mean: float | None = None
    null_std: float | None = None
    sigma: float | None = None
    p: float | None = None
    n_used: int = 0
    n_dropped: int = 0
    n_classes: int = 0
    null_repeats: int = 0
    n_not_converged: int = 0
    note: str = ""
    split_repeats: int = 1
    bal_acc_splits: list[float] = field(default_factory=list)
    bal_acc_sd: float | None = None
    sigma_null_only: float | None = None


@dataclass(eq=False)
class GenreTable(ArrayEq):
    """Held-out genre x winning-lobe contingency table of one lobe labeling.

    Attributes
    ----------
    genres : list of str
        Row names, sorted.
    n_lobes : int
        Columns (lobes ``0..n_lobes-1``).
    table : ndarray of int64, shape (n_genres, n_lobes)
        Held-out blocks of each genre won by each lobe.
    n_blocks : int
        Held-out blocks.
    n_silent : int
        Held-out blocks in which no labelled feature fired (left out of the table).
    chi2, dof, p : float, int, float or None
        Chi-square statistic of the non-empty rows and columns (None when < 2 x 2) and the p-value
        reported: the asymptotic chi-square p when every expected count is >= 5, otherwise the
        permutation p (``p_method`` says which).
    p_chi2 : float or None
        The asymptotic chi-square p (not valid when ``min_expected`` < 5).
    p_permutation : float or None
        ``(1 + #{chi2(permuted) >= chi2}) / (1 + n_permutations)``, genres permuted over the blocks
        (both margins kept).
    min_expected : float or None
        Smallest expected count under independence.
    p_method : str
        ``"chi-square"`` or ``"permutation"``.
    cramers_v : float or None
        ``sqrt(chi2 / (n (min(r, c) - 1)))``.
    majority : dict str -> int or None
        Each genre's most frequent winning lobe (None for a genre without blocks).
    note : str
        Why no test was run, if none was.
    affinity : str
        The labeling's affinity (set by the analysis; ``""`` for a bare call).
    n_clusters : int
        The labeling's n_clusters (set by the analysis; 0 for a bare call).
    """

    genres: list[str]
    n_lobes: int
    table: np.ndarray
    n_blocks: int
    n_silent: int
    chi2: float | None = None
    dof: int | None = None
    p: float | None = None
    cramers_v: float | None = None
    majority: dict[str, int | None] = field(default_factory=dict)
    note: str = ""
    affinity: str = ""
    n_clusters: int = 0
    p_chi2: float | None = None
    p_permutation: float | None = None
    n_permutations: int = 0
    min_expected: float | None = None
    p_method: str = ""


def _entropy_counts(cnt: np.ndarray) -> float:
    pi = cnt[cnt > 0].astype(np.float64)
    s = pi.sum()
    return float(-np.sum((pi / s) * (np.log(pi) - np.log(s))))


def null_summary(true: float, null: np.ndarray) -> tuple[float | None, float | None, float | None, float]:
    """``(null_mean, null_std, sigma, p)`` of a value against null draws (std ddof=1; p counts ties)."""
    null = np.asarray(null, dtype=np.float64)
    mean = float(null.mean()) if null.size else None
    std = float(null.std(ddof=1)) if null.size > 1 else None
    sigma = (true - mean) / std if (std is not None and std > 0) else None
    p = (1.0 + float(np.sum(null >= true))) / (1.0 + null.size)
    return finite_or_none(mean), finite_or_none(std), finite_or_none(sigma), p


def _ami_null(a: np.ndarray, b: np.ndarray, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """AMI of ``a`` permuted against ``b``: marginals (entropies, expected MI) computed once."""
    from sklearn.metrics import adjusted_mutual_info_score, mutual_info_score

    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    ai, bi = ai.ravel().astype(np.int64), bi.ravel().astype(np.int64)
    ka, kb = int(ai.max()) + 1, int(bi.max()) + 1
    try:
        from sklearn.metrics.cluster._expected_mutual_info_fast import expected_mutual_information
    except ImportError:  # pragma: no cover - private helper moved: fall back to the public function
        expected_mutual_information = None
    null = np.empty(n_perm)
    if ka == 1 or kb == 1 or expected_mutual_information is None:
        for i in range(n_perm):
            null[i] = adjusted_mutual_info_score(a[rng.permutation(a.size)], b)
        return null
    cont = np.bincount(ai * kb + bi, minlength=ka * kb).reshape(ka, kb)
    emi = float(expected_mutual_information(sparse.csr_matrix(cont), int(a.size)))
    norm = 0.5 * (_entropy_counts(cont.sum(axis=1)) + _entropy_counts(cont.sum(axis=0)))
    eps = np.finfo("float64").eps
    den = min(norm - emi, -eps) if norm - emi < 0 else max(norm - emi, eps)
    for i in range(n_perm):
        p = ai[rng.permutation(a.size)]
        mi = mutual_info_score(None, None, contingency=np.bincount(p * kb + bi, minlength=ka * kb).reshape(ka, kb))
        num = mi - emi
        num = min(num, -eps) if num < 0 else max(num, eps)
        null[i] = num / den
    return null


def ami_test(labels_a: np.ndarray, labels_b: np.ndarray, *, n_permutations: int = 100,
             seed: int | np.random.Generator | None = 0, return_null: bool = False) -> AmiTest:
    """Adjusted mutual information between two labelings against a seeded permutation null.

    The AMI is scikit-learn's (arithmetic normalisation).  The null permutes ``labels_a``
    ``n_permutations`` times; the marginals — hence the entropies and the expected mutual
    information — do not change under permutation, so they are computed once and each null draw
    costs one contingency table.

    Parameters
    ----------
    labels_a, labels_b : ndarray of shape (n,)
    n_permutations : int, default=100
    seed : int or Generator, default=0
    return_null : bool, default=False
        Keep the null draws in ``AmiTest.null``.

    Returns
    -------
    AmiTest

    Examples
    --------
    >>> import numpy as np
    >>> t = ami_test(np.repeat([0, 1], 50), np.repeat([0, 1], 50), n_permutations=20)
    >>> round(t.ami, 3), t.p
    (1.0, 0.047619047619047616)
    """
    from sklearn.metrics import adjusted_mutual_info_score

    a = np.asarray(labels_a)
    b = np.asarray(labels_b)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise InputError(f"labels: expected two 1-D labelings of the same length >= 2. Got shapes {a.shape} and "
                         f"{b.shape} instead.")
    n_perm = int_at_least("n_permutations", n_permutations, 1)
    rng = resolve_rng(seed)
    true = float(adjusted_mutual_info_score(a, b))
    null = _ami_null(a, b, n_perm, rng)
    mean, std, sigma, p = null_summary(true, null)
    return AmiTest(ami=true, null_mean=mean, null_std=std, sigma=sigma, p=p, n_permutations=n_perm,
                   null=null if return_null else None)


def _logreg_splits(Xk: np.ndarray, yk: np.ndarray, test_size: float, folds: int | None, seed: int):
    from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

    if folds is None:
        return list(StratifiedShuffleSplit(1, test_size=test_size, random_state=seed).split(Xk, yk))
    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(Xk, yk))


def logreg_test(X: np.ndarray, labels: np.ndarray, *, test_size: float = 0.2, folds: int | None = None,
                null_repeats: int = 20, seed: int = 0, max_iter: int = 200, C: float = 1.0,
                split_repeats: int = 10) -> LogregTest:
    """Balanced accuracy of a logistic regression predicting ``labels`` from the rows of ``X``.

    One shuffled, stratified ``test_size`` split (or ``folds``-fold stratified cross-validation, the
    mean over folds).  The null refits on ``null_repeats`` random standard-Gaussian matrices of the
    same shape carrying the same labels and splits (seeded).  Lobes with fewer members than a split
    needs are left out and counted (``n_dropped``); when the split is impossible (more lobes than
    test rows) the accuracy fields are None with a ``note``.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Decoder rows.
    labels : ndarray of shape (n,)
    test_size : float, default=0.2
    folds : int, optional
        Cross-validation folds instead of one split.
    null_repeats : int, default=20
    seed : int, default=0
    max_iter : int, default=200
    C : float, default=1.0
        Inverse regularisation strength.
    split_repeats : int, default=10
        Independent splits; the accuracy is their mean and its spread enters ``sigma``.

    Returns
    -------
    LogregTest
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(labels)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise InputError(f"X, labels: expected [n, d] rows and n labels. Got shapes {X.shape} and {y.shape} instead.")
    null_repeats = int_at_least("null_repeats", null_repeats, 0)
    split_repeats = int_at_least("split_repeats", split_repeats, 1)
    seed = check_seed(seed)
    if not (0 < test_size < 1):
        raise InputError(f"test_size: expected a fraction in (0, 1). Got {test_size!r} instead.")
    need = 2 if folds is None else int_at_least("folds", folds, 2)
    uniq, cnt = np.unique(y, return_counts=True)
    keep = np.isin(y, uniq[cnt >= need])
    out = LogregTest(n_used=int(keep.sum()), n_dropped=int((~keep).sum()), null_repeats=null_repeats)
    Xk, yk = X[keep], y[keep]
    out.n_classes = int(np.unique(yk).size)
    if out.n_classes < 2:
        out.note = "fewer than 2 lobes with enough members for a stratified split"
        return out
    try:
        split_sets = [_logreg_splits(Xk, yk, test_size, folds, seed if i == 0 else
                                     int(seed_sequence(seed, 202, i).integers(2**31)))
                      for i in range(split_repeats)]
    except ValueError as e:
        out.note = f"split impossible: {' '.join(str(e).split())}"
        return out
    out.split_repeats = split_repeats

    def score(data: np.ndarray, splits) -> float:
        accs = []
        for tr, te in splits:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                clf = LogisticRegression(C=C, max_iter=max_iter).fit(data[tr], yk[tr])
            out.n_not_converged += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # predictions of lobes absent from a small test fold
                accs.append(balanced_accuracy_score(yk[te], clf.predict(data[te])))
        return float(np.mean(accs))

    with threads_for(float(Xk.size) * out.n_classes):
        accs = np.array([score(Xk, sp) for sp in split_sets])
        null = np.array([score(seed_sequence(seed, 101, r).standard_normal(Xk.shape, dtype=np.float32),
                               split_sets[r % split_repeats]) for r in range(null_repeats)])
    out.bal_acc = float(accs.mean())
    out.bal_acc_splits = [float(a) for a in accs]
    out.bal_acc_sd = finite_or_none(accs.std(ddof=1)) if accs.size > 1 else None
    if null_repeats:
        out.null_mean, out.null_std, out.sigma_null_only, out.p = null_summary(out.bal_acc, null)
        spread = np.sqrt((out.bal_acc_sd or 0.0) ** 2 + (out.null_std or 0.0) ** 2)
        out.sigma = finite_or_none((out.bal_acc - out.null_mean) / spread) if spread > 0 else None
    return out


def _chi2_stat(t: np.ndarray) -> float:
    e = t.sum(axis=1, keepdims=True) * t.sum(axis=0, keepdims=True) / t.sum()
    return float(np.sum((t - e) ** 2 / e))


def lobe_genre_table(firing_heldout: Any, genres: Sequence[str], labels: np.ndarray, *,
                     columns: np.ndarray | None = None, n_permutations: int = 2000, seed: int = 0) -> GenreTable:
    """Which lobe wins each held-out block, tabulated against the blocks' genres.

    A block's winning lobe is the one with the largest fraction of its features firing in the block
    (ties: the lower lobe id); blocks where no labelled feature fires are counted as ``n_silent``
    and left out.  The genre x lobe table (genres sorted, lobes ``0..m-1``) gets a chi-square test
    (``scipy.stats.chi2_contingency`` on the non-empty rows and columns) and Cramer's V
    ``sqrt(chi2 / (n (min(r, c) - 1)))``; each genre's majority lobe is its row's argmax.

    Parameters
    ----------
    firing_heldout : sparse or dense (n_blocks, n_columns) 0/1
        Blocks NOT used to find the lobes.
    genres : sequence of str, length n_blocks
    labels : ndarray of int, shape (n_labelled,)
        Lobe of each labelled feature.
    columns : ndarray of int, optional
        Column of ``firing_heldout`` for each labelled feature (default ``arange(n_labelled)``).
    n_permutations : int, default=2000
        Permutations of the genres over the non-silent blocks for the permutation p-value.
    seed : int, default=0

    Returns
    -------
    GenreTable
    """
    from scipy.stats import chi2_contingency

    f = Firing(firing_heldout, "firing_heldout")
    g = np.asarray(genres).astype(str)
    if g.shape != (f.n_blocks,):
        raise InputError(f"genres_heldout: expected one genre per held-out block ({f.n_blocks}). "
                         f"Got {g.shape[0] if g.ndim else 0} instead.")
    lab = np.asarray(labels).astype(np.int64)
    cols = np.arange(lab.size) if columns is None else np.asarray(columns, dtype=np.int64)
    if cols.shape != lab.shape or (cols.size and (cols.min() < 0 or cols.max() >= f.n_features)):
        raise InputError(f"columns: expected one firing column in [0, {f.n_features}) per label. "
                         f"Got {cols.size} columns for {lab.size} labels instead.")
    m = int(lab.max()) + 1 if lab.size else 0
    sizes = np.bincount(lab, minlength=m).astype(np.float64)
    onehot = sparse.csr_matrix((np.ones(lab.size), (np.arange(lab.size), lab)), shape=(lab.size, m))
    hits = np.asarray((f.csr()[:, cols].astype(np.float64) @ onehot).todense())
    frac = hits / np.where(sizes > 0, sizes, 1.0)[None, :]
    silent = hits.sum(axis=1) == 0
    win = frac.argmax(axis=1)
    gnames = sorted(set(g.tolist()))
    gi = np.searchsorted(gnames, g)
    table = np.zeros((len(gnames), m), dtype=np.int64)
    np.add.at(table, (gi[~silent], win[~silent]), 1)
    row_tot = table.sum(axis=1)
    out = GenreTable(genres=gnames, n_lobes=m, table=table, n_blocks=int(f.n_blocks), n_silent=int(silent.sum()),
                     majority={name: (int(table[i].argmax()) if row_tot[i] else None) for i, name in enumerate(gnames)})
    if len(gnames) < 2:
        out.note = f"a single genre ({gnames[0] if gnames else 'none'}): no genre x lobe test"
        return out
    t = table[row_tot > 0][:, table.sum(axis=0) > 0]
    if t.shape[0] < 2 or t.shape[1] < 2:
        out.note = f"only {t.shape[0]} genre(s) and {t.shape[1]} lobe(s) with blocks: no chi-square test"
        return out
    chi2, p, dof, expected = chi2_contingency(t, correction=False)
    out.chi2, out.p_chi2, out.dof = finite_or_none(chi2), finite_or_none(p), int(dof)
    out.min_expected = float(expected.min())
    out.cramers_v = finite_or_none(np.sqrt(chi2 / (t.sum() * (min(t.shape) - 1))))
    rows_keep, cols_keep = np.flatnonzero(row_tot > 0), np.flatnonzero(table.sum(axis=0) > 0)
    gk, wk = np.searchsorted(rows_keep, gi[~silent]), np.searchsorted(cols_keep, win[~silent])
    rng = np.random.default_rng(check_seed(seed))
    n_perm = int_at_least("n_permutations", n_permutations, 0)
    if n_perm:
        stat = _chi2_stat(t.astype(np.float64))
        hits_ = 0
        for _ in range(n_perm):
            tp = np.zeros(t.shape)
            np.add.at(tp, (rng.permutation(gk), wk), 1)
            hits_ += _chi2_stat(tp) >= stat * (1 - 1e-12)
        out.p_permutation, out.n_permutations = (1 + hits_) / (1 + n_perm), n_perm
    if out.min_expected >= 5 or out.p_permutation is None:
        out.p, out.p_method = out.p_chi2, "chi-square"
        if out.min_expected < 5:
            out.note = (f"chi-square p not valid: smallest expected count {out.min_expected:.2f} < 5 "
                        "(no permutations asked for)")
    else:
        out.p, out.p_method = out.p_permutation, "permutation"
    return out


def split_by_document(doc_ids: np.ndarray, heldout_fraction: float = 0.2, *, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of training and held-out blocks, held out by whole documents (seeded).

    Blocks of one document never straddle the split, so the lobe -> genre table is measured on text
    the clustering never saw.

    Parameters
    ----------
    doc_ids : ndarray of shape (n_blocks,)
        The document of each block.
    heldout_fraction : float in (0, 1), default=0.2
        Fraction of documents held out (at least one, at most all but one).
    seed : int, default=0

    Returns
    -------
    train, heldout : ndarray of int
        Block indices.
    """
    d = np.asarray(doc_ids)
    if d.ndim != 1 or d.size < 2:
        raise InputError(f"doc_ids: expected a 1-D array of at least 2 block document ids. "
                         f"Got shape {d.shape} instead.")
    if not (0 < heldout_fraction < 1):
        raise InputError(f"heldout_fraction: expected a fraction in (0, 1). Got {heldout_fraction!r} instead.")
    docs = np.unique(d)
    if docs.size < 2:
        raise InputError("doc_ids: all blocks come from one document; expected at least 2 documents to hold some "
                         "out (or heldout_fraction=0)")
    rng = seed_sequence(check_seed(seed), 41)
    n_held = min(docs.size - 1, max(1, int(round(heldout_fraction * docs.size))))
    held_docs = rng.choice(docs, size=n_held, replace=False)
    mask = np.isin(d, held_docs)
    return np.flatnonzero(~mask), np.flatnonzero(mask)


__all__ = ["AmiTest", "LogregTest", "GenreTable", "ami_test", "logreg_test", "lobe_genre_table",
           "split_by_document", "null_summary"]
