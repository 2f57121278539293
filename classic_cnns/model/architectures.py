"""AlexNet three ways, from built models: the reference notebook's ImageNet AlexNet (valid padding
throughout), Krizhevsky et al.'s (2012) and the CIFAR-10 adaptation this project trains, with
what each difference costs in parameters and multiply-adds."""

from __future__ import annotations

import pandas as pd

from classic_cnns.model.networks import alexnet_imagenet, layer_table

STAGES = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool3", "fc6", "fc7", "output"]


def tables() -> dict[str, pd.DataFrame]:
    return {variant: layer_table(alexnet_imagenet(variant)) for variant in ("krizhevsky", "notebook")}


def _row(table: pd.DataFrame, layer: str) -> pd.Series:
    return table.set_index("layer").loc[layer]


def comparison_blocks(trained: dict) -> list[tuple]:
    """Layer by layer: output shape and parameters of each AlexNet; then the cost of each difference."""
    built = tables()
    ours = trained["architecture"]
    nets = {
        "Krizhevsky et al. (ImageNet)": built["krizhevsky"],
        "the notebook (ImageNet)": built["notebook"],
        f"this run ({trained['dataset']})": ours,
    }
    rows = []
    for layer in STAGES:
        row = [layer]
        for table in nets.values():
            r = _row(table, layer) if layer in set(table["layer"]) else None
            row.append("—" if r is None else f"{r.output_shape}, {int(r.parameters):,}")
        rows.append(row)
    totals = {k: (int(t["parameters"].sum()), int(t["multiply_adds"].sum())) for k, t in nets.items()}
    rows.append(["total"] + [f"{p:,} parameters, {m / 1e6:,.0f} M multiply-adds" for p, m in totals.values()])
    return [
        ("h2", "AlexNet for ImageNet and for 32x32 images"),
        (
            "p",
            "Built from the same code as the trained model (classic_cnns/model/networks.py; untrained): output shape "
            "and parameters of each layer. Krizhevsky et al.'s local response normalisation has no "
            "weights and is left out.",
        ),
        ("table", ["layer", *nets], rows),
    ] + [("p", t) for t in differences(built, trained, totals)]


def differences(built: dict, trained: dict, totals: dict) -> list[str]:
    """What each difference between the three AlexNets costs, in words."""
    k, nb, ours = built["krizhevsky"], built["notebook"], trained["architecture"]
    fc6 = {name: int(_row(t, "fc6").parameters) for name, t in (("k", k), ("nb", nb), ("ours", ours))}
    flat = {name: _row(t, "flatten").output_shape for name, t in (("k", k), ("nb", nb), ("ours", ours))}
    pool3 = {name: _row(t, "pool3").output_shape for name, t in (("k", k), ("nb", nb), ("ours", ours))}
    ungrouped = sum(int(_row(nb, c).parameters) for c in ("conv2", "conv4", "conv5"))
    grouped = sum(int(_row(k, c).parameters) for c in ("conv2", "conv4", "conv5"))
    return [
        f"**Padding.** Krizhevsky et al. pad convolutions 2-5, so the maps stay 27x27 and 13x13 and the last "
        f"pooling leaves {pool3['k']} ({flat['k']} values) for fc6, which alone holds {fc6['k']:,} parameters. The "
        f"notebook's ImageNet AlexNet pads nothing: every convolution trims its border, the maps shrink to "
        f"{pool3['nb']} before the dense layers, and fc6 has only {fc6['nb']:,} parameters; the whole network has "
        f"{totals['the notebook (ImageNet)'][0]:,} instead of {totals['Krizhevsky et al. (ImageNet)'][0]:,} and "
        f"{totals['the notebook (ImageNet)'][1] / 1e6:,.0f} M instead of "
        f"{totals['Krizhevsky et al. (ImageNet)'][1] / 1e6:,.0f} M multiply-adds per image: a 1x1 map has no "
        "spatial layout left for the classifier to use.",
        f"**Two GPUs.** Krizhevsky et al. split conv2, conv4 and conv5 into two groups, one per GPU (each half "
        f"sees only its own half of the channels): {grouped:,} parameters in those layers instead of "
        f"{ungrouped:,} unsplit. The notebook and this project use one device and no groups.",
        f"**32x32 images.** The CIFAR-10 adaptation keeps the layer stack but runs the first 11x11 convolution at "
        f"stride 1 (stride 4 would leave almost nothing of a 32x32 image), pads convolutions 2-5, and ends at "
        f"{pool3['ours']} before the dense layers like the notebook's, with {trained['data']['sizes']['train']:,} "
        f"training images and {len(trained['data']['classes'])} classes: fc6 holds {fc6['ours']:,} parameters and "
        f"the output layer {int(_row(ours, 'output').parameters):,}.",
    ]
