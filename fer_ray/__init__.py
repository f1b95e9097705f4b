"""fer-ray: distributed batch facial emotion recognition on Ray.

The Python API (each `fer-ray` command as a function taking the same fields, returning
its summary; see help() of each):

    preprocess, synthesize, train, tune, evaluate, predict, label_videos, export,
    write_sample_data

Readers of a job's committed output, as pandas DataFrames with the pixels decoded into
numpy arrays (as_arrow=True for Arrow):

    read_faces, read_clips, read_manifest, read_labels, read_predictions
    show_faces (a contact sheet of read_faces rows, as a PIL image)

Example (a notebook):

    import fer_ray
    fer_ray.write_sample_data("data", layouts=["jaffe"])
    fer_ray.preprocess(layout="jaffe", input="data/jaffe", output="out/jaffe")
    faces = fer_ray.read_faces("out/jaffe", split="train")
    fer_ray.show_faces(faces.head(8))

A bad field raises fer_ray.ConfigError before any Ray work. `import fer_ray` imports neither
Ray nor torch: each function imports what it needs when called.
"""

__version__ = "0.1.0"

_API = ("preprocess", "synthesize", "train", "tune", "evaluate", "predict", "label_videos", "export",
        "write_sample_data")
_READERS = ("read_faces", "read_clips", "read_manifest", "read_labels", "read_predictions", "show_faces")
__all__ = [*_API, *_READERS, "ConfigError"]


def __getattr__(name: str):
    # Loaded on first use (PEP 562): the config module alone imports pyarrow.
    if name in _API:
        from fer_ray import api

        return getattr(api, name)
    if name in _READERS:
        from fer_ray import readers

        return getattr(readers, name)
    if name == "ConfigError":
        from fer_ray.config import ConfigError

        return ConfigError
    raise AttributeError(f"module 'fer_ray' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
