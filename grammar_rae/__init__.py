"""grammar-rae: deterministic Regularized Autoencoders (Ghosh et al., ICLR 2020) on
grammar-decoded molecules and expressions, and on images.

    import grammar_rae
    m = grammar_rae.load("zinc-grae")        # a Model (grammar_rae/api.py): encode, decode, sample, ...
    m = grammar_rae.train("runs/expr", "expr", epochs=1)
"""
from .grammar import Grammar, GrammarError, ParseError, load_grammar

__version__ = "0.1.0"
__all__ = ["Grammar", "GrammarError", "Model", "ParseError", "load", "load_grammar", "train", "__version__"]


def __getattr__(name):
    # load, train and Model bring in torch: imported on first use, so `import grammar_rae` stays light
    # (the grammar alone, as in parser worker processes). The trainer itself is grammar_rae.trainer.
    if name in ("load", "train", "Model"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
