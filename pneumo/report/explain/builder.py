"""The Task 4 section builder: :func:`explain_section`, what ``report/_explain.qmd`` shows.

It reads the Task 4 entry (and checks it against the Task 1 entries it explains) and puts
together the chosen images (:mod:`.images`), the sanity checks (:mod:`.sanity`), the region
shares (:mod:`.regions`), the layers (:mod:`.layers`), the settings and the time taken.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from pneumo.report.entries import ReportEntry, platform_text, task_entry, where
from pneumo.report.explain.images import _figure_inputs, missing_groups_text
from pneumo.report.explain import layers
from pneumo.report.explain.names import SHOWN, _network
from pneumo.report.explain.regions import _regions, data_text
from pneumo.report.explain.sanity import _sanity
from pneumo.report.section import Section

log = logging.getLogger(__name__)

__all__ = ["explain_section"]


def _phase_seconds(run: Mapping[str, Any]) -> dict[str, float]:
    """Wall time of the whole task and of each kind of phase (summed over the networks)."""
    phases = run.get("phases_s", {})

    def total(suffix):
        return float(sum(v for k, v in phases.items() if k.endswith(suffix)))

    return {"wall": float(run["wall_s"]), "attributions": total("_attributions"),
            "randomisation": total("_randomisation"), "perturbation": total("_perturbation"),
            "neurons": float(phases.get("neurons", 0.0))}


def _check_upstream(explain: ReportEntry, upstream: Mapping[str, ReportEntry]) -> None:
    """Warn when the Task 4 entry explains other networks than the report's Task 1 entries."""
    params = explain.params
    for name, entry in upstream.items():
        key = params.get(f"{name}_entry")
        if key is not None and key != entry.path.name:
            log.warning("explain entry %s explains %s entry %s, but the report shows %s",
                        where(explain), name, key, where(entry))


def explain_section(explain: ReportEntry | None = None, binary: ReportEntry | None = None,
                    multiclass: ReportEntry | None = None) -> Section:
    """Everything the Task 4 section shows: attribution maps, sanity checks, lung shares, neurons.

    Parameters
    ----------
    explain
        The Task 4 entry; None: ``task_entry("explain")``.
    binary, multiclass
        The Task 1a / 1b entries (None: ``task_entry``): the data kind (phantoms or real
        images) is read from Task 1a, and a warning is logged when the Task 4 entry explains
        other networks than these.

    Returns
    -------
    Section
        Numbers (``n``, ``resolution``, ``lung_area``, ``enrichment``, times, settings),
        display tables (``method_table``, ``region_table``, ``class_table``), sentences
        (``rand_text``, ``shortcut_text``, ...; Markdown where they cite) and the inputs of
        every figure (``overlay_images``, ``overlay_maps``, ``curves``, ...).
    """
    explain = explain or task_entry("explain")
    binary = binary or task_entry("binary")
    multiclass = multiclass or task_entry("multiclass")
    _check_upstream(explain, {"binary": binary, "multiclass": multiclass})
    params, metrics = explain.params, explain.metrics
    images, regions = explain.table("images"), explain.table("regions")
    randomisation, channels = explain.table("randomisation"), explain.table("channels")
    class_channels = explain.table("class_channels")
    blocks = layers.gradcam_blocks(regions)
    resolution = int(metrics["resolution"])
    lung_area, border_area = float(metrics[f"{SHOWN}_lung_area"]), float(metrics[f"{SHOWN}_border_area"])
    shares = layers.block_shares(regions)
    fields = channels.drop_duplicates("block")["receptive_field"].astype(int)
    times = _phase_seconds(explain.run)
    synthetic = bool(binary.metrics["data_synthetic"])
    return Section(
        entry=explain, where=where(explain), platform=platform_text(explain),
        binary_entry=str(params["binary_entry"]), multiclass_entry=str(params["multiclass_entry"]),
        synthetic=synthetic, data_text=data_text(synthetic),
        # settings quoted in the text
        per_group=int(params["per_group"]), ig_steps=int(params["ig_steps"]),
        shap_background=int(params["shap_background"]), shap_samples=int(params["shap_samples"]),
        perturbation_steps=int(params["perturbation_steps"]), random_orders=int(params["random_orders"]),
        lung_quantile=float(params["lung_quantile"]), neuron_channels=int(params["neuron_channels"]),
        maxact_steps=int(params["maxact_steps"]), patch_images=int(metrics["patch_images"]),
        # the chosen images
        n=len(images), images=images, missing_text=missing_groups_text(images), resolution=resolution,
        blocks=blocks, depth=len(blocks), last_grid=resolution // 2 ** (len(blocks) - 1),
        lung_area=lung_area, border_area=border_area,
        # sanity checks
        randomisation=randomisation,
        sanity_n=int(randomisation.groupby("network")["relpath"].nunique().max()),
        stages=" → ".join(randomisation.drop_duplicates("stage").sort_values("stage")["randomised"].astype(str)),
        **_sanity(explain.table("methods")),
        # where the attribution falls
        **_regions(explain, lung_area, border_area, int(params["bootstrap"]), int(params["seed"])),
        block_shares=shares, depth_text=layers.depth_text(shares, blocks),
        depth_conclusion=layers.depth_conclusion(shares, blocks),
        # layers and neurons
        neuron_network=_network(metrics["neuron_network"]), field_first=int(fields.iloc[0]),
        field_last=int(fields.iloc[-1]), class_channels=class_channels,
        class_table=layers.class_channel_table(class_channels), neuron_text=layers.neuron_text(class_channels),
        **_figure_inputs(explain.arrays(), images, blocks, channels),
        # time
        wall_s=times["wall"], attribution_s=times["attributions"], randomisation_s=times["randomisation"],
        perturbation_s=times["perturbation"], neurons_s=times["neurons"],
    )
