"""``cacl export CHECKPOINT --onnx OUT.onnx``: branch 1 as an ONNX model."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Export branch 1 of a trained model (the re-ID feature) to ONNX.

Input  'images': float32 [batch, 3, H, W] (NCHW), batch dynamic, H x W = the checkpoint's
                 data.height x data.width (e.g. 256 x 128).
Output 'features': float32 [batch, D], each row L2-normalised; rank by squared Euclidean
                 distance, as 'cacl eval' does.
Preprocessing (the test transform, cacl.FeatureExtractor.preprocess): decode as RGB (not BGR),
resize to H x W with bicubic interpolation, scale to [0, 1], subtract the ImageNet mean
(0.485, 0.456, 0.406) and divide by the ImageNet std (0.229, 0.224, 0.225) per channel, CHW.
The same description is stored in the model's metadata_props (keys cacl.*).

The exported model is run with onnxruntime on a random batch and compared with PyTorch; the
largest difference is printed. Needs onnx and onnxruntime: pip install 'cacl[export]'.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export branch 1 of a checkpoint to ONNX",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="a checkpoint file or a run folder (uses best.pt)")
    parser.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    parser.add_argument(
        "--no-check", action="store_true", help="skip the onnxruntime-versus-PyTorch check"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cacl.inference.export import export_onnx

    result = export_onnx(args.checkpoint, args.onnx, opset=args.opset, check=not args.no_check)
    print(
        f"wrote {result.path}: input images float32 [batch, 3, {result.height}, {result.width}], "
        f"output features float32 [batch, {result.feature_dim}]"
    )
    if result.max_abs_diff is not None:
        print(
            f"onnxruntime versus PyTorch, batch of 3: max abs difference {result.max_abs_diff:.3g}"
        )
    return 0
