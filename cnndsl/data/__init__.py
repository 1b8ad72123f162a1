"""Datasets for training: the source registry (`cnndsl.data.sources`), the array loaders
(`cnndsl.data.datasets`), the input pipeline for image files (`cnndsl.data.pipeline`) and records
(`cnndsl.data.records`). The names most code needs are re-exported here."""

from cnndsl.data.datasets import (
                                  BUILTIN_SHAPES,
                                  REMOTES,
                                  DataError,
                                  Dataset,
                                  Remote,
                                  cache_dir,
                                  check_finite,
                                  folder_splits,
                                  load_dataset,
                                  missing_classes,
                                  read_idx,
                                  read_image,
                                  regular_file,
                                  white_level,
)
from cnndsl.data.sources import SOURCES, absolute_source, open_source, parse_source

__all__ = ["BUILTIN_SHAPES", "REMOTES", "SOURCES", "DataError", "Dataset", "Remote", "absolute_source", "cache_dir",
           "check_finite", "folder_splits", "load_dataset", "missing_classes", "open_source", "parse_source",
           "read_idx", "read_image", "regular_file", "white_level"]
