"""Method 1 of the MM'24 talk: corpus-free domain discovery with a text-to-image generator and CLIP.

* :mod:`~plugin.generative.config`: every knob, validated and frozen.
* :mod:`~plugin.generative.protocols`: the ``Generator`` and ``Encoder`` seams.
* :mod:`~plugin.generative.search`: the iterative top-k search, pure numpy.
* :mod:`~plugin.generative.prompts`: the warm start and prompt edits from WordNet.
* :mod:`~plugin.generative.real`: Stable Diffusion and CLIP from local folders (the ``[generative]`` extra).

The check :mod:`plugin.checks.generative` runs it after the corpus search.
"""
from __future__ import annotations

from plugin.generative.config import GenerativeConfig
from plugin.generative.protocols import Encoder, Generator
from plugin.generative.search import ClassResult, Prompt, Scored, search_class

__all__ = ["ClassResult", "Encoder", "GenerativeConfig", "Generator", "Prompt", "Scored", "search_class"]
