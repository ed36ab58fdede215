"""The running top K of llmrec.infer.topk against a full sort, blocks fed in any split."""
import numpy as np

from llmrec.infer.topk import RunningTopK, best_k


def test_running_topk_equals_a_full_sort_whatever_the_blocks():
    rng = np.random.default_rng(1)
    for trial in range(300):
        n, m, k = int(rng.integers(1, 30)), int(rng.integers(1, 60)), int(rng.integers(0, 12))
        scores = rng.integers(-3, 3, size=(n, m)).astype(np.float32)  # many exact ties
        scores[rng.random((n, m)) < 0.2] = -np.inf  # left out
        ids = rng.permutation(1000)[:m]
        running = RunningTopK(n, k)
        cuts = [0, *np.sort(rng.integers(0, m, size=3)), m]
        for a, b in zip(cuts, cuts[1:]):
            running.add(scores[:, a:b], ids[a:b])
        rows, got_ids, got_scores, ranks = running.result()
        for i in range(n):
            want = sorted((-scores[i, j], ids[j]) for j in range(m) if np.isfinite(scores[i, j]))[:k]
            mine = rows == i
            assert list(zip(-got_scores[mine], got_ids[mine])) == want, (trial, i)
            assert list(ranks[mine]) == list(range(1, len(want) + 1))


def test_best_k_of_one_matrix():
    scores = np.array([[0.5, 0.9, 0.9, -np.inf], [0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    rows, ids, vals = best_k(scores, np.array([40, 30, 20, 10]), 2)
    assert rows.tolist() == [0, 0, 1, 1]
    assert ids.tolist() == [20, 30, 10, 20]  # the tie at 0.9: the smaller id first
    assert np.allclose(vals, [0.9, 0.9, 0.4, 0.3])


def test_faiss_search_gives_heavy_and_light_users_their_k():
    """One graph, queries whose histories (left out) hold their own nearest items, a few of
    them hundreds long: each query gets k results none of which it left out, close to the
    exact top k, whatever the other queries in its block left out."""
    from types import SimpleNamespace

    from llmrec.infer.topk import _graph, _search

    rng = np.random.default_rng(3)
    c = rng.standard_normal((3000, 8)).astype(np.float32)
    c_ids = rng.permutation(10_000)[:3000].astype(np.int64)
    qv = rng.standard_normal((200, 8)).astype(np.float32)
    scores = qv @ c.T
    order = np.argsort(-scores, axis=1)
    sizes = np.where(np.arange(200) % 50 == 0, 400, rng.integers(0, 6, 200))  # 4 heavy users
    x_rows = np.repeat(np.arange(200), sizes)
    x_ids = np.concatenate([c_ids[order[i, :n]] for i, n in enumerate(sizes)])  # their nearest
    q = SimpleNamespace(ids=np.arange(200), vectors=qv, x_rows=x_rows, x_ids=x_ids)
    rows, ids, _, _ = _search(_graph(c), c_ids, q, 10, ef_search=64).result()
    assert np.bincount(rows, minlength=200).tolist() == [10] * 200
    left_out = set(zip(x_rows.tolist(), x_ids.tolist()))
    assert not [p for p in zip(rows.tolist(), ids.tolist()) if p in left_out]
    want = {(i, int(c_ids[j])) for i, n in enumerate(sizes) for j in order[i, n:n + 10]}
    assert len(want & set(zip(rows.tolist(), ids.tolist()))) / len(want) >= 0.95
