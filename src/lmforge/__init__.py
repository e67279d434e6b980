"""lmforge: a language model made efficient from end to end, on one model definition.

    from lmforge import LLM, SamplingParams
    LLM("smollm2-135m").generate(["Hello"], SamplingParams(max_tokens=16))
"""

__version__ = "0.1.0"
__all__ = ["LLM", "SamplingParams", "__version__"]


def __getattr__(name: str):
    """The Python API, imported on first use so that `import lmforge` stays light."""
    if name == "LLM":
        from lmforge.serve.llm import LLM

        return LLM
    if name == "SamplingParams":
        from lmforge.serve.params import SamplingParams

        return SamplingParams
    raise AttributeError(f"module 'lmforge' has no attribute {name!r}")
