"""textrnn: recurrent text classifiers trained by a Prefect + DVC pipeline.

`textrnn.Predictor` serves an exported model with onnxruntime; importing it never imports torch.
"""

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__"]


def __getattr__(name: str):
    if name == "Predictor":
        from textrnn.predict import Predictor

        return Predictor
    raise AttributeError(f"module 'textrnn' has no attribute {name!r}")
