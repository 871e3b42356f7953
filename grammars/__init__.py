"""The shipped grammars (top-level grammars/ in the source tree), installed as package data."""
