"""Compiled (numba) KD-tree build and exact k-nearest-neighbour votes behind :mod:`cropseg.neighbors`.

Kept apart so that importing :mod:`cropseg.neighbors` does not import numba; the functions compile on
first use and are cached on disk (``cache=True``), so later processes (and Dask workers) load them. They
release the GIL (``nogil=True``): :mod:`cropseg.neighbors` runs contiguous chunks of the queries on threads.

Distances are squared Euclidean in float64, summed over the features in order, as scikit-learn's KD-tree
computes them (so equal distances compare equal in both).
"""

from __future__ import annotations

import numba as nb
import numpy as np

_STACK = 256  # depth-first stack entries: far children pending on the path, at most the tree's depth


@nb.njit(cache=True, nogil=True)
def build_tree(X, leafsize):
    """A KD-tree over the rows of ``X`` (n, D), float64: each node splits its points at the median of
    their widest dimension; a node of at most ``leafsize`` points is a leaf.

    Returns ``(pts, perm, start, end, split_dim, split_val, left, right)``: ``pts`` holds the points in tree
    order (``pts[i] == X[perm[i]]``), node ``j`` owns ``pts[start[j]:end[j]]``, and has children
    ``left[j]`` (points with ``x[split_dim] <= split_val``) and ``right[j]`` (``x[split_dim] >= split_val``),
    or ``split_dim[j] == -1`` for a leaf."""
    n, D = X.shape
    perm = np.arange(n)
    maxnodes = 2 * n + 1
    start = np.empty(maxnodes, np.int64)
    end = np.empty(maxnodes, np.int64)
    sdim = np.full(maxnodes, -1, np.int64)
    sval = np.zeros(maxnodes, np.float64)
    left = np.full(maxnodes, -1, np.int64)
    right = np.full(maxnodes, -1, np.int64)
    start[0], end[0] = 0, n
    nodes = 1
    stack = np.empty(_STACK, np.int64)
    stack[0] = 0
    sp = 1
    while sp > 0:
        sp -= 1
        node = stack[sp]
        s, e = start[node], end[node]
        if e - s <= leafsize:
            continue
        best, width = 0, -1.0
        for d in range(D):
            lo, hi = np.inf, -np.inf
            for i in range(s, e):
                v = X[perm[i], d]
                lo = min(lo, v)
                hi = max(hi, v)
            if hi - lo > width:
                width, best = hi - lo, d
        if width <= 0.0:  # all points identical: a (large) leaf
            continue
        vals = np.empty(e - s)
        for i in range(s, e):
            vals[i - s] = X[perm[i], best]
        order = np.argsort(vals, kind="mergesort")
        seg = perm[s:e].copy()
        for i in range(e - s):
            perm[s + i] = seg[order[i]]
        mid = s + (e - s) // 2
        sdim[node], sval[node] = best, X[perm[mid], best]
        lft, rgt = nodes, nodes + 1
        nodes += 2
        start[lft], end[lft], start[rgt], end[rgt] = s, mid, mid, e
        left[node], right[node] = lft, rgt
        stack[sp], stack[sp + 1] = lft, rgt
        sp += 2
    pts = np.empty((n, D))
    for i in range(n):
        for d in range(D):
            pts[i, d] = X[perm[i], d]
    return pts, perm, start[:nodes], end[:nodes], sdim[:nodes], sval[:nodes], left[:nodes], right[:nodes]


@nb.njit(cache=True, nogil=True)
def morton_codes(X, lo, scale, bits, out):
    """The Morton (Z-order) code of each row of ``X``: each of the first ``64 // bits`` features is scaled
    to 0..255 over the training data's range (``lo``, ``scale``), its top ``bits`` bits interleaved."""
    n, D = X.shape
    dims = min(D, 64 // bits)
    shift = 8 - bits
    for i in range(n):
        c = np.uint64(0)
        for d in range(dims):
            v = (X[i, d] - lo[d]) * scale[d]
            q = 0 if not v > 0.0 else (255 if v > 255.0 else int(v))  # NaN -> 0
            q >>= shift
            for b in range(bits):
                c |= np.uint64((q >> b) & 1) << np.uint64(b * dims + d)
        out[i] = c


@nb.njit(inline="always")
def _sqdist(pts, i, q, D):
    if D == 4:  # the four PlanetScope bands: straight-line code, same summation order as the loop
        a = pts[i, 0] - q[0]
        b = pts[i, 1] - q[1]
        c = pts[i, 2] - q[2]
        e = pts[i, 3] - q[3]
        return a * a + b * b + c * c + e * e
    s = 0.0
    for d in range(D):
        t = pts[i, d] - q[d]
        s += t * t
    return s


@nb.njit(inline="always")
def _bound_from(pts, idx, n, q, D):
    """Just above the largest distance from ``q`` to the points ``idx[:n]``: at least ``n`` points lie
    within it, so it bounds the search for the ``n`` nearest (points at exactly that distance are kept)."""
    r2 = 0.0
    for t in range(n):
        r2 = max(r2, _sqdist(pts, idx[t], q, D))
    return np.nextafter(r2, np.inf)


@nb.njit(inline="always")
def _search(q, pts, start, end, sdim, sval, left, right, n, hd, hi, node_stack, rd_stack, off_stack, off):
    """The ``n`` nearest points of the tree to ``q`` that are strictly closer than ``hd[n - 1]``: on entry
    ``hd[:n]`` holds the search bound and ``hi[:n]`` -1; on exit ``hd``/``hi`` hold the distances and point
    indices found, nearest first (``hi[t] == -1`` where fewer than ``n`` points lie within the bound).

    Depth-first, nearer child first, pruned with the incremental distance from ``q`` to each node's region
    (Arya & Mount)."""
    D = q.shape[0]
    node_stack[0] = 0
    rd_stack[0] = 0.0
    for d in range(D):
        off_stack[0, d] = 0.0
    sp = 1
    while sp > 0:
        sp -= 1
        node = node_stack[sp]
        rd = rd_stack[sp]
        if rd >= hd[n - 1]:
            continue
        for d in range(D):
            off[d] = off_stack[sp, d]
        while sdim[node] >= 0:
            dim = sdim[node]
            diff = q[dim] - sval[node]
            if diff <= 0.0:
                near, far = left[node], right[node]
            else:
                near, far = right[node], left[node]
            far_rd = rd - off[dim] * off[dim] + diff * diff
            if far_rd < hd[n - 1]:
                node_stack[sp] = far
                rd_stack[sp] = far_rd
                for d in range(D):
                    off_stack[sp, d] = off[d]
                off_stack[sp, dim] = diff
                sp += 1
            node = near
        for i in range(start[node], end[node]):
            dd = _sqdist(pts, i, q, D)
            if dd < hd[n - 1]:
                t = n - 1
                while t > 0 and hd[t - 1] > dd:
                    hd[t] = hd[t - 1]
                    hi[t] = hi[t - 1]
                    t -= 1
                hd[t] = dd
                hi[t] = i


@nb.njit(cache=True, nogil=True)
def vote(Q, pts, labels, start, end, sdim, sval, left, right, k, n_classes, distance_weights, out):
    """For each row of ``Q`` (float64, best sorted so that consecutive rows are close) find its ``k``
    nearest points of the tree and write the class index that wins their vote to ``out``: counts
    (``distance_weights=False``) or sums of ``1 / distance`` (``True``; exact matches take all the weight),
    ties to the smallest class index, as scikit-learn.

    Each search starts bounded by the previous row's ``k`` neighbours (their largest distance to this row:
    at least ``k`` points lie within it), which prunes most of the tree from the first node on."""
    nq, D = Q.shape
    hd = np.empty(k)
    hi = np.full(k, -1, np.int64)
    prev = np.empty(k, np.int64)
    node_stack = np.empty(_STACK, np.int64)
    rd_stack = np.empty(_STACK)
    off_stack = np.zeros((_STACK, D))
    off = np.zeros(D)
    score = np.zeros(n_classes)
    q = np.empty(D)
    for j in range(nq):
        for d in range(D):
            q[d] = Q[j, d]
        bound = _bound_from(pts, prev, k, q, D) if j > 0 else np.inf
        for t in range(k):
            hd[t] = bound
            hi[t] = -1
        _search(q, pts, start, end, sdim, sval, left, right, k, hd, hi, node_stack, rd_stack, off_stack, off)
        for c in range(n_classes):
            score[c] = 0.0
        if distance_weights and hd[0] == 0.0:
            for t in range(k):
                if hd[t] == 0.0:
                    score[labels[hi[t]]] += 1.0
        elif distance_weights:
            for t in range(k):
                score[labels[hi[t]]] += 1.0 / np.sqrt(hd[t])
        else:
            for t in range(k):
                score[labels[hi[t]]] += 1.0
        best = 0
        for c in range(1, n_classes):
            if score[c] > score[best]:
                best = c
        out[j] = best
        for t in range(k):
            prev[t] = hi[t]


@nb.njit(cache=True, nogil=True)
def vote_binary(Q, pts, start, end, sdim, sval, left, right, k, m, out):
    """The uniform ``k``-nearest-neighbour vote between two classes, with one tree per class: each tree
    argument is a pair (class 0's, class 1's) of :func:`build_tree`'s arrays. Writes 0 or 1 per row of
    ``Q`` to ``out``.

    Class 1 wins iff it holds at least ``m`` (1..k) of the ``k`` nearest: ``m = k // 2 + 1`` is the majority
    vote (a tie, even ``k``, goes to class 0 as in scikit-learn); another ``m`` is a decision threshold on
    the vote fraction (crop iff its fraction is above ``(m - 1) / k``). That is iff ``a < b`` where ``a`` is the distance to
    the ``m``-th nearest class-1 point and ``b`` the distance to the ``(k - m + 1)``-th nearest class-0
    point: so each row needs a small search in the tree of the class that likely wins (the previous
    row's, bounded by its neighbours there) and a search in the other tree bounded by that distance,
    which stops early wherever that class is far away. ``a == b`` (training points of both classes
    equally far at the ``k``-th neighbour's distance) is the only case where the answer depends on which
    equidistant points are kept; it goes to class 0."""
    nq, D = Q.shape
    need = (k - m + 1, m)  # points of class 0 / class 1 a search needs
    kk = max(need)
    hd = np.empty(kk)
    hi = np.full(kk, -1, np.int64)
    prev = np.empty((2, kk), np.int64)  # per class: the last neighbours found in its tree
    have = np.zeros(2, np.bool_)
    node_stack = np.empty(_STACK, np.int64)
    rd_stack = np.empty(_STACK)
    off_stack = np.zeros((_STACK, D))
    off = np.zeros(D)
    q = np.empty(D)
    first = 0  # the class searched first: the previous row's
    for j in range(nq):
        for d in range(D):
            q[d] = Q[j, d]
        other = 1 - first
        n1, n2 = need[first], need[other]
        bound = _bound_from(pts[first], prev[first], n1, q, D) if have[first] else np.inf
        for t in range(n1):
            hd[t] = bound
            hi[t] = -1
        _search(
            q,
            pts[first],
            start[first],
            end[first],
            sdim[first],
            sval[first],
            left[first],
            right[first],
            n1,
            hd,
            hi,
            node_stack,
            rd_stack,
            off_stack,
            off,
        )
        prev[first, :n1] = hi[:n1]
        have[first] = True
        dist_first = hd[n1 - 1]
        # the other class wins iff it has n2 points closer than dist_first (class 0: or equally close)
        lim = np.nextafter(dist_first, np.inf) if first == 1 else dist_first
        for t in range(n2):
            hd[t] = lim
            hi[t] = -1
        _search(
            q,
            pts[other],
            start[other],
            end[other],
            sdim[other],
            sval[other],
            left[other],
            right[other],
            n2,
            hd,
            hi,
            node_stack,
            rd_stack,
            off_stack,
            off,
        )
        if hi[n2 - 1] >= 0:  # found: the other class wins, and its neighbours start the next search
            prev[other, :n2] = hi[:n2]
            have[other] = True
            first = other
        out[j] = first


@nb.njit(cache=True, nogil=True)
def kneighbors(Q, pts, labels, start, end, sdim, sval, left, right, k, out_d, out_labels):
    """For each row of ``Q`` (best sorted so that consecutive rows are close) its ``k`` nearest points of
    the tree, nearest first: squared distances to ``out_d`` and labels to ``out_labels`` (both (nq, k)).
    Warm-started like :func:`vote`; cross-validation votes every k of a grid from one such query."""
    nq, D = Q.shape
    hd = np.empty(k)
    hi = np.full(k, -1, np.int64)
    prev = np.empty(k, np.int64)
    node_stack = np.empty(_STACK, np.int64)
    rd_stack = np.empty(_STACK)
    off_stack = np.zeros((_STACK, D))
    off = np.zeros(D)
    q = np.empty(D)
    for j in range(nq):
        for d in range(D):
            q[d] = Q[j, d]
        bound = _bound_from(pts, prev, k, q, D) if j > 0 else np.inf
        for t in range(k):
            hd[t] = bound
            hi[t] = -1
        _search(q, pts, start, end, sdim, sval, left, right, k, hd, hi, node_stack, rd_stack, off_stack, off)
        for t in range(k):
            out_d[j, t] = hd[t]
            out_labels[j, t] = labels[hi[t]]
            prev[t] = hi[t]
