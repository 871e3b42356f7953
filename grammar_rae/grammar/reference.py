"""The reference meaning of "the rule sequence of a string": NLTK's ChartParser, as the
GrammarVAE computes it (pre-order productions of the first parse tree). Slow (~35 ZINC
molecules/s); used by the parity tests, the benchmark, and for strings the fast parser
cannot prove unambiguous."""
from __future__ import annotations

from .cfg import Grammar, ParseError


def _chart_parser(grammar: Grammar):
    import nltk

    parser = getattr(grammar, "_nltk_chart_parser", None)
    if parser is None:
        # NLTK >= 3.9 stops a chart after 5 s by default; the GrammarVAE's NLTK had no limit, and
        # long ZINC molecules need more than that on a busy machine.
        try:
            parser = nltk.ChartParser(grammar.nltk_grammar, max_time=None)
        except TypeError:  # older NLTK: no limit to lift
            parser = nltk.ChartParser(grammar.nltk_grammar)
        grammar._nltk_chart_parser = parser
    return parser


def nltk_parse(grammar: Grammar, string: str) -> list[int]:
    """Leftmost derivation of ``string`` by ``nltk.ChartParser`` (raises ParseError)."""
    tokens = grammar.tokenize(string)
    try:
        tree = next(iter(_chart_parser(grammar).parse(tokens)))
    except StopIteration:
        raise ParseError(string, 0, "no parse tree (NLTK ChartParser)") from None
    except ValueError as e:  # NLTK: "Grammar does not cover some of the input words"
        raise ParseError(string, 0, f"NLTK ChartParser: {e}") from None
    index = grammar._production_index
    return [index[p] for p in tree.productions()]
