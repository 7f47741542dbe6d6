"""Masked and ragged pooling: a padded-sequence head and a graph readout.

1. Sequences of different lengths, padded to one length with junk tokens,
   classified by a small Flax Linen model whose head pools over time:
   ``GlobalMaxPool`` and ``GlobalAvgPool`` with the padding mask given at
   the call, against the same heads that pool the padding too. The label
   (does the sequence hold token 1?) depends only on the real tokens, and
   the padding is full of 1s, so a head that pools padding cannot learn it.
2. Small random graphs packed into one array of nodes (PyTorch Geometric's
   ``x, batch``), classified by a per-node MLP and a readout,
   ``jaxpool.graph.global_max_pool`` or ``global_mean_pool``, with the
   number of graphs static under ``jit``. The label (does the graph have a
   node whose feature exceeds 2?) is a max over nodes: the max readout
   learns it, the mean readout less well.

Each model trains with optax's Adam for a few hundred steps on CPU (well
under a minute in all). Run, from the repository root::

  python3 -m pip install -e ".[examples]"
  python3 examples/masked_and_graph.py
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxpool import graph
from jaxpool.linen import GlobalAvgPool, GlobalMaxPool

VOCAB, STEPS = 8, 24


def sequences(rng: np.random.Generator, n: int):
  """Token sequences of lengths 4..STEPS, padded with 1s; label: holds a 1."""
  lengths = rng.integers(4, STEPS + 1, n)
  tokens = rng.integers(2, VOCAB, (n, STEPS))
  has_one = rng.random(n) < 0.5
  where = (rng.random(n) * lengths).astype(int)
  tokens[has_one, where[has_one]] = 1
  mask = np.arange(STEPS)[None, :] < lengths[:, None]
  tokens[~mask] = 1  # junk that looks like the answer
  return tokens, mask, has_one.astype(np.int32)


class SequenceHead(nn.Module):
  pool: str
  masked: bool

  @nn.compact
  def __call__(self, tokens, mask):
    h = nn.relu(nn.Dense(16)(nn.Embed(VOCAB, 16)(tokens)))
    pool = GlobalMaxPool() if self.pool == "max" else GlobalAvgPool()
    # The (N, T) mask broadcasts over the channels of (N, T, C).
    h = pool(h, mask if self.masked else None)
    return nn.Dense(2)(h)


def graphs(rng: np.random.Generator, n: int):
  """``n`` graphs of 2..12 nodes with one feature; label: a node above 2."""
  sizes = rng.integers(2, 13, n)
  batch = np.repeat(np.arange(n), sizes)
  x = rng.standard_normal((len(batch), 1)).astype(np.float32)
  labels = np.zeros(n, np.int32)
  np.maximum.at(labels, batch, (x[:, 0] > 2).astype(np.int32))
  return x, batch, labels


class GraphModel(nn.Module):
  readout: str
  num_graphs: int

  @nn.compact
  def __call__(self, x, batch):
    h = nn.Dense(16)(nn.relu(nn.Dense(16)(x)))
    pool = graph.global_max_pool if self.readout == "max" else (
        graph.global_mean_pool)
    return nn.Dense(2)(pool(h, batch, self.num_graphs))


def train(model, inputs, labels, test_inputs, test_labels, steps, seed=0):
  params = model.init(jax.random.key(seed), *inputs)
  tx = optax.adam(1e-2)
  state = tx.init(params)

  def loss(params, inputs, labels):
    logits = model.apply(params, *inputs)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean()

  @jax.jit
  def step(params, state, inputs, labels):
    grads = jax.grad(loss)(params, inputs, labels)
    updates, state = tx.update(grads, state)
    return optax.apply_updates(params, updates), state

  for _ in range(steps):
    params, state = step(params, state, inputs, labels)
  logits = model.apply(params, *test_inputs)
  return float(jnp.mean(jnp.argmax(logits, -1) == test_labels))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=300)
  args = parser.parse_args()
  rng = np.random.default_rng(0)

  tokens, mask, labels = sequences(rng, 512)
  test = sequences(rng, 512)
  print("Padded sequences, test accuracy of the head:")
  for pool in ("max", "avg"):
    for masked in (True, False):
      acc = train(SequenceHead(pool, masked), (tokens, mask), labels,
                  test[:2], test[2], args.steps)
      print(f"  Global{pool.capitalize()}Pool, "
            f"{'mask at the call' if masked else 'padding pooled too':18s}"
            f" {acc:.3f}")

  x, batch, labels = graphs(rng, 256)
  tx, tbatch, tlabels = graphs(rng, 256)
  print("Graphs, test accuracy of the readout:")
  for readout in ("max", "mean"):
    acc = train(GraphModel(readout, 256), (x, batch), labels,
                (tx, tbatch), tlabels, args.steps)
    print(f"  graph.global_{readout}_pool {acc:.3f}")


if __name__ == "__main__":
  main()
