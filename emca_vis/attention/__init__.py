"""Inside the attention: channel scales per stage and EMCA's per-scale weights, recorded and plotted.

    python -m emca_vis.attention [--checkpoint a b c] (--image x.jpg ... | --data shapes --n 256) --out dir/

:mod:`.analysis` accumulates the statistics over a stream of batches; :mod:`.plots` draws
every figure from the resulting JSON.
"""

from .analysis import AttentionStats, analyse, class_selectivity, histogram_entropy
from .plots import all_figures

__all__ = ["AttentionStats", "all_figures", "analyse", "class_selectivity", "histogram_entropy"]
