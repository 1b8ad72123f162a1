"""The data layer: the source registry (`cnndsl.data.sources`), the array loaders (`cnndsl.data.datasets`),
the input pipeline for image files (`cnndsl.data.pipeline`) and records (`cnndsl.data.records`). The names
most code needs are re-exported here, imported on first use (so checking `--data` loads no numpy)."""

from cnndsl.lang.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["BUILTIN_SHAPES", "REMOTES", "Dataset", "Remote", "cache_dir", "check_finite", "folder_splits",
                     "missing_classes", "read_idx", "read_image", "read_npy", "regular_file", "white_level"],
                    "datasets"),
    "load_dataset": "loading",
    "DataError": "errors",
    **dict.fromkeys(["SOURCES", "SourceError", "absolute_source", "open_source", "parse_source"], "sources"),
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
