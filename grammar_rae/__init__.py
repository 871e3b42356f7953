"""grammar-rae: deterministic Regularized Autoencoders (Ghosh et al., ICLR 2020) on
grammar-decoded molecules and expressions, and on images."""
from .grammar import Grammar, GrammarError, ParseError, load_grammar

__version__ = "0.1.0"
__all__ = ["Grammar", "GrammarError", "ParseError", "load_grammar", "__version__"]
