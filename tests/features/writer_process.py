"""A feature-cache writer run as its own process by the concurrency and kill tests.

    python writer_process.py CACHE IMAGES SHARD_SIZE DELAY_S OUT.npy

Extracts random-vit global features of every JPEG under IMAGES (sorted) with batch 2 and no decode
workers, each forward slowed by DELAY_S so that the tests can act while a shard is being written;
saves the features to OUT.npy and prints the cache's stats as JSON.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

from dermbench.data.sample import Sample
from dermbench.features import FeatureCache
from dermbench.models import registry

cache, images, shard_size, delay, out = sys.argv[1:6]
backbone = registry.build("random-vit", weights="random")
forward_global = backbone.forward_global


def slow_forward_global(x):
    time.sleep(float(delay))
    return forward_global(x)


backbone.forward_global = slow_forward_global
samples = [Sample(id=p.stem, image=p) for p in sorted(Path(images).glob("*.jpg"))]
fc = FeatureCache(Path(cache), workers=0, shard_size=int(shard_size))
features = fc.get(backbone, samples, kind="global", batch_size=2)
np.save(out, features)
print(json.dumps(fc.stats))
