"""APoZ: the Average Percentage of Zeros of each channel's activations.

Hu et al. 2016, "Network Trimming: A Data-Driven Neuron Pruning Approach towards Efficient
Deep Architectures" (arXiv:1607.03250). For a channel ``c`` of a layer's output, measured
after its non-linearity (a ReLU, say)::

    APoZ(c) = (number of zero activations of c) / (number of activations of c)

counted over every sample and every spatial position. A channel that is almost always zero
contributes little, and is a candidate for deletion.

Three pieces, all pure functions on immutable values:

- :func:`apoz`: APoZ of one array that holds every activation at once.
- :class:`ApozCounts`: exact integer counts, updated batch by batch (memory ``O(channels)``),
  filled from counts made elsewhere (a GPU, another framework), and merged across shards or
  workers. Merging is exact: it gives the same counts as one pass over all the data.
- :func:`select_high_apoz`: which channels to delete, by the paper's rule (above mean + k
  std) or by a cutoff or a fraction. It never selects every channel of a layer. (Its former
  core name ``high_apoz`` still works, with a DeprecationWarning;
  :func:`kerasprune.high_apoz` is the Keras function that measures a model and selects
  with it.) :func:`balance_blocks` evens a selection out over a grouped convolution's
  groups.
- :func:`measurement_sites`: where in a :class:`~kerasprune.core.graph.Graph` each layer's
  zeros happen. A layer with a linear activation (``Conv -> BatchNorm -> ReLU``) is measured
  at the first zero-producing layer its channels reach one to one.

Zero means exactly zero (``-0.0`` included); NaN activations are always an error, since a NaN
is neither zero nor a measurement.

Each piece is a module of its own: :mod:`~.counts`, :mod:`~.selection`, :mod:`~.sites`.
"""

from kerasprune.core.apoz.counts import ApozCounts, apoz
from kerasprune.core.apoz.selection import METHODS, balance_blocks, high_apoz, select_high_apoz
from kerasprune.core.apoz.sites import (
    ApozWarning,
    Site,
    SiteCheck,
    measurement_site,
    measurement_sites,
)

__all__ = [
    "METHODS",
    "ApozCounts",
    "ApozWarning",
    "Site",
    "SiteCheck",
    "apoz",
    "balance_blocks",
    "high_apoz",
    "measurement_site",
    "measurement_sites",
    "select_high_apoz",
]
