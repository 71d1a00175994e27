"""FVD-16 and FID (packaged detectors) of the demo models against their dataset, next to the untrained models.

Runs calc_metrics.py once per configuration: the low-res model alone (36x64) and the full pipeline (144x256), each
trained and untrained. "Untrained" is the step-0 G_ema snapshot of the same training run (the initial weights).
Results are appended to a JSONL file (calc_metrics.py's format), and a configuration already in it (same generators,
metric and sample counts) is not recomputed, so the script can be rerun as snapshots arrive. At the end it prints a
Markdown table with the trained / untrained ratio of every metric (issue 17 asks for at most 0.5).

Sample counts: FVD-16 on 128 generated and 128 real clips; FID on 256 generated frames against 2048 real frames
spread evenly over the dataset (calc_metrics.py --real-subset spread). With 32 samples and the original's capped
real subset (the first 32 frames, i.e. one clip), the floor of FID was above half the untrained model's: 32 real
frames spread over the 48 clips scored 225 against that one clip, the untrained model 407. FVD-16 at 32 clips:
two sets of real windows scored 587 apart, the untrained model 2558.

Example (the demo runs under /root/lvg_demo; trained = the newest G_ema snapshot of each run):
    python benchmarks/demo_metrics.py --dataset /root/lvg_demo/datasets/synth_demo \\
        --lres-run /root/lvg_demo/runs/lres_t/00000-synth_demo-4batch-1accum-1.0gamma \\
        --sres-run /root/lvg_demo/runs/sres/00000-synth_demo-2batch-1accum-1.0gamma \\
        --out /root/lvg_demo/metrics.jsonl
    python benchmarks/demo_metrics.py --dataset DIR --lres A.pkl --sres B.pkl --untrained-lres A0.pkl \\
        --untrained-sres B0.pkl --out metrics.jsonl
"""

import glob
import json
import os
import subprocess
import sys

import click

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("fvd2048_16f", "fid50k_full")

# ----------------------------------------------------------------------------


def snapshots(run_dir: str) -> list[str]:
    """The G_ema snapshots of a run directory, oldest first."""
    return sorted(glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-*-G-ema.pkl")))


def read_results(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def protocol(metric: str, num_fvd: int, num_fid: int, max_real_fid: int) -> dict:
    """calc_metrics.py's sample counts for a metric: FVD on num_fvd generated and real clips; FID on num_fid
    generated frames against max_real_fid real frames spread over the whole dataset."""
    if metric.startswith("fvd"):
        return dict(num_gen=num_fvd, max_real=num_fvd, real_subset="first")
    return dict(num_gen=num_fid, max_real=max_real_fid, real_subset="spread")


def find(results: list[dict], lres: str, sres: str | None, metric: str, counts: dict) -> float | None:
    for r in reversed(results):
        row_counts = dict(
            num_gen=r.get("num_gen"), max_real=r.get("max_real"), real_subset=r.get("real_subset", "first")
        )
        if (r.get("lres_path"), r.get("sres_path"), r.get("metric")) == (lres, sres, metric) and row_counts == counts:
            return float(r["results"][metric])
    return None


def run_metric(dataset: str, lres: str, sres: str | None, metric: str, counts: dict, out: str, device: str) -> None:
    cmd = [sys.executable, os.path.join(ROOT, "calc_metrics.py"), "--dataset", dataset, "--lres", lres]
    cmd += ["--sres", sres] if sres else []
    cmd += ["-m", metric, "--num-gen", str(counts["num_gen"]), "--max-real", str(counts["max_real"])]
    cmd += ["--real-subset", counts["real_subset"], "--device", device]
    cmd += ["--detector-source", "packaged", "--path", out, "--progress", "False"]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


# ----------------------------------------------------------------------------


@click.command()
@click.option("--dataset", required=True, help="Dataset root the models were trained on.")
@click.option("--lres-run", help="Low-res run directory: newest snapshot = trained, step 0 = untrained.")
@click.option("--sres-run", help="Super-res run directory: newest snapshot = trained, step 0 = untrained.")
@click.option("--lres", "lres", help="Trained low-res generator (instead of --lres-run's newest).")
@click.option("--sres", "sres", help="Trained super-res generator (instead of --sres-run's newest).")
@click.option("--untrained-lres", help="Untrained low-res generator (instead of --lres-run's step 0).")
@click.option("--untrained-sres", help="Untrained super-res generator (instead of --sres-run's step 0).")
@click.option(
    "--num-fvd", type=click.IntRange(min=2), default=128, show_default=True, help="FVD: generated and real clips."
)
@click.option("--num-fid", type=click.IntRange(min=2), default=256, show_default=True, help="FID: generated frames.")
@click.option(
    "--max-real-fid", type=click.IntRange(min=2), default=2048, show_default=True, help="FID: real frames (spread)."
)
@click.option("--out", required=True, help="JSONL file the results are appended to (and read from).")
@click.option("--only-untrained", is_flag=True, help="Compute the untrained rows only.")
@click.option("--device", default="cpu", show_default=True)
def main(
    dataset,
    lres_run,
    sres_run,
    lres,
    sres,
    untrained_lres,
    untrained_sres,
    num_fvd,
    num_fid,
    max_real_fid,
    out,
    only_untrained,
    device,
):
    """Trained vs untrained FVD-16 and FID of the demo models (low-res alone and the full pipeline)."""
    if lres_run:
        snaps = snapshots(lres_run)
        if not snaps:
            raise click.ClickException(f"--lres-run: no G_ema snapshots in {lres_run}/checkpoints")
        lres, untrained_lres = lres or snaps[-1], untrained_lres or snaps[0]
    if sres_run:
        snaps = snapshots(sres_run)
        if not snaps:
            raise click.ClickException(f"--sres-run: no G_ema snapshots in {sres_run}/checkpoints")
        sres, untrained_sres = sres or snaps[-1], untrained_sres or snaps[0]
    if not (lres and untrained_lres):
        raise click.ClickException("give --lres-run, or --lres and --untrained-lres")
    configs = [("low-res 36x64", "untrained", untrained_lres, None)]
    if untrained_sres:
        configs.append(("full 144x256", "untrained", untrained_lres, untrained_sres))
    if not only_untrained:
        configs.append(("low-res 36x64", "trained", lres, None))
        if sres and untrained_sres:
            configs.append(("full 144x256", "trained", lres, sres))
    counts = {metric: protocol(metric, num_fvd, num_fid, max_real_fid) for metric in METRICS}
    for _, _, g_lres, g_sres in configs:
        for metric in METRICS:
            if find(read_results(out), g_lres, g_sres, metric, counts[metric]) is None:
                run_metric(dataset, g_lres, g_sres, metric, counts[metric], out, device)

    results = read_results(out)
    print(
        f"\nFVD-16: {num_fvd} generated and {num_fvd} real clips; FID: {num_fid} generated frames, {max_real_fid} real "
        "frames spread over the dataset; packaged detectors; ratio = trained / untrained (goal <= 0.5)\n"
    )
    print("| output | metric | untrained | trained | ratio |")
    print("|---|---|---|---|---|")
    rows = [("low-res 36x64", None, None), ("full 144x256", sres, untrained_sres)]
    for name, g_sres_trained, g_sres_untrained in rows:
        if name.startswith("full") and not untrained_sres:
            continue
        for metric in METRICS:
            u = find(results, untrained_lres, g_sres_untrained, metric, counts[metric])
            t = find(results, lres, g_sres_trained, metric, counts[metric]) if lres and not only_untrained else None
            ratio = f"{t / u:.2f}" if (t is not None and u) else "-"
            fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
            print(f"| {name} | {metric} | {fmt(u)} | {fmt(t)} | {ratio} |")
    print(f"\ntrained: {lres} + {sres}\nuntrained: {untrained_lres} + {untrained_sres}")


if __name__ == "__main__":
    main()
