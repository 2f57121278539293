"""The report's prose: the reference notebook's five questions answered from this run's numbers,
and why the notebook's AlexNet did not learn (from the diagnose stage). No dataset is named and
no published figure quoted unless the run used that dataset (classic_cnns/data/datasets.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from classic_cnns.data.datasets import REGISTRY
from classic_cnns.reporting import describe, figures


def published(r: dict) -> str:
    """'; <a published result>' where the run used the official files of a dataset with one."""
    prov = r["data"]["provenance"]
    known = REGISTRY.get(r["config"].dataset)
    text = known.published.get(r["config"].architecture) if known and prov["official"] else None
    return f"; {text}" if text else ""


def _share(arch: pd.DataFrame, types: tuple[str, ...], column: str) -> float:
    return 100 * arch.loc[arch["type"].isin(types), column].sum() / max(1, arch[column].sum())


def _acc(r: dict) -> str:
    return f"{100 * r['metrics']['test_accuracy']:.2f}%"


def _gap(r: dict) -> float:
    return 100 * (r["training"]["final_train_accuracy"] - r["training"]["final_val_accuracy"])


def _layers_with_weights(arch: pd.DataFrame) -> int:
    return int((arch["parameters"] > 0).sum())


NOTEBOOK = ("lenet5", "alexnet")  # the notebook's models: models.lenet5 (LeNet-5), models.alexnet (AlexNet)


def question_blocks(results: dict[str, dict]) -> list[tuple]:
    """The reference notebook's five questions, each answered with this run's numbers: about the
    notebook's two models (the `models:` entries lenet5 and alexnet), never another model of the same
    architecture, such as a LeNet-5 on a user's dataset."""
    le, al = (results.get(n) if n in results and results[n]["config"].architecture == n else None for n in NOTEBOOK)
    if not (le and al):
        return []
    return (
        [("h2", "The notebook's five questions, answered from this run")]
        + _lenet_answers(le, al)
        + _alexnet_answers(le, al)
    )


def _lenet_answers(le: dict, al: dict) -> list[tuple]:
    """Questions 1 to 3: LeNet-5, its parts, its limits."""
    la, aa = le["architecture"], al["architecture"]
    conv, dense = ("Conv2D",), ("Dense",)
    lmacs, amacs = int(la["multiply_adds"].sum()), int(aa["multiply_adds"].sum())
    lp, ap = le["training"]["parameters"], al["training"]["parameters"]
    shapes = dict(zip(la["layer"], la["output_shape"], strict=False))
    return [
        ("h3", "1. LeNet-5's architecture and significance"),
        (
            "p",
            f"LeNet-5 maps a {'x'.join(map(str, le['data']['shape']))} image through two convolution + "
            f"subsampling stages (C1 {shapes.get('C1', '?')}, S2 {shapes.get('S2', '?')}, C3 {shapes.get('C3', '?')}, "
            f"S4 {shapes.get('S4', '?')}) and three fully connected layers ({shapes.get('C5', '?')}, "
            f"{shapes.get('F6', '?')}, {shapes.get('output', '?')}): {lp:,} parameters and {lmacs / 1e6:.2f} M "
            f"multiply-adds per image. Trained here for {le['training']['epochs']} epochs, it reaches {_acc(le)} test "
            f"accuracy on {le['dataset']}{published(le)}. It showed that "
            "weights shared across positions, learned end to end by backpropagation, beat hand-made features.",
        ),
        ("h3", "2. Its components and their roles"),
        (
            "p",
            f"The convolutions (C1, C3) hold {_share(la, conv, 'parameters'):.1f}% of the parameters but do "
            f"{_share(la, conv, 'multiply_adds'):.1f}% of the multiply-adds: a few shared 5x5 filters slid over "
            f"the whole image. The fully connected layers hold {_share(la, dense, 'parameters'):.1f}% of the "
            "parameters. Average pooling (S2, S4) halves each side, so each C3 unit sees a "
            f"{le['details']['receptive_fields'].get('C3', '?')} patch of the input; tanh squashes each "
            "layer's output to (-1, 1).",
        ),
        ("h3", "3. LeNet-5's limitations and how AlexNet addressed them"),
        (
            "p",
            f"LeNet-5 has {_layers_with_weights(la)} layers with weights and {lp:,} parameters; the AlexNet here "
            f"has {_layers_with_weights(aa)} and {ap:,} ({ap / lp:.0f}x), costing {amacs / lmacs:.0f}x the "
            f"multiply-adds per image ({amacs / 1e6:.1f} M). AlexNet replaces tanh with ReLU, average with "
            f"overlapping max-pooling (3x3, stride 2), and adds dropout 0.5 before each large dense layer. "
            f"Its train-validation accuracy gap at the last epoch is {_gap(al):.1f} points, LeNet-5's "
            f"{_gap(le):.1f}. Whether each change matters on its own is measured by the ablation experiments, "
            "not assumed here.",
        ),
    ]


def _alexnet_answers(le: dict, al: dict) -> list[tuple]:
    """Questions 4 and 5: AlexNet, and the two side by side."""
    la, aa = le["architecture"], al["architecture"]
    conv, dense = ("Conv2D",), ("Dense",)
    lmacs, amacs = int(la["multiply_adds"].sum()), int(aa["multiply_adds"].sum())
    ap = al["training"]["parameters"]
    kernel = al["details"]["first_kernel"].shape
    return [
        ("h3", "4. AlexNet's architecture and contributions"),
        (
            "p",
            f"Five convolutions (the first {kernel[0]}x{kernel[1]} at stride 1 "
            f"on {'x'.join(map(str, al['data']['shape']))} input), three max-pools and two 4096-unit dense layers: "
            f"{ap:,} parameters, "
            f"{_share(aa, dense, 'parameters'):.1f}% of them in the dense layers, while the convolutions do "
            f"{_share(aa, conv, 'multiply_adds'):.1f}% of the compute. With {describe.recipe(al['config'])} and "
            f"regularisation by {describe.regularisation(al['config'])}, it reaches "
            f"{_acc(al)} test accuracy on {al['dataset']} after {al['training']['epochs']} epochs. The reference "
            "notebook's AlexNet never learned; see the diagnosis below for why.",
        ),
        ("h3", "5. How the two compare"),
        (
            "p",
            f"LeNet-5 scores {_acc(le)} on {le['dataset']} and AlexNet {_acc(al)} on {al['dataset']}"
            + (
                ": different tasks, so the numbers do not rank the networks"
                if le["config"].dataset != al["config"].dataset
                else ""
            )
            + f". Per image, AlexNet needs {amacs / lmacs:.0f}x the multiply-adds, and it takes "
            f"{al['metrics']['model_size_mb']:.0f} MB on disk against {le['metrics']['model_size_mb']:.1f} MB. "
            "What each cost in time and memory on the machine that ran it, and on a GPU: "
            "[costs.md](costs.md#how-the-two-compare-in-cost).",
        ),
    ]


def diagnostics_blocks(folder: Path) -> list[tuple]:
    """Why the notebook's AlexNet did not learn, from the diagnose stage's measurements."""
    if not (folder / "summary.json").exists():
        return []
    summary = json.loads((folder / "summary.json").read_text())
    steps, layers = pd.read_csv(folder / "steps.csv"), pd.read_csv(folder / "layers.csv")
    nb, ours = summary["recipes"]["notebook"], summary["recipes"]["recipe"]
    rows = [
        [
            layer,
            f"{100 * nb['dead_fraction'][layer]:.1f}%",
            f"{100 * ours['dead_fraction'][layer]:.1f}%",
            f"{nb['grad_norm'][layer]:.3g}",
            f"{ours['grad_norm'][layer]:.3g}",
        ]
        for layer in nb["dead_fraction"]
    ]
    return [
        ("h2", "Why the reference notebook's AlexNet did not learn"),
        ("p", _diagnosis(summary)),
        (
            "table",
            ["layer", "dead units, notebook", "dead units, recipe", "gradient norm, notebook", "gradient norm, recipe"],
            rows,
        ),
        ("img", figures.diagnostics(steps, layers), "loss and dead units over the first steps"),
        (
            "p",
            f"Measured after step {nb['steps']} on {summary['model']}'s validation images "
            "(`dvc repro diagnose`; settings under `diagnose:` in params.yaml). The training-health "
            "check stops any run that ends up like this: see the README.",
        ),
    ]


def _diagnosis(summary: dict) -> str:
    nb, ours = summary["recipes"]["notebook"], summary["recipes"]["recipe"]
    st = nb["settings"]
    worst = max(nb["dead_fraction"], key=nb["dead_fraction"].get)
    return (
        f"The notebook trained {summary['model']} with {st['optimizer']} at learning rate "
        f"{st['learning_rate']:g}, batch {st['batch_size']}, inputs scaled `{st['input_scaling']}`. "
        f"Replaying its first {nb['steps']} steps from the same initial weights, the loss on "
        f"{summary['probe_images']} validation images ends at {nb['final_probe_loss']:.4f} "
        f"(ln 10 = {summary['ln_classes']:.4f}, what a uniform guess scores) with accuracy "
        f"{100 * nb['final_probe_accuracy']:.1f}%, and the spread of its logits across classes goes from "
        f"{nb['initial_logit_std']:.4f} to {nb['final_logit_std']:.4f}. "
        f"{100 * nb['dead_fraction'][worst]:.1f}% of {worst}'s units are dead (they output 0 for every probe "
        f"image, so they pass no gradient back); over all ReLU layers "
        f"{100 * sum(nb['dead_fraction'].values()) / len(nb['dead_fraction']):.1f}% are. "
        f"With this project's recipe ({ours['settings']['optimizer']}, learning rate "
        f"{ours['settings']['learning_rate']:g} after a {ours['settings']['warmup_epochs']}-epoch warm-up, "
        f"inputs `{ours['settings']['input_scaling']}`) the same {ours['steps']} steps end at loss "
        f"{ours['final_probe_loss']:.4f}, accuracy {100 * ours['final_probe_accuracy']:.1f}%, logit spread "
        f"{ours['final_logit_std']:.4f}, with "
        f"{100 * sum(ours['dead_fraction'].values()) / len(ours['dead_fraction']):.1f}% "
        f"of ReLU units dead on average."
    )
