"""Task 4 of the report (explanations): what ``report/_explain.qmd`` shows, from the cache entries.

:func:`explain_section` reads the Task 4 entry (and the Task 1 entries it explains) and
returns the numbers, display tables, figure inputs and sentences of the section. The
sentence helpers take small tables, so each branch of a conditional sentence can be tested
on its own.

Sentences that carry a citation or a cross-reference are returned as Markdown
(:func:`pneumo.report.tables.markdown`) so that Quarto resolves them.

Modules
-------
builder
    The section function, which puts the parts below together.
names
    How methods and networks read in a sentence; the network the figures show.
images
    The chosen images, their labels, and the arrays each figure shows.
sanity
    The randomisation test and the deletion/insertion curves against a random order.
regions
    Where Grad-CAM's mass falls: lungs, border frame, elsewhere; shortcut sentences.
layers
    Grad-CAM across depth, and the last block's class-separating channels.
"""

from __future__ import annotations

from pneumo.report.explain.builder import explain_section
from pneumo.report.explain.images import image_labels, missing_groups_text
from pneumo.report.explain.layers import (
    block_shares,
    class_channel_table,
    depth_conclusion,
    depth_text,
    gradcam_blocks,
    neuron_text,
)
from pneumo.report.explain.names import SHOWN, method_list, method_name
from pneumo.report.explain.regions import (
    REGIONS,
    border_by_class,
    class_text,
    data_text,
    extra_text,
    lung_text,
    region_summary,
    region_table,
    shortcut_text,
)
from pneumo.report.explain.sanity import (
    RHO_CUTOFF,
    beat_text,
    beats_random,
    head_text,
    method_table,
    pass_text,
    passing_methods,
    randomisation_text,
)

__all__ = ["explain_section", "method_name", "method_list", "missing_groups_text", "image_labels",
           "gradcam_blocks", "method_table", "beats_random", "beat_text", "passing_methods", "pass_text",
           "randomisation_text", "head_text", "region_summary", "region_table", "class_text", "lung_text",
           "extra_text", "shortcut_text", "border_by_class", "block_shares", "depth_text", "depth_conclusion",
           "class_channel_table", "neuron_text", "data_text", "REGIONS", "SHOWN", "RHO_CUTOFF"]
