"""`ltx2 doctor`: what this machine and these weights can do, before a batch finds out the hard way."""

from __future__ import annotations

import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from .. import __version__
from ..errors import EXIT_FAILED
from .options import ModelOptions, option_groups

CODECS = ("libx264", "aac", "h264_nvenc")
BF16_BYTES = 2
SECONDS = (5.0, 10.0)  # the clip lengths the memory report plans for


@option_groups
def doctor(
    *,
    models: ModelOptions,
    json_: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Check this machine and the model: torch and CUDA, the GPU and its memory, PyAV's encoders, the weights at
    --model / LTX2_MODEL_DIR (found, version, problems read from their headers) and, per GPU size (--vram, or this
    GPU's, or 80/48/32/24 GB without one), the memory plan each preset would render with and its estimated peak.
    Exit 1 if the model has a problem."""
    from ..weights.source import option_warnings

    notes = option_warnings(models.given)  # a --checkpoint it would ignore is a usage error, before anything is read
    report = {"ltx2": __version__, "python": platform.python_version(), "libraries": _libraries()}
    report |= {"gpu": _gpu(), "encoders": _encoders()}
    report["model"] = _model(models.source(), models.vram) | ({"notes": notes} if notes else {})
    if json_:
        print(json.dumps(report, indent=1))
    else:
        _print(report)
    if report["model"].get("problems"):
        raise typer.Exit(EXIT_FAILED)


def _libraries() -> dict[str, str]:
    out = {}
    for lib in ("torch", "diffusers", "transformers", "peft", "av"):
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            out[lib] = "not installed"
    return out


def _gpu() -> dict[str, Any]:
    import torch

    cuda = torch.version.cuda
    if not torch.cuda.is_available():
        why = f"torch {torch.__version__} is a CPU build" if cuda is None else f"torch is built for CUDA {cuda}"
        return {"available": False, "note": f"no CUDA GPU visible ({why}); renders run on the CPU, very slowly"}
    from ..weights.fp8 import fp8_matmul_ok

    device = torch.device("cuda")
    free, total = torch.cuda.mem_get_info(device)
    major, minor = torch.cuda.get_device_capability(device)
    return {
        "available": True, "name": torch.cuda.get_device_name(device), "cuda": cuda,
        "memory_gib": round(total / 2**30, 1), "free_gib": round(free / 2**30, 1), "capability": f"{major}.{minor}",
        "fp8_matmul": fp8_matmul_ok(device),
    }  # fmt: skip


def _encoders() -> dict[str, bool]:
    try:
        import av
    except ImportError:
        return dict.fromkeys(CODECS, False)
    return {codec: codec in av.codecs_available for codec in CODECS}


def _model(source, vram: str | None) -> dict[str, Any]:
    from ..errors import ModelError
    from ..weights.inspect import inspect_path
    from ..weights.source import MODEL_ENV, resolve_model

    try:
        path = resolve_model(source)
    except ModelError as e:  # a model named and not there is its problem; none named is no problem of this machine
        named = bool(source.model or os.environ.get(MODEL_ENV))
        return {"found": False, "note": str(e), "problems": [str(e)] if named else []}
    report = inspect_path(path)
    out = {"found": True, "path": str(path), "kind": report["kind"], "version": report.get("version")}
    out["problems"] = list(report["problems"])
    params = sum(c.get("params", 0) for c in report.get("components", {}).values())
    if report["kind"] == "single-file checkpoint":  # its text encoder is another file or folder
        out["fp8_weights"] = report.get("fp8", [])
        out["text_encoder"] = encoder = text_encoder_report(path, source, report["version"])
        params += encoder.get("params", 0)
        out["problems"] += encoder["problems"]
    out["bf16_weights_gib"] = round(params * BF16_BYTES / 2**30, 1)
    try:  # from the configs alone: a folder of configs without weights is planned too
        out["memory_plans"] = memory_plans(path, vram)
        out["memory_estimate"] = estimate_note()
    except (ModelError, OSError, ValueError, KeyError) as e:
        out["problems"].append(f"cannot plan memory: {e}")
    return out


def estimate_note() -> str:
    """What the memory plans' estimates rest on: which of them a GPU has measured, and which are predictions."""
    from ..engine.memory.estimate import FRAGMENTATION, GPU_OVERHEAD

    return (
        f"estimates are live tensors on the meta device x {GPU_OVERHEAD} (allocator overhead, fitted on one H200 "
        "peak: the decode phase of the 80-GB plan, bf16, nothing moving; it predicts that plan's other benchmarked "
        f"decode peaks within 3%) + {FRAGMENTATION} x them for fragmentation (reserved minus allocated, not "
        "measured); every other phase and plan (denoise, prompt, FP8, components moving, streamed blocks, "
        "24-48 GB cards) is a prediction no GPU has checked yet"
    )


def text_encoder_report(checkpoint: Path, source, version: str) -> dict[str, Any]:
    """The text encoder a single-file checkpoint would load with (found as loading finds it), its family and its
    parameters from its headers, and its problems: none found, not there, not a text encoder, the wrong Gemma."""
    from ..errors import ModelError
    from ..weights.source import text_encoder_files
    from ..weights.text_encoder import encoder_family, wrong_family

    try:
        weights, _tokenizer = text_encoder_files(checkpoint, source.resolved().text_encoder)
    except ModelError as e:
        return {"problems": [str(e)]}
    params, problems = _encoder_params(weights)
    problems += [wrong] if (wrong := wrong_family(version, weights)) else []
    return {"path": str(weights), "family": encoder_family(weights), "params": params, "problems": problems}


def _encoder_params(weights: Path) -> tuple[int, list[str]]:
    """(parameters, problems) of a text encoder's weights: a Gemma single file, or a folder's .safetensors."""
    from ..weights.header import HeaderError, read_header
    from ..weights.inspect import inspect_path

    if weights.is_file():
        report = inspect_path(weights)
        problems = list(report["problems"])
        if report["kind"] != "text encoder":
            problems.append(f"{weights.name} is not a text encoder (models inspect: {report['kind']})")
        return report.get("params", 0), problems
    files = sorted(weights.glob("*.safetensors"))
    params, problems = 0, [] if files else [f"{weights}: no .safetensors weights"]
    for file in files:
        try:
            params += sum(t.numel for t in read_header(file).tensors.values())
        except HeaderError as e:
            problems.append(str(e))
    return params, problems


def memory_plans(path, vram: str | None) -> list[dict[str, Any]]:
    """Per GPU size and preset: the plan a 5-s and a 10-s clip at the preset's size would render with, with the
    preset's LoRAs (as a batch holds them: loaded after its prompts are encoded)."""
    from ..engine.memory import residency
    from ..engine.memory.estimate import model_configs
    from ..engine.memory.vram import SIZES
    from ..jobs.presets import load_presets

    configs = model_configs(path)
    gib = residency.vram_gib(vram)
    sizes = [gib] if gib is not None else [float(s) for s in SIZES]
    presets, _ = load_presets()
    rows = []
    loras = {name: _preset_loras(path, configs, preset) for name, preset in presets.presets.items()}
    for size in sizes:
        for preset in presets.presets.values():
            load, uncounted = loras[preset.name]
            for seconds in SECONDS:
                clip = residency.preset_clip(preset, seconds)
                choice = residency.choose(configs, [clip], size, loras=load)
                row = {"vram_gib": round(size, 1), "preset": preset.name, "seconds": seconds} | choice.as_dict()
                row["fits"] = choice.fits
                row |= {"loras_not_counted": uncounted} if uncounted else {}
                if not choice.fits:
                    row["longest_fitting_s"] = residency.longest_fitting(configs, clip, size, 30.0, load)
                rows.append(row)
    return rows


def _preset_loras(path, configs, preset) -> tuple[Any, list[str]]:
    """(residency.LoraLoad of the preset's LoRAs, the LoRAs among them whose size cannot be known: no file)."""
    from ..engine.memory import residency

    loras = residency.job_loras(preset.loras, preset.two_stage)
    sizes = residency.lora_sizes(path, configs, loras)
    names = {lora.key: lora.name or lora.path or "" for lora in loras}
    load = residency.held(sizes.values())
    return load, [names[key] for key, size in sizes.items() if size is None]


def _print(report: dict[str, Any]) -> None:
    console = Console(highlight=False)
    libs = ", ".join(f"{k} {v}" for k, v in report["libraries"].items())
    console.print(f"[bold]ltx2[/bold]      {report['ltx2']} (Python {report['python']}; {libs})")
    gpu = report["gpu"]
    if gpu["available"]:
        console.print(
            f"[bold]gpu[/bold]       {gpu['name']}, {gpu['memory_gib']} GiB ({gpu['free_gib']} free), sm "
            f"{gpu['capability']}, CUDA {gpu['cuda']}, FP8 matmul {'yes' if gpu['fp8_matmul'] else 'no'}"
        )
    else:
        console.print(f"[bold]gpu[/bold]       {gpu['note']}")
    enc = report["encoders"]
    have = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in enc.items())
    console.print(
        f"[bold]encoders[/bold]  in PyAV's FFmpeg: {have} (NVENC also needs a GPU that has it; H100/H200 do not)"
    )
    m = report["model"]
    if not m["found"]:
        console.print(f"[bold]model[/bold]     [yellow]{m['note']}[/yellow]", soft_wrap=True)  # one line
        return
    console.print(f"[bold]model[/bold]     {m['path']}: {m['kind']}, version {m.get('version') or '?'}")
    if "path" in (encoder := m.get("text_encoder", {})):  # none found: a problem line says so
        what = f"{encoder['family'] or 'family unknown'}, {encoder['params'] / 1e9:.3f} B parameters"
        console.print(f"[bold]encoder[/bold]   {encoder['path']}: {what}", soft_wrap=True)
    console.print(f"[bold]weights[/bold]   {m['bf16_weights_gib']} GiB in bf16")
    for row in m.get("memory_plans", []):
        where = f"{row['vram_gib']:g} GiB: {row['preset']} {row['seconds']:g} s"
        if row["loras_gib"] or row.get("loras_not_counted"):
            uncounted = ", ".join(row.get("loras_not_counted", []))
            where += f" + LoRAs {row['loras_gib']:g} GiB" + (
                f" ({uncounted}: no file, not counted)" if uncounted else ""
            )
        if row["fits"]:
            peak = row["estimated_peak_gib"]
            console.print(f"[bold]memory[/bold]    {where} -> plan {row['plan']}, peak ~{peak} GiB")
        else:
            longest = row.get("longest_fitting_s")
            fit = f"up to {longest:g} s fits" if longest else "nothing fits"
            console.print(
                f"[bold]memory[/bold]    {where} -> [yellow]does not fit[/yellow] (~{row['estimated_peak_gib']} "
                f"GiB at best; {fit})"
            )
    if "memory_estimate" in m:
        console.print(f"[bold]estimate[/bold]  {m['memory_estimate']}", soft_wrap=True)
    for note in m.get("notes", []):
        console.print(f"[bold]note[/bold]      {note}", soft_wrap=True)
    for problem in m["problems"]:
        console.print(f"[yellow]problem[/yellow]   {problem}", soft_wrap=True)
