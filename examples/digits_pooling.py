"""What the choice of pooling does to a small CNN, on scikit-learn's digits.

Five small Flax Linen CNNs, trained with optax's Adam on the same split and
seed, differ only in how they downsample:

1. max pooling 2x2, stride 2;
2. overlapping max pooling 3x3, stride 2, padding 1 (as AlexNet);
3. average pooling 2x2, stride 2;
4. no pooling: a 3x3 stride-2 convolution instead (the All-Convolutional Net,
   Springenberg et al. 2014, "Striving for Simplicity: The All Convolutional
   Net");
5. a spatial pyramid pooling head, levels 1, 2, 4 (SPPNet, He et al. 2014,
   "Spatial Pyramid Pooling in Deep Convolutional Networks for Visual
   Recognition"), which maps a feature map of any size to the same length,
   so one set of weights takes every image size: it trains on batches of
   mixed sizes and is tested on those sizes and on sizes it never saw.

The 8x8 digits (1,797 images, inside scikit-learn: nothing is downloaded) are
resized with ``jax.image.resize``. Models 1-4 end in a flatten and a dense
layer, so each takes one size only (``--size``). Training time includes
compilation.

Run from the repository root:
  python3 -m pip install -e ".[examples]"
  python3 examples/digits_pooling.py
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from sklearn import datasets
from sklearn import model_selection
from tqdm import tqdm

from jaxpool import linen as jpl

#: The sizes the SPP model trains on; it is also tested on those in between.
TRAIN_SIZES = (16, 24, 32, 40)
TEST_SIZES = (16, 20, 24, 28, 32, 36, 40)


class CNN(nn.Module):
  """Two 3x3 convolutions, each followed by a downsampling, then a classifier.

  Attributes:
    pool: the downsampling module; ``None`` for a 3x3 stride-2 convolution.
    spp_levels: if given, the second downsampling and the flatten are one
      spatial pyramid pooling with these levels, so any size goes in.
    features: the channels of the two convolutions.
  """

  pool: nn.Module | None
  spp_levels: Sequence[int] | None = None
  features: Sequence[int] = (16, 32)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, features in enumerate(self.features):
      x = nn.relu(nn.Conv(features, (3, 3))(x))
      if self.spp_levels is not None and i == len(self.features) - 1:
        x = jpl.SpatialPyramidPool(self.spp_levels)(x)
      elif self.pool is None:
        x = nn.relu(nn.Conv(features, (3, 3), strides=2)(x))
      else:
        x = self.pool(x)
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


@dataclasses.dataclass
class Variant:
  """A model to compare, and the image sizes it trains on."""

  name: str
  model: CNN
  train_sizes: tuple[int, ...]


def variants(size: int) -> list[Variant]:
  """The five models, in the order of the module docstring."""
  fixed = (size,)
  return [
      Variant("max 2x2/2", CNN(jpl.MaxPool((2, 2))), fixed),
      Variant("overlapping max 3x3/2", CNN(jpl.MaxPool((3, 3), 2, 1)), fixed),
      Variant("avg 2x2/2", CNN(jpl.AvgPool((2, 2))), fixed),
      Variant("all-conv (stride-2 conv)", CNN(None), fixed),
      Variant("SPP (1, 2, 4) head", CNN(jpl.MaxPool((2, 2)), (1, 2, 4)),
              TRAIN_SIZES),
  ]


def load_digits(sizes: Sequence[int], seed: int):
  """The digits split 80/20 (stratified), resized to each of ``sizes``.

  Returns:
    ``(train, test)``, each a dict from size to images ``(n, size, size, 1)``
    in [0, 1], and ``(train_labels, test_labels)``.
  """
  digits = datasets.load_digits()
  images = digits.images.astype(np.float32)[..., None] / 16.0
  x_train, x_test, y_train, y_test = model_selection.train_test_split(
      images, digits.target, test_size=0.2, random_state=seed,
      stratify=digits.target)

  def resize(x, s):
    return np.asarray(jax.image.resize(x, (len(x), s, s, 1), "linear"))

  train = {s: resize(x_train, s) for s in sizes}
  test = {s: resize(x_test, s) for s in sizes}
  return train, test, (y_train, y_test)


def train(variant: Variant, images: dict[int, np.ndarray],
          labels: np.ndarray, epochs: int, batch_size: int, seed: int) -> dict:
  """Trains with Adam and a cosine decay; batches take the sizes in turn.

  Returns:
    the trained parameters.
  """
  model, sizes = variant.model, variant.train_sizes
  params = model.init(jax.random.key(seed), images[sizes[0]][:1])["params"]
  steps = epochs * (len(labels) // batch_size)
  optimizer = optax.adam(optax.cosine_decay_schedule(3e-3, steps))
  opt_state = optimizer.init(params)

  def loss_fn(params, x, y):
    logits = model.apply({"params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  with tqdm(total=steps, desc=variant.name, unit="step") as progress:
    for _ in range(epochs):
      order = rng.permutation(len(labels))
      for start in range(0, len(labels) - batch_size + 1, batch_size):
        idx = order[start:start + batch_size]
        size = sizes[progress.n % len(sizes)]
        params, opt_state, loss = step(params, opt_state, images[size][idx],
                                       labels[idx])
        progress.update()
    progress.set_postfix(loss=f"{float(loss):.3f}")
  return params


def accuracy(model: CNN, params: dict, images: np.ndarray,
             labels: np.ndarray) -> float:
  logits = jax.jit(model.apply)({"params": params}, images)
  return float(np.mean(np.argmax(logits, -1) == labels))


def main(argv: Sequence[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", type=int, default=24,
                      help="image size for the fixed-size models 1-4")
  parser.add_argument("--epochs", type=int, default=15)
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  start_all = time.perf_counter()
  sizes = sorted(set(TEST_SIZES) | {args.size})
  train_images, test_images, (y_train, y_test) = load_digits(sizes, args.seed)
  results = []
  for variant in variants(args.size):
    start = time.perf_counter()
    params = train(variant, train_images, y_train, args.epochs,
                   args.batch_size, args.seed)
    seconds = time.perf_counter() - start
    eval_sizes = TEST_SIZES if len(variant.train_sizes) > 1 else (args.size,)
    results.append(dict(
        name=variant.name,
        params=sum(p.size for p in jax.tree.leaves(params)),
        seconds=seconds,
        accuracy={s: accuracy(variant.model, params, test_images[s], y_test)
                  for s in eval_sizes},
        train_sizes=variant.train_sizes))
  print_table(results, args.size, len(y_train), len(y_test), args.epochs)
  print(f"\ntotal {time.perf_counter() - start_all:.0f} s")
  return results


def print_table(results: list[dict], size: int, n_train: int, n_test: int,
                epochs: int) -> None:
  print(f"\ndigits: {n_train} train / {n_test} test images, {epochs} epochs, "
        f"Adam; models 1-4 at {size}x{size} px\n")
  print(f"| # | model | params | train s (with compile) | "
        f"test acc at {size} px |")
  print("|---|---|---:|---:|---:|")
  for i, r in enumerate(results, 1):
    print(f"| {i} | {r['name']} | {r['params']:,} | {r['seconds']:.1f} | "
          f"{100 * r['accuracy'][size]:.1f}% |")
  for r in results:
    if len(r["accuracy"]) > 1:
      seen = set(r["train_sizes"])
      print(f"\n{r['name']}: one set of weights, trained on sizes "
            f"{', '.join(map(str, r['train_sizes']))} (* = not seen in "
            f"training)\n")
      print("| size | " + " | ".join(
          f"{s}{'' if s in seen else '*'}" for s in r["accuracy"]) + " |")
      print("|---" * (len(r["accuracy"]) + 1) + "|")
      print("| test acc | " + " | ".join(
          f"{100 * a:.1f}%" for a in r["accuracy"].values()) + " |")


if __name__ == "__main__":
  main()
