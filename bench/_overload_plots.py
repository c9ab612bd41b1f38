"""PNG plots of an overload run (first run of each system): shed fraction by class, TTFT, queue depth.

Small files (``dpi`` 80): shading marks the 3x burst. Queue depth is Sluice's waiting room by class
(with admission) and the requests waiting inside the engines (every system).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _overload_analysis import CLASSES, Phase

COLOURS = {"critical": "tab:red", "standard": "tab:blue", "sheddable": "tab:gray"}


def _burst(ax: Any, phase_list: Sequence[Phase]) -> None:
    burst = max(phase_list, key=lambda p: p.level)
    ax.axvspan(burst.start_s, burst.end_s, color="orange", alpha=0.12, lw=0)


def _frame(n: int, title: str) -> tuple[Any, list[Any]]:
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.2 * n), sharex=True, squeeze=False)
    fig.suptitle(title, fontsize=10)
    return fig, [row[0] for row in axes]


def _save(fig: Any, path: Path, phase_list: Sequence[Phase]) -> Path:
    for ax in fig.axes:
        ax.set_xlim(0, phase_list[-1].end_s + 20.0)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_shed(systems: dict[str, Any], phase_list: Sequence[Phase], path: Path) -> Path:
    fig, axes = _frame(len(systems), "share of arrivals refused (429/408), by class, 1 s bins")
    for ax, (name, system) in zip(axes, systems.items(), strict=True):
        bins = system["runs"][0]["timeline"]
        for cls in CLASSES:
            points = [(b["t_s"], b["shed_frac"][cls]) for b in bins if b["shed_frac"][cls] is not None]
            ax.plot([p[0] for p in points], [p[1] for p in points], label=cls, color=COLOURS[cls], lw=1)
        _burst(ax, phase_list)
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel(name.split(" --")[0].replace(" round_robin", "\n"), fontsize=8)
    axes[0].legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("arrival time (s)")
    return _save(fig, path, phase_list)


def plot_ttft(systems: dict[str, Any], phase_list: Sequence[Phase], path: Path, slo_ms: float) -> Path:
    fig, axes = _frame(1, "TTFT of admitted requests by arrival (1 s bins): p50 solid, p99 dashed")
    ax = axes[0]
    for i, (name, system) in enumerate(systems.items()):
        bins = system["runs"][0]["timeline"]
        colour = f"C{i}"
        for key, style in (("ttft_p50_ms", "-"), ("ttft_p99_ms", "--")):
            points = [(b["t_s"], b[key] / 1000.0) for b in bins if b[key] is not None]
            label = name if key == "ttft_p50_ms" else None
            ax.plot([p[0] for p in points], [p[1] for p in points], style, color=colour, lw=1, label=label)
    ax.axhline(slo_ms / 1000.0, color="black", lw=0.8, ls=":")
    _burst(ax, phase_list)
    ax.set_yscale("log")
    ax.set_ylabel("TTFT (s)")
    ax.set_xlabel("arrival time (s)")
    ax.legend(fontsize=7)
    return _save(fig, path, phase_list)


def plot_queue(systems: dict[str, Any], phase_list: Sequence[Phase], path: Path) -> Path:
    fig, axes = _frame(len(systems), "queued requests: Sluice's waiting room by class, engines' own queues")
    for ax, (name, system) in zip(axes, systems.items(), strict=True):
        run = system["runs"][0]
        room = run.get("waiting_room") or []
        for cls in CLASSES:
            points = [(s["t_s"], s["queued"].get(cls, 0)) for s in room if s.get("queued")]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], color=COLOURS[cls], lw=1, label=cls)
        engine = run.get("engine_waiting") or []
        ax.plot(
            [s["t_s"] for s in engine], [s["engine_waiting"] for s in engine], "k--", lw=1, label="engines"
        )
        _burst(ax, phase_list)
        ax.set_ylabel(name.split(" --")[0].replace(" round_robin", "\n"), fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("time (s)")
    return _save(fig, path, phase_list)


def plot_all(
    systems: dict[str, Any], phase_list: Sequence[Phase], stem: Path, slo_ms: float = 2000.0
) -> list[Path]:
    return [
        plot_shed(systems, phase_list, stem.with_name(stem.name + "_shed.png")),
        plot_ttft(systems, phase_list, stem.with_name(stem.name + "_ttft.png"), slo_ms),
        plot_queue(systems, phase_list, stem.with_name(stem.name + "_queue.png")),
    ]
