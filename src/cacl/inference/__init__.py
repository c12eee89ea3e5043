"""Putting a trained model to work: feature extraction, ONNX export, gallery search.

- :class:`FeatureExtractor`: branch-1 features of image files, PIL images or uint8 arrays;
- :func:`export_onnx`: branch 1 as an ONNX model with a dynamic batch axis;
- :class:`GalleryIndex` / :func:`build_folder_index`: exact or approximate (faiss) search of a
  gallery by squared Euclidean distance.
"""

from cacl.inference.export import ExportError, export_onnx
from cacl.inference.extractor import FeatureExtractor, ImageInputError
from cacl.inference.gallery import build_folder_index, query_extractor
from cacl.inference.index import GalleryIndex, GalleryIndexError

__all__ = [
    "ExportError",
    "FeatureExtractor",
    "GalleryIndex",
    "GalleryIndexError",
    "ImageInputError",
    "build_folder_index",
    "export_onnx",
    "query_extractor",
]
