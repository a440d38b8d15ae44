"""Client data: who holds which samples, written as one ``.npz`` per client.

Each Flower client (a Ray actor in simulation, a SuperNode process in deployment, a hospital in a
real federation) reads only its own file, named by a path in its node config; nothing large is
pickled through Ray or sent by the server. A client file holds::

    name      the client's name (a site task, or client<k> for a Dirichlet share)
    x_train   float32 [n_train, D] frozen global features      y_train  int64 [n_train]
    x_test    float32 [n_test, D]                              y_test   int64 [n_test]
    test_ids  str [n_test] sample ids of the test rows

Two ways to make clients:

- by site (default): one client per site of a federated task card, each keeping its own split;
- Dirichlet(α) label skew: the pooled training data is split into K clients; for every class, the
  class's samples are shared out with proportions drawn from Dir(α·1_K) (seeded). Each client's
  test share uses the same proportions, so it is evaluated on data distributed like its own.
  Small α: strongly non-IID; large α: close to IID.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from dermbench.federated.training import derive_seed


@dataclass(frozen=True)
class ClientData:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    test_ids: np.ndarray

    @property
    def n_train(self) -> int:
        return int(len(self.y_train))

    @property
    def n_test(self) -> int:
        return int(len(self.y_test))


def write_client(path: Path, data: ClientData) -> Path:
    """Write a client file (atomically: a client never sees a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, name=np.array(data.name), x_train=np.asarray(data.x_train, np.float32),
             y_train=np.asarray(data.y_train, np.int64), x_test=np.asarray(data.x_test, np.float32),
             y_test=np.asarray(data.y_test, np.int64), test_ids=np.asarray(data.test_ids, dtype=str))
    tmp.replace(path)
    return path


def read_client(path: str | Path) -> ClientData:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"client data file {p} not found; a client's node config must name its own "
                                f".npz (data-path=...), written by dermbench (see docs/federated.md)")
    stat = p.stat()
    return _read_cached(str(p.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=16)
def _read_cached(path: str, _mtime_ns: int, _size: int) -> ClientData:
    with np.load(path, allow_pickle=False) as z:
        return ClientData(name=str(z["name"]), x_train=z["x_train"], y_train=z["y_train"], x_test=z["x_test"],
                          y_test=z["y_test"], test_ids=z["test_ids"])


def dirichlet_partition(train_labels: np.ndarray, test_labels: np.ndarray, n_clients: int, alpha: float, seed: int,
                        min_train: int = 2, max_tries: int = 1000) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Label-skewed split of train and test indices into ``n_clients`` shares.

    For each class a proportion vector ~ Dir(α·1_K) shares out that class's train samples and, with
    the same proportions, its test samples. Draws are repeated (same seeded stream) until every client
    has at least ``min_train`` training samples. Returns (train index arrays, test index arrays).
    """
    if n_clients < 1:
        raise ValueError(f"clients must be >= 1, got {n_clients}")
    if alpha <= 0:
        raise ValueError(f"dirichlet_alpha must be > 0, got {alpha}")
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    if len(train_labels) < n_clients * min_train:
        raise ValueError(f"{len(train_labels)} training samples cannot give {n_clients} clients "
                         f"{min_train} samples each; use fewer clients")
    rng = np.random.default_rng(derive_seed(seed, "dirichlet", n_clients, alpha))
    classes = np.unique(np.concatenate([train_labels, test_labels]))
    for _ in range(max_tries):
        train_parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        test_parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for c in classes:
            props = rng.dirichlet(np.full(n_clients, float(alpha)))
            for labels, parts in ((train_labels, train_parts), (test_labels, test_parts)):
                members = np.flatnonzero(labels == c)
                members = members[rng.permutation(len(members))]
                cuts = (np.cumsum(props)[:-1] * len(members)).round().astype(int)
                for k, share in enumerate(np.split(members, cuts)):
                    parts[k].append(share)
        train = [np.sort(np.concatenate(p)).astype(np.int64) for p in train_parts]
        if min(len(t) for t in train) >= min_train:
            test = [np.sort(np.concatenate(p)).astype(np.int64) for p in test_parts]
            return train, test
    raise ValueError(f"no Dirichlet(alpha={alpha}) split into {n_clients} clients gave every client "
                     f">= {min_train} training samples in {max_tries} draws; raise dirichlet_alpha or lower clients")
