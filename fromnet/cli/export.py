"""`fromnet export --onnx`: a run's embedding network as an ONNX file, checked with onnxruntime."""

from __future__ import annotations

from pathlib import Path

import click

from fromnet.cli import main


@main.command("export")
@click.option("--onnx", "run", required=True, help="The fromnet run folder or checkpoint to export.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The .onnx file to write.")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(min=13), help="ONNX opset.")
def export_cmd(run: str, out: Path, opset: int) -> None:
    """Write the embedding network (input (N, 3, H, W) in [-1, 1] RGB, output (N, D); N dynamic) as ONNX.

    The file is only written once onnxruntime matches PyTorch's embeddings within 1e-4.
    """
    from fromnet.export import export_onnx

    r = export_onnx(run, out, opset)
    click.echo(
        f"export: {out} (opset {r.opset}, input N x 3 x {r.input_size[0]} x {r.input_size[1]}, batch dynamic, "
        f"{r.embedding_dim}-d embedding); onnxruntime vs PyTorch max |diff| {r.max_abs_diff:.1e} "
        f"on a batch of {r.check_batch}"
    )
