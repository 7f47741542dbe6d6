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
   mixed sizes and is tested on those sizes and on sizes it never saw;
6. blur pooling: a 4x4 binomial blur with stride 2 (Zhang 2019, "Making
   Convolutional Networks Shift-Invariant Again"), in place of the average;
7. max-blur pooling: a 2x2 max with stride 1, then the blur with stride 2
   (Zhang 2019), in place of the max;
8. adaptive polyphase sampling (APS) with stride 2: of the 4 polyphase
   components keep the one of largest norm (Chaman & Dokmanic 2021, "Truly
   shift-invariant convolutional neural networks");
9. generalised-mean (GeM) pooling 2x2/2 with a learned power ``p``
   (Radenovic et al. 2018, "Fine-tuning CNN Image Retrieval with No Human
   Annotation").

Next to the test accuracy, each model's shift consistency (Zhang 2019): the
fraction of test images whose predicted class is the same under two random
shifts of up to ``--max-shift`` px along each axis, circular (the image is
rolled) and crop (the image moves inside its frame, the uncovered border is
background, 0), from ``jaxpool.invariance.shift_consistency``. Every model
sees the same shifts.

Models 1-9 end in a flatten (or the pyramid) and a dense layer, which by
itself ties the prediction to positions. A second group trains max, blur
and APS downsampling in a design meant to be invariant: circular padding in
the convolutions, a third convolution and downsampling (16, 32, 64
channels), and a global average before the dense layer. There APS is
exactly invariant to circular shifts (Chaman & Dokmanic).

A plot (``--plot``) shows ``jaxpool.invariance.feature_shift_error`` of each
model's logits against diagonal shifts of 0 to 8 px, circular and crop.

The 8x8 digits (1,797 images, inside scikit-learn: nothing is downloaded) are
resized with ``jax.image.resize``. Models 1-4 and 6-9 end in a flatten and
a dense layer, so each takes one size only (``--size``). Training time
includes compilation.

Run from the repository root:
  python3 -m pip install -e ".[examples]"
  python3 examples/digits_pooling.py
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import time
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import datasets
from sklearn import model_selection
from tqdm import tqdm

import jaxpool
from jaxpool import invariance
from jaxpool import linen as jpl

#: The sizes the SPP model trains on; it is also tested on those in between.
TRAIN_SIZES = (16, 24, 32, 40)
TEST_SIZES = (16, 20, 24, 28, 32, 36, 40)
#: Diagonal shifts of the feature-error plot, in px.
PLOT_SHIFTS = tuple(range(9))


class GeM(nn.Module):
  """Windowed GeM pooling 2x2/2 whose power ``p`` is learned (from 3)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    p = self.param("p", nn.initializers.constant(3.0), ())
    return jaxpool.gem_pool(x, p, window_shape=(2, 2), strides=2)


class CNN(nn.Module):
  """Two 3x3 convolutions, each followed by a downsampling, then a classifier.

  Attributes:
    pool: the downsampling module; ``None`` for a 3x3 stride-2 convolution.
    spp_levels: if given, the second downsampling and the flatten are one
      spatial pyramid pooling with these levels, so any size goes in.
    features: the channels of the two convolutions.
    head: ``"flatten"`` (the feature map, flattened, into the dense layer)
      or ``"global"`` (its global average).
    padding: the convolutions' padding: ``"SAME"`` (zeros) or
      ``"CIRCULAR"``.
  """

  pool: nn.Module | None
  spp_levels: Sequence[int] | None = None
  features: Sequence[int] = (16, 32)
  head: str = "flatten"
  padding: str = "SAME"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, features in enumerate(self.features):
      x = nn.relu(nn.Conv(features, (3, 3), padding=self.padding)(x))
      if self.spp_levels is not None and i == len(self.features) - 1:
        x = jpl.SpatialPyramidPool(self.spp_levels)(x)
      elif self.pool is None:
        x = nn.relu(nn.Conv(features, (3, 3), strides=2,
                            padding=self.padding)(x))
      else:
        x = self.pool(x)
    if self.head == "global":
      x = jaxpool.global_avg_pool(x)
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


@dataclasses.dataclass
class Variant:
  """A model to compare, and the image sizes it trains on."""

  name: str
  model: CNN
  train_sizes: tuple[int, ...]


def poolings() -> dict[str, Callable[[], nn.Module]]:
  """The downsamplings of rows 1, 6-9, by name: each call a fresh module."""
  return {
      "max 2x2/2": lambda: jpl.MaxPool((2, 2)),
      "blur 4/2": lambda: jpl.BlurPool(4, 2),
      "max-blur 2, 4/2": lambda: jpl.MaxBlurPool(4, 2, window_shape=2),
      "APS /2": lambda: jpl.ApsPool(2),
      "GeM 2x2/2 (learned p)": GeM,
  }


def variants(size: int) -> list[Variant]:
  """The nine models, in the order of the module docstring."""
  fixed = (size,)
  pools = poolings()
  return [
      Variant("max 2x2/2", CNN(jpl.MaxPool((2, 2))), fixed),
      Variant("overlapping max 3x3/2", CNN(jpl.MaxPool((3, 3), 2, 1)), fixed),
      Variant("avg 2x2/2", CNN(jpl.AvgPool((2, 2))), fixed),
      Variant("all-conv (stride-2 conv)", CNN(None), fixed),
      Variant("SPP (1, 2, 4) head", CNN(jpl.MaxPool((2, 2)), (1, 2, 4)),
              TRAIN_SIZES),
  ] + [Variant(name, CNN(make()), fixed)
       for name, make in list(pools.items())[1:]]


#: The downsamplings of the second group, and its convolutions' channels (a
#: third stage, so that the features averaged see most of the digit).
INVARIANT_POOLINGS = ("max 2x2/2", "blur 4/2", "APS /2")
INVARIANT_FEATURES = (16, 32, 64)


def invariant_variants(size: int) -> list[Variant]:
  """Max, blur and APS downsampling in a design meant to be invariant:
  circular padding, three stages, a global-average head."""
  pools = poolings()
  return [Variant(name, CNN(pools[name](), features=INVARIANT_FEATURES,
                            head="global", padding="CIRCULAR"), (size,))
          for name in INVARIANT_POOLINGS]


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


def shift_measures(name: str, model: CNN, params: dict, images: np.ndarray,
                   max_shift: int, seed: int) -> dict:
  """Shift consistency (circular, crop) and the logits' error per shift.

  Every model gets the same key, so the same shifts of the same images.
  """
  apply = jax.jit(functools.partial(model.apply, {"params": params}))
  key = jax.random.key(seed)
  out = {}
  for mode in ("circular", "crop"):
    out[mode] = float(invariance.shift_consistency(
        apply, images, max_shift=max_shift, key=key, mode=mode,
        batch_size=120, progress=f"{name}: {mode} consistency"))
    out[f"{mode} error"] = np.asarray(invariance.feature_shift_error(
        apply, images, np.asarray(PLOT_SHIFTS), mode=mode))
  return out


def evaluate(variant: Variant, train_images, test_images, y_train, y_test,
             args) -> dict:
  start = time.perf_counter()
  params = train(variant, train_images, y_train, args.epochs, args.batch_size,
                 args.seed)
  seconds = time.perf_counter() - start
  eval_sizes = TEST_SIZES if len(variant.train_sizes) > 1 else (args.size,)
  return dict(
      name=variant.name,
      params=sum(p.size for p in jax.tree.leaves(params)),
      seconds=seconds,
      accuracy={s: accuracy(variant.model, params, test_images[s], y_test)
                for s in eval_sizes},
      train_sizes=variant.train_sizes,
      shifts=shift_measures(variant.name, variant.model, params,
                            test_images[args.size], args.max_shift,
                            args.seed))


def main(argv: Sequence[str] | None = None) -> dict[str, list[dict]]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", type=int, default=24,
                      help="image size for the fixed-size models")
  parser.add_argument("--epochs", type=int, default=15)
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--max-shift", type=int, default=4,
                      help="largest shift of the consistency, px per axis")
  parser.add_argument("--plot", default="docs/_static/shift_error.png",
                      help="where to write the feature-error plot ('' for "
                      "none)")
  args = parser.parse_args(argv)

  start_all = time.perf_counter()
  sizes = sorted(set(TEST_SIZES) | {args.size})
  train_images, test_images, (y_train, y_test) = load_digits(sizes, args.seed)
  data = (train_images, test_images, y_train, y_test, args)
  results = {
      "flatten": [evaluate(v, *data) for v in variants(args.size)],
      "global": [evaluate(v, *data) for v in invariant_variants(args.size)],
  }
  print_table(results["flatten"], args.size, len(y_train), len(y_test),
              args.epochs, args.max_shift)
  print_invariant_table(results["global"], args.size)
  if args.plot:
    plot(results, args.plot, args.size)
    print(f"\nplot: {args.plot}")
  print(f"\ntotal {time.perf_counter() - start_all:.0f} s")
  return results


def _pct(value: float) -> str:
  return f"{100 * value:.1f}%"


def print_table(results: list[dict], size: int, n_train: int, n_test: int,
                epochs: int, max_shift: int) -> None:
  print(f"\ndigits: {n_train} train / {n_test} test images, {epochs} epochs, "
        f"Adam; fixed-size models at {size}x{size} px; consistency: shifts "
        f"up to {max_shift} px per axis\n")
  print(f"| # | model | params | train s (with compile) | "
        f"test acc at {size} px | consistency, circular | consistency, "
        f"crop |")
  print("|---|---|---:|---:|---:|---:|---:|")
  for i, r in enumerate(results, 1):
    print(f"| {i} | {r['name']} | {r['params']:,} | {r['seconds']:.1f} | "
          f"{_pct(r['accuracy'][size])} | {_pct(r['shifts']['circular'])} | "
          f"{_pct(r['shifts']['crop'])} |")
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
          _pct(a) for a in r["accuracy"].values()) + " |")


def print_invariant_table(results: list[dict], size: int) -> None:
  print("\nthe same downsamplings with circular padding and a global-average "
        "head\n")
  print(f"| model | params | train s (with compile) | test acc at {size} px | "
        f"consistency, circular | consistency, crop |")
  print("|---|---:|---:|---:|---:|---:|")
  for r in results:
    print(f"| {r['name']} | {r['params']:,} | {r['seconds']:.1f} | "
          f"{_pct(r['accuracy'][size])} | {_pct(r['shifts']['circular'])} | "
          f"{_pct(r['shifts']['crop'])} |")


def plot(results: dict[str, list[dict]], path: str, size: int) -> None:
  """Feature error of the logits against diagonal shift: one panel per head
  (rows) and kind of shift (columns)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  titles = {"flatten": "models 1-9: flatten head, zero padding",
            "global": "global-average head, circular padding"}
  fig, axes = plt.subplots(2, 2, figsize=(11, 8.5), sharex=True)
  for row, (head, group) in enumerate(results.items()):
    for col, mode in enumerate(("circular", "crop")):
      ax = axes[row, col]
      for r in group:
        ax.plot(PLOT_SHIFTS, r["shifts"][f"{mode} error"], marker="o",
                markersize=3, label=r["name"])
      ax.set_title(f"{titles[head]}: {mode} shifts", fontsize=10)
      ax.set_ylim(bottom=0)
      ax.grid(alpha=0.3)
      if row == 1:
        ax.set_xlabel(f"diagonal shift (px) of a {size}x{size} image")
      if col == 0:
        ax.set_ylabel("||f(shift x) - f(x)|| / ||f(x)||, logits")
    axes[row, 1].legend(fontsize=8, loc="upper left",
                        bbox_to_anchor=(1.02, 1.0))
  fig.suptitle("digits: relative change of the logits under shifts "
               "(jaxpool.invariance.feature_shift_error)")
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


if __name__ == "__main__":
  main()
