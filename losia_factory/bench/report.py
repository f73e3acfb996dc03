"""The benchmark report as ratios, a markdown table and a bar chart."""

from __future__ import annotations

from typing import Any


def latency(figures: dict[str, Any]) -> float:
    """Microseconds per token a long run pays: the cycle average for LoSiA, the step median otherwise."""
    return figures.get("cycle_us_per_token", figures["us_per_token"])


def ratios(report: dict[str, Any]) -> dict[str, float]:
    """Headline ratios of the targets, and PiLoRA against LoRA, for every gradient-checkpointing setting present."""
    methods = report["methods"]
    out = {}
    for suffix in ("", "_gc"):
        pilora, lora = methods.get("pilora" + suffix), methods.get("lora" + suffix)
        if pilora is not None and lora is not None:
            out[f"pilora{suffix} / lora{suffix} latency"] = latency(pilora) / latency(lora)
            out[f"pilora{suffix} / lora{suffix} peak memory"] = pilora["peak_mem_mb"] / lora["peak_mem_mb"]
        pro = methods.get("losia_pro" + suffix)
        if pro is None:
            continue
        for other in ("lora", "floor", "full", "dora", "galore", "losia"):
            ref = methods.get(other + suffix)
            if ref is not None:
                out[f"losia_pro{suffix} / {other}{suffix} latency"] = latency(pro) / latency(ref)
        if lora is not None:
            out[f"losia_pro{suffix} / lora{suffix} peak memory"] = pro["peak_mem_mb"] / lora["peak_mem_mb"]
    return out


def markdown_table(report: dict[str, Any]) -> str:
    """The per-method figures as a markdown table (``cycle`` only for LoSiA: the average over a whole cycle)."""
    lines = [
        "| method | us/token | cycle us/token | forward | backward | optimizer | peak MB | saved act. MB | trainable "
        "| loss first -> last |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in report["methods"].items():
        saved = f"{r['saved_activation_mb']:.1f}" if "saved_activation_mb" in r else "-"
        cycle = f"{r['cycle_us_per_token']:.1f}" if "cycle_us_per_token" in r else "-"
        lines.append(
            f"| {name} | {r['us_per_token']:.1f} | {cycle} | {r['forward_us']:.1f} | {r['backward_us']:.1f} | "
            f"{r['optimizer_us']:.1f} | {r['peak_mem_mb']:.0f} | {saved} | {r['trainable_params']:,} | "
            f"{r['loss_first']:.3f} -> {r['loss_last']:.3f} |"
        )
    for name, error in report.get("failed", {}).items():
        lines.append(f"| {name} | failed: {error.strip().splitlines()[-1][:100]} | | | | | | | | |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
    """Bar charts of the latency split and peak memory, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["methods"])
    r = report["methods"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    bottom = [0.0] * len(names)
    for key, color in (("forward_us", "#4c72b0"), ("backward_us", "#dd8452"), ("optimizer_us", "#55a868")):
        values = [r[n][key] for n in names]
        ax1.bar(names, values, bottom=bottom, label=key.replace("_us", ""), color=color)
        bottom = [b + v for b, v in zip(bottom, values)]
    cycle = [latency(r[n]) - r[n]["us_per_token"] for n in names]
    ax1.bar(names, cycle, bottom=bottom, label="LoSiA cycle extras", color="#c44e52")
    ax1.set_ylabel("microseconds per token")
    ax1.set_title("Training latency split")
    ax1.legend()
    ax1.tick_params(axis="x", rotation=60)
    ax2.bar(names, [r[n]["peak_mem_mb"] for n in names], color="#8172b2")
    ax2.set_ylabel("peak memory (MB)")
    ax2.set_title("Peak memory (process RSS on CPU, allocated on GPU)")
    ax2.tick_params(axis="x", rotation=60)
    fig.suptitle(
        f"{report['device']}: LLaMA {report['model']['parameters'] / 1e6:.0f}M, "
        f"{report['model']['batch_size']} x {report['model']['seq_len']} tokens"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
