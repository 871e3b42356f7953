"""Context-free grammars as data: loading, tables, exact fast parsing, derivation."""
from .cfg import Grammar, GrammarError, ParseError, builtin_grammars, load_grammar

__all__ = ["Grammar", "GrammarError", "ParseError", "builtin_grammars", "load_grammar"]
