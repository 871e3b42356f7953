"""SMILES semantics beside the grammar: ring-bond, valence and aromaticity constraints for the
batched stack machine (the attribute constraints of SD-VAE, Dai et al., ICLR 2018, Sec. 3 -- here as
tensor state for the whole batch, stepped with the stack, on CPU or CUDA; never a per-molecule loop).

A context-free grammar cannot say that a ring-bond digit must be closed or that carbon has four bonds.
This module keeps, per sample, what the derivation has built so far and masks the rules that would
break it (``mask``), then records the chosen rule (``update``). The grammar itself stays data
(``grammars/smiles.cfg``); only the symbols named below are looked up in it.

State (all tensors, one row per sample):
  attr[B, depth]   beside each stack entry, its branch level and context tag (ring bond / chain or
                   branch bond / bracket), inherited from the rule that pushed it
  counts[B, L]     how many of each non-terminal are on the stack: the atoms that can still follow
                   (branched_atom, chain, branch, BB each yield at least one)
  free[B, A]       each atom's valence budget left after the bonds it has and those already promised
                   (its chain successor, ring bonds and branches are known when `branched_atom` expands)
  open_atom/open_order[B, 9]   the atom that opened each ring digit 1-8 and the bond order it gave
  bonded[B, A]     the atoms bonded to the current atom (no second bond to them by a ring closure)
  last_at_level[B, V]  the last atom of each branch level: the atom the next bond leaves from

Rules masked (each is necessary for a valid molecule, so a real molecule's derivation always passes:
tests run all of ZINC250k through it):
  - a ring digit that is open closes it; never onto the same atom or an atom already bonded to this
    one; bond orders of the two ends agree; a digit opens a ring only if an atom can still follow;
  - where no atom can follow and rings are open, the atom must take ring bonds, as many as rings are open;
  - an atom's element must have the valence for its incoming bond, its successor, ring bonds and
    branches; a bond's order must fit the budget of the atom it leaves from; an atom takes another
    ring bond or branch only while its budget allows;
  - an aromatic atom lies on a ring, so it needs at least two bonds (incoming, successor, ring bonds,
    branches); an aromatic c or n has at most three neighbours;
  - Kekule parity: aromatic atoms joined by bonds not written '-' form systems (`comp`, labels merged
    as ring closures join them); a Kekule structure pairs the atoms that need a double bond (c without an
    exocyclic one, n with two bonds, a bracket atom whose valence leaves one bond free) along the
    system's bonds, so a system with no bond left to come must hold an even number of them. The rule that
    would finish a system odd is refused: the atom that takes its last bond, the ring closure that
    uses it, or the element of the molecule's last atom (which closes every open ring).
Rows where a tier leaves no rule at some step are flagged (`StackMachine.cornered`) and decoded again
by sampling (GrammarAE.decode); so are finished rows whose whole molecule breaks what no step could see
(`SemanticState.broken`: an aromatic atom on no ring, found from the SMILES tree and its ring closures).
Bracket atoms are budgeted from their symbol, explicit H and charge (an ion has the valences of the
element with its electron count; charges of two digits are not budgeted). Valences are RDKit's largest default ones, with
every bond between aromatic atoms counted as 1 (a lower bound on its true order): the check is sound.
The ring-structure constraints, the valence/aromaticity ones and the Kekule parity are three tiers: at
each step the strongest that leaves a rule is used (all three, then the first two, then the ring
structure, then the grammar's mask alone).
"""
from __future__ import annotations

import torch

from ..grammar import Grammar

TAG_NONE, TAG_RING, TAG_EDGE, TAG_BRACKET, TAG_HCOUNT, TAG_CHARGE = 0, 1, 2, 3, 4, 5
TAGS = 8   # attr = level * TAGS + tag
KIND_NONE, KIND_C, KIND_N, KIND_O, KIND_S = 0, 1, 2, 3, 4   # aromatic element kinds (Kekule parity)
MAX_ATOMS, MAX_LEVELS, BRACKET_BUDGET, MAX_CLOSURES = 96, 64, 64, 48
# RDKit's largest default valence (Chem.GetPeriodicTable().GetValenceList); aromatic c counts its
# ring bonds as 1 each plus one exocyclic double bond at most (2-pyridone's C=O): 4
VALENCE = {"B": 3, "C": 4, "N": 3, "O": 2, "S": 6, "P": 5, "F": 1, "I": 5, "Cl": 1, "Br": 1,
           "c": 4, "n": 3, "o": 2, "s": 6}
MAX_DEGREE = {"c": 3, "n": 3, "o": 2, "s": 4}   # neighbours of an aromatic organic atom (s: S-oxides)
ELECTRONS = {"B": 3, "C": 4, "N": 5, "P": 5, "O": 6, "S": 6, "F": 7, "Cl": 7, "Br": 7, "I": 7}   # valence electrons
BOND_ORDER = {"-": 1, "=": 2, "#": 3, "/": 1, "\\": 1}
# the sections of SemanticState.mask (SmilesSemantics.section: which LHS each judges; index 0: none)
SECTIONS = ("none", "branched_atom", "element", "ring_bonds", "branches", "bond", "bracket", "digit")


class SmilesSemantics:
    """Tables for one SMILES-like grammar (the GrammarVAE's symbol names); :meth:`start` makes the
    state of one batch."""

    def __init__(self, grammar: Grammar):
        import nltk

        self.grammar = grammar
        lhs = {s: i for i, s in enumerate(grammar.lhs_list)}
        need = ("chain", "branched_atom", "branch", "BB", "RB", "ringbond", "bond", "DIGIT", "atom",
                "aliphatic_organic", "aromatic_organic", "bracket_atom", "symbol", "BAC", "BAH", "BACH", "charge",
                "hcount")
        missing = [s for s in need if s not in lhs]
        if missing:
            raise ValueError(f"{grammar.name}: not a SMILES grammar (no {', '.join(missing)})")
        self.lhs = {s: lhs[s] for s in need}
        R = grammar.n_rules

        def rules_of(name):
            return [(r, [s.symbol() if isinstance(s, nltk.Nonterminal) else s for s in p.rhs()])
                    for r, p in enumerate(grammar.nltk_productions) if p.lhs().symbol() == name]

        def find(name, rhs):
            for r, body in rules_of(name):
                if body == rhs:
                    return r
            raise ValueError(f"{grammar.name}: no rule {name} -> {' '.join(rhs)}")

        self.r_ba_atom = find("branched_atom", ["atom"])
        self.r_ba = {k: find("branched_atom", rhs) for k, rhs in
                     (("rb", ["atom", "RB"]), ("bb", ["atom", "BB"]), ("rbbb", ["atom", "RB", "BB"]))}
        self.r_rb_more, self.r_rb_one = find("RB", ["RB", "ringbond"]), find("RB", ["ringbond"])
        self.r_bb_more, self.r_bb_one = find("BB", ["BB", "branch"]), find("BB", ["branch"])
        self.r_atom_ali = find("atom", ["aliphatic_organic"])
        self.r_atom_aro = find("atom", ["aromatic_organic"])
        self.r_atom_bracket = find("atom", ["bracket_atom"])
        self.r_sym_ali, self.r_sym_aro = find("symbol", ["aliphatic_organic"]), find("symbol", ["aromatic_organic"])
        self.r_branches = [r for r, _ in rules_of("branch")]

        def column(values: dict, dtype=torch.long):
            t = torch.zeros(R, dtype=dtype)
            for r, v in values.items():
                t[r] = v
            return t

        self.bond_rules = [r for r, body in rules_of("bond")]
        self.bond_order = column({r: BOND_ORDER[body[0]] for r, body in rules_of("bond")})
        self.dash = column({r: body[0] == "-" for r, body in rules_of("bond")}, torch.bool)  # not '/' or '\\'
        self.digit_rules = [r for r, body in rules_of("DIGIT")]
        self.digit = column({r: int(body[0]) for r, body in rules_of("DIGIT")})
        if sorted(int(rules_of("DIGIT")[i][1][0]) for i in range(len(self.digit_rules))) != list(range(1, 9)):
            raise ValueError(f"{grammar.name}: DIGIT must be 1-8")
        elements = [(r, body[0], False) for r, body in rules_of("aliphatic_organic")] + \
                   [(r, body[0], True) for r, body in rules_of("aromatic_organic")]
        self.element_rules = [r for r, _, _ in elements]
        self.budget = column({r: VALENCE[e] for r, e, _ in elements})
        self.aromatic = column({r: True for r, _, a in elements if a}, torch.bool)
        # for the Kekule parity: which aromatic element (c needs a double bond in a Kekule structure unless
        # it has an exocyclic one; n needs one with two bonds; o and s never do)
        self.max_degree = column({r: MAX_DEGREE[e] for r, e, a in elements if a})
        arom_kinds = {"c": KIND_C, "n": KIND_N, "o": KIND_O, "s": KIND_S}
        self.arom_kind = column({r: arom_kinds[e] for r, e, a in elements if a})
        # the same bound by aromatic kind (what an atom's elem_kind looks up; none for KIND_NONE)
        self.kind_max_degree = torch.tensor([MAX_ATOMS] + [MAX_DEGREE[e] for e in arom_kinds])
        # bracket atoms: what charge does to an element's valence (RDKit: an ion has the valences of the
        # element with its electron count): B -q, C -|q| (kind -1, 0); N, O, S, P and halogens (kind: their
        # valence electrons, 5-7) +q while the ion keeps at least four electrons, fewer below (_charge_delta);
        # the largest gain a charge can bring, for masks chosen before the charge is
        kind_of = {e: (0 if e in ("C", "c") else -1 if e == "B" else ELECTRONS[e.capitalize()]) for _, e, _ in elements}
        self.charge_kind = column({r: kind_of[e] for r, e, _ in elements})
        self.charge_gain = column({r: 8 if kind_of[e] > 0 else {-1: 1, 0: 0}[kind_of[e]] for r, e, _ in elements})
        self.r_h = [find("hcount", ["H"]), find("hcount", ["H", "DIGIT"])]
        charge_rules = rules_of("charge")
        self.charge_sign = column({r: (1 if body[0] == "+" else -1) for r, body in charge_rules})
        self.r_charge_one = [r for r, body in charge_rules if len(body) == 1]
        self.r_charge_digit = [r for r, body in charge_rules if len(body) == 2]
        self.r_charge_two = [r for r, body in charge_rules if len(body) == 3]
        self.r_bac_chiral = find("BAC", ["chiral"])
        self.r_bac_more = [find("BAC", ["chiral", "BAH"]), find("BAC", ["BAH"])]
        self.r_bah = {"h": find("BAH", ["hcount"]), "hc": find("BAH", ["hcount", "BACH"]), "c": find("BAH", ["BACH"])}
        # rule kinds the update looks at
        kinds = {"ba": [self.r_ba_atom, *self.r_ba.values()], "rb_more": [self.r_rb_more],
                 "bb_more": [self.r_bb_more], "branch": self.r_branches, "bond": self.bond_rules,
                 "digit": self.digit_rules, "element": self.element_rules, "bracket": [self.r_atom_bracket],
                 "h": self.r_h, "charge": [r for r, _ in charge_rules], "charge_two": self.r_charge_two}
        self.kind = {k: column({r: True for r in rs}, torch.bool) for k, rs in kinds.items()}
        self.kind_names = list(kinds)
        self.kind_table = torch.stack([self.kind[k] for k in self.kind_names], 1)   # [R, kinds]: one lookup a step
        self.has_rb = column({self.r_ba["rb"]: True, self.r_ba["rbbb"]: True}, torch.bool)
        self.has_bb = column({self.r_ba["bb"]: True, self.r_ba["rbbb"]: True}, torch.bool)
        # what each rule pushes (reversed, as the stack machine does): level increment and context tag
        width = max(1, max(len(n) for n in grammar.rule_rhs_nonterminals))
        self.level_inc = torch.zeros(R, width, dtype=torch.long)
        self.tag = torch.full((R, width), -1, dtype=torch.long)     # -1: inherit the parent's tag
        self.pushes = torch.zeros(R, len(grammar.lhs_list), dtype=torch.long)
        for r, p in enumerate(grammar.nltk_productions):
            name = p.lhs().symbol()
            nts = [s.symbol() for s in p.rhs() if isinstance(s, nltk.Nonterminal)]
            for k, s in enumerate(reversed(nts)):
                if s in lhs:
                    self.pushes[r, lhs[s]] += 1
                if name == "branch":
                    self.level_inc[r, k] = 1
                if name == "ringbond":
                    self.tag[r, k] = TAG_RING
                elif s == "bond":
                    self.tag[r, k] = TAG_EDGE
                elif name == "hcount":
                    self.tag[r, k] = TAG_HCOUNT
                elif name == "charge":
                    self.tag[r, k] = TAG_CHARGE
                elif name in ("bracket_atom", "isotope"):
                    self.tag[r, k] = TAG_BRACKET
                elif name == "atom" or name == "branched_atom":
                    self.tag[r, k] = TAG_NONE
        # the section of the mask each LHS's rules are judged by (SemanticState.mask); 0: none
        self.section = torch.zeros(len(grammar.lhs_list), dtype=torch.long)
        for name, sec in (("branched_atom", "branched_atom"), ("atom", "element"), ("symbol", "element"),
                          ("aliphatic_organic", "element"), ("aromatic_organic", "element"), ("RB", "ring_bonds"),
                          ("BB", "branches"), ("bond", "bond"), ("hcount", "bracket"), ("BAC", "bracket"),
                          ("BAH", "bracket"), ("charge", "bracket"), ("DIGIT", "digit")):
            self.section[lhs[name]] = SECTIONS.index(sec)
        # the columns of the elements, bonds and digits (slices where the rules are consecutive, as in the
        # shipped grammar: views, not copies), and the tables at those columns
        self.element_cols, self.bond_cols, self.digit_cols = (_columns(c) for c in
                                                              (self.element_rules, self.bond_rules, self.digit_rules))
        el = torch.tensor(self.element_rules)
        self.el_budget, self.el_aromatic, self.el_max_degree = self.budget[el], self.aromatic[el], self.max_degree[el]
        self.el_charge_gain, self.el_arom_kind = self.charge_gain[el], self.arom_kind[el]
        self.n_ali = int((~self.el_aromatic).sum())
        if bool(self.el_aromatic[:self.n_ali].any()):
            raise ValueError(f"{grammar.name}: aliphatic elements must come before aromatic ones")
        self.bond_orders = self.bond_order[torch.tensor(self.bond_rules)]
        self.digit_values = self.digit[torch.tensor(self.digit_rules)]
        if self.digit_values.tolist() != list(range(1, 9)):
            raise ValueError(f"{grammar.name}: DIGIT's rules must be '1' to '8' in order")
        self.charge_later_lhs = torch.tensor([lhs["BAC"], lhs["BAH"], lhs["BACH"], lhs["charge"]])
        self.charge_now_lhs = torch.tensor([lhs["BACH"], lhs["charge"]])
        self.ahead = torch.zeros(len(grammar.lhs_list), dtype=torch.long)
        for s in ("branched_atom", "chain", "branch", "BB"):
            self.ahead[lhs[s]] = 1
        self._on: dict = {}

    def tables(self, device: torch.device) -> "SmilesSemantics":
        """A copy of the tables on ``device`` (cached)."""
        key = str(device)
        if key not in self._on:
            t = object.__new__(SmilesSemantics)
            t.__dict__.update({k: (v.to(device) if isinstance(v, torch.Tensor) else
                                   {kk: vv.to(device) for kk, vv in v.items()} if k == "kind" else v)
                               for k, v in self.__dict__.items() if k != "_on"})
            t._on = {}
            self._on[key] = t
        return self._on[key]

    def start(self, batch: int, depth: int, device) -> "SemanticState":
        return SemanticState(self.tables(torch.device(device)), batch, depth, torch.device(device))


def _columns(rules: list):
    """The rule columns ``rules`` as a slice when they are consecutive, else an index tensor."""
    if rules == list(range(rules[0], rules[-1] + 1)):
        return slice(rules[0], rules[-1] + 1)
    return torch.tensor(rules)


class SemanticState:
    """The semantic state of one batch being decoded; the stack machine calls :meth:`mask` before
    each choice and :meth:`update` after it (before it pops and pushes)."""

    def __init__(self, t: SmilesSemantics, B: int, depth: int, device: torch.device):
        self.t, self.B, self.dev = t, B, device
        z = lambda *shape, v=0, dtype=torch.long: torch.full(shape, v, dtype=dtype, device=device)  # noqa: E731
        self.attr = z(B, depth)                         # level * TAGS + tag of each stack entry
        self.counts = z(B, len(t.grammar.lhs_list))
        self.counts[:, t.grammar.start_index] = 1
        self.free = z(B, MAX_ATOMS)
        self.bracket = z(B, MAX_ATOMS, dtype=torch.bool)
        self.bonded = z(B, MAX_ATOMS, dtype=torch.bool)
        self.open_atom, self.open_order = z(B, 9, v=-1), z(B, 9)
        self.last_at_level = z(B, MAX_LEVELS, v=-1)
        self.cur, self.n_atoms = z(B, v=-1), z(B)
        self.pending_in, self.ring_bond = z(B), z(B)     # bond orders chosen, waiting for their atom / digit
        # promises of the atom being built (set when `branched_atom` expands)
        self.next_level, self.has_next = z(B), z(B)
        self.has_rb, self.has_bb = z(B, dtype=torch.bool), z(B, dtype=torch.bool)
        self.charge_kind, self.charge_sign = z(B), z(B)  # the bracket atom being written
        # aromatic atoms lie on aromatic rings, so each ends with >= 2 aromatic neighbours: per atom, whether
        # it is aromatic, its aromatic neighbours so far and its bonds still to come (successor, branches,
        # ring bonds not yet closed); a choice that leaves an aromatic atom fewer bonds to come than
        # aromatic neighbours missing is masked
        self.aromatic = z(B, MAX_ATOMS, dtype=torch.bool)
        self.arom_nbrs, self.to_come = z(B, MAX_ATOMS), z(B, MAX_ATOMS)
        self.bracket_parent = z(B, v=-1)                 # a bracket atom's parent, linked at its symbol
        self.bracket_in = z(B)                           # and the bond order it was written with (0: implicit)
        self.br_next, self.br_more = z(B), z(B, dtype=torch.bool)  # and its promises: a successor, ring bonds or branches
        # bonds written '-' (between aromatic atoms: a single bond, not an aromatic one; '/' and '\\' are
        # aromatic there, as RDKit reads them): the chain bond waiting for its atom, the bracket atom's, the
        # ring bond waiting for its digit, and each open ring's
        self.pending_dash, self.bracket_dash, self.ring_dash = (z(B, dtype=torch.bool) for _ in range(3))
        self.open_dash = z(B, 9, dtype=torch.bool)
        # Kekule parity: the aromatic systems (atoms joined by implicit bonds between aromatic atoms), each
        # labelled by one of its atoms; per atom its aromatic kind, bonds made or promised (its final degree
        # once nothing is to come), an exocyclic double bond, and `wild` (a bracket atom or an explicit double
        # bond between aromatic atoms: a system holding one is not checked)
        self.comp = z(B, MAX_ATOMS, v=-1)
        self.elem_kind = z(B, MAX_ATOMS)
        self.deg = z(B, MAX_ATOMS)
        self.exo = z(B, MAX_ATOMS, dtype=torch.bool)
        self.wild = z(B, MAX_ATOMS, dtype=torch.bool)
        self.br_arom = z(B, MAX_ATOMS, dtype=torch.bool)  # an aromatic bracket atom: its H and charge count
        self.h, self.q = z(B, MAX_ATOMS), z(B, MAX_ATOMS)
        # the molecule's graph, for the checks that need all of it (:meth:`broken`): each atom's parent in
        # the SMILES tree (chain and branch bonds) and depth there, and the ring closures (the bonds off it)
        self.parent_of, self.depth = z(B, MAX_ATOMS, v=-1), z(B, MAX_ATOMS)
        self.closures, self.n_closures = z(B, MAX_CLOSURES, 2, v=-1), z(B)
        self.rows = torch.arange(B, device=device)
        self._bases = {}
        # atoms are numbered from 0 in each row and no row has more than n_hi yet (updated on the host when
        # atoms are made), so the per-atom work of a step looks at the first `width` columns only
        self.n_hi = 0

    def select(self, keep: torch.Tensor) -> None:
        """Keep the rows ``keep`` [B] bool of every per-row tensor (StackMachine.select)."""
        for name, v in list(vars(self).items()):
            if isinstance(v, torch.Tensor) and name != "rows":
                setattr(self, name, v[keep])
        self.B = int(keep.sum())
        self.rows = torch.arange(self.B, device=self.dev)
        self._bases = {}

    def extend(self, k: int) -> None:
        """Append ``k`` rows in the state of a derivation not begun (StackMachine.extend)."""
        fresh = SemanticState(self.t, k, self.attr.shape[1], self.dev)
        for name, v in list(vars(self).items()):
            if isinstance(v, torch.Tensor) and name != "rows":
                setattr(self, name, torch.cat([v, getattr(fresh, name)]))
        self.B += k
        self.rows = torch.arange(self.B, device=self.dev)
        self._bases = {}

    # ------------------------------------------------------------------ helpers
    @property
    def width(self) -> int:
        """Columns of the per-atom tables that can hold an atom yet (at least 1)."""
        return max(self.n_hi, 1)

    def _top(self, machine):
        sp = machine.sp
        top_attr = self._g(self.attr, (sp - 1).clamp(min=0))
        return top_attr // TAGS, top_attr % TAGS

    def _from_atom(self, level):
        """The atom a bond at branch ``level`` leaves from: the last atom of that level, or for the first
        atom of a branch, the branch's owner (the last atom one level up)."""
        lv = level.clamp(0, MAX_LEVELS - 1)
        here = self._g(self.last_at_level, lv)
        up = self._g(self.last_at_level, (lv - 1).clamp(min=0))
        return torch.where(here >= 0, here, torch.where(lv > 0, up, torch.full_like(up, -1)))

    def _at(self, table, atom):
        return self._g(table, atom.clamp(0, MAX_ATOMS - 1))

    def _successor(self, machine, level):
        """[B] whether the `branched_atom` on top has a successor in its chain: the entry below it is a
        chain bond or atom of the same branch level."""
        sp = machine.sp
        i = (sp - 2).clamp(min=0)
        below = self._g(machine.stack, i)
        below_level = self._g(self.attr, i) // TAGS
        return (sp >= 2) & (below_level == level) & \
            ((below == self.t.lhs["bond"]) | (below == self.t.lhs["branched_atom"]))

    # per-row reads and writes table[b, idx[b]] go through the flat view of the (contiguous) table:
    # index_select / index_copy_ / index_add_ cost less than gather / scatter_ on a CPU at these sizes
    def _flat(self, idx, width: int):
        """Flat positions of table[b, idx[b]] (idx [B]) or table[b, idx[b, j]] (idx [B, k]) in a contiguous
        [B, width] table (idx in range)."""
        base = self._bases.get(width)
        if base is None:
            base = self._bases[width] = self.rows * width
        return (base if idx.dim() == 1 else base[:, None]) + idx

    def _g(self, table, idx):
        """table[b, idx[b]] for each row b (idx in range)."""
        return table.view(-1).index_select(0, self._flat(idx, table.shape[1]))

    def _put(self, table, idx, value):
        """table[b, idx[b]] = value[b] for each row b, in place."""
        table.view(-1).index_copy_(0, self._flat(idx, table.shape[1]), value)

    def _add(self, table, idx, value):
        """table[b, idx[b]] += value[b] for each row b, in place."""
        table.view(-1).index_add_(0, self._flat(idx, table.shape[1]), value)

    def _take(self, atoms):
        """A reader of the per-atom tables [B, MAX_ATOMS] at ``atoms`` [B, k] (-1: none, read as atom 0):
        the flat positions are computed once for all the tables read there."""
        flat = self._flat(atoms.clamp(0, MAX_ATOMS - 1), MAX_ATOMS)
        shape, flat = flat.shape, flat.view(-1)
        return lambda table: table.view(-1).index_select(0, flat).view(shape)

    def _deficit(self, atom):
        """[B] aromatic neighbours an atom still lacks (0 for aliphatic atoms and for no atom)."""
        arom = self._at(self.aromatic, atom) & (atom >= 0)
        return torch.where(arom, (2 - self._at(self.arom_nbrs, atom)).clamp(min=0), torch.zeros_like(atom))

    def arom_deficit_of(self, atoms, take=None):
        """[B, k] the same for several atoms per row (``take``: their reader, _take)."""
        take = take or self._take(atoms)
        arom = take(self.aromatic) & (atoms >= 0)
        return torch.where(arom, (2 - take(self.arom_nbrs)).clamp(min=0), torch.zeros_like(atoms))

    def _link(self, rows, child, parent, mask):
        """Record the bond child-parent (rows in ``mask``): one bond to come less for the parent, and
        each an aromatic neighbour more if the other is aromatic."""
        has = mask & (parent >= 0)
        c, p = child.clamp(min=0), parent.clamp(min=0)
        c_arom, p_arom = self._g(self.aromatic, c), self._g(self.aromatic, p)
        self._add(self.to_come, p, -has.long())
        self._add(self.arom_nbrs, p, (has & c_arom).long())
        self._add(self.arom_nbrs, c, (has & p_arom).long())

    def _systems(self):
        """Per aromatic system, indexed by its label [B, width]: bonds still to come from its atoms
        (0: it can neither grow nor change), the parity of its atoms that need a double bond in a Kekule
        structure, and whether it is wild (not checked). A Kekule structure pairs those atoms along the
        system's bonds, so a finished system with an odd number of them cannot be kekulized."""
        W = self.width
        comp = self.comp[:, :W]
        member = comp >= 0
        label = comp.clamp(min=0)
        needs, unsure = self._needs(slice(0, W))
        zero = torch.zeros_like(comp)
        slots = zero.scatter_add(1, label, self.to_come[:, :W] * member)
        odd = zero.scatter_add(1, label, (needs & member).long()) % 2
        wild = zero.scatter_add(1, label, ((self.wild[:, :W] | unsure) & member).long()) > 0
        return slots, odd, wild

    def _needs(self, idx, unsure: bool = True):
        """(needs a double bond, not known) of atoms ``idx`` (an index over MAX_ATOMS, or [B, k] atoms).
        Organic atoms: c unless it has an exocyclic double bond, n with two bonds; o and s never. A bracket
        atom needs one when its valence (RDKit's, for the element with its charge's electron count) leaves
        exactly one bond unused by its neighbours and H; other cases (and charges of two digits, bracket s)
        are not known."""
        take = (lambda x: x[:, idx]) if isinstance(idx, slice) else idx if callable(idx) else self._take(idx)
        kind, deg, exo, q = take(self.elem_kind), take(self.deg), take(self.exo), take(self.q)
        organic = ~exo & ((kind == KIND_C) | ((kind == KIND_N) & (deg == 2)))
        valence = torch.where(kind == KIND_C, 4 - q.abs(), torch.where(kind == KIND_N, 3 + q, 2 + q))
        rem = valence - deg - take(self.h) - exo.long()
        br = take(self.br_arom)
        needs = torch.where(br, rem == 1, organic)
        if not unsure:
            return needs, None
        unsure = br & ((rem < 0) | (rem > 1) | (kind == KIND_S) | take(self.bracket))
        return needs, unsure

    def _system_of(self, table, atoms):
        """``table`` [B, width] (by system label, _systems) at the systems of ``atoms`` [B] or [B, k]."""
        squeeze = atoms.dim() == 1
        a = atoms[:, None] if squeeze else atoms
        lab = self._take(a)(self.comp).clamp(min=0)
        out = table.gather(1, lab)
        return out.squeeze(1) if squeeze else out

    def _last_atom_finishes_odd(self, slots, odd, wild, parent, dash, n_open, o_arom, cols):
        """[B, len(cols)] for the molecule's last atom X (nothing can follow it, so its ring bonds close
        every open ring, by implicit bonds as far as is known now): whether element ``cols`` would leave a
        finished aromatic system with an odd number of atoms needing a double bond. An aromatic X joins
        its parent's system (bond not written '-') and those of its aromatic ring openers (``o_arom``
        [B, 9]: the open rings' openers that are aromatic) into one."""
        t = self.t
        o_lab = self.comp.gather(1, self.open_atom.clamp(min=0))
        p_arom = self._at(self.aromatic, parent) & (parent >= 0)
        p_lab = self._at(self.comp, parent)
        zero = torch.zeros_like(slots)
        # (an aliphatic X is not judged here: a ring closure written '=' onto a c frees that c from needing a
        # double bond, so the parity is known only when the closures are written; the ring digits' check
        # sees it then)
        # aromatic X: one union of the touched systems (the parent's only if the bond joins them)
        p_joins = p_arom & ~dash
        union = zero.scatter_add(1, o_lab.clamp(min=0), o_arom.long()) > 0
        union |= torch.zeros_like(union).scatter(1, p_lab.clamp(min=0)[:, None], p_joins[:, None])
        left = (slots * union).sum(1) - p_joins.long() - (union.gather(1, o_lab.clamp(min=0)) & o_arom).sum(1)
        u_odd = (odd * union).sum(1) % 2
        u_wild = (wild & union).any(1)
        kind = t.el_arom_kind[None, :]
        deg = (parent >= 0).long() + n_open
        needs = (kind == KIND_C) | ((kind == KIND_N) & (deg == 2)[:, None])
        arom_bad = (union.any(1) & ~u_wild & (left == 0))[:, None] & ((u_odd[:, None] + needs.long()) % 2 == 1)
        return arom_bad & t.el_aromatic[None, :]

    def _needs_now(self, atoms):
        """[B, k] whether each atom (or a _take reader) counts as needing a double bond now."""
        return self._needs(atoms, unsure=False)[0]

    def _ahead(self, lhs):
        """Atoms that can still follow, after the current entry is popped (a lower bound; > 0 is what counts)."""
        return (self.counts * self.t.ahead).sum(1) - self.t.ahead[lhs]

    # ------------------------------------------------------------------ the whole molecule
    def on_a_ring(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[B, MAX_ATOMS] bool (or [k, MAX_ATOMS] for the rows ``rows`` [B] bool): atoms on a cycle of the
        molecular graph. Every cycle holds a ring closure, and an atom lies on one exactly when it is on the
        tree path between the two ends of some closure (their walk up to the common ancestor): all closures
        of the batch walk together, one tree level a step."""
        pick = (lambda v: v) if rows is None else (lambda v: v[rows])  # noqa: E731
        closures, depth, parent_of = pick(self.closures), pick(self.depth), pick(self.parent_of)
        u, v = closures[..., 0], closures[..., 1]                    # [B, K]; -1 where none
        live = (u >= 0) & (v >= 0)
        on = torch.zeros(len(u), MAX_ATOMS + 1, dtype=torch.bool, device=self.dev)   # column MAX_ATOMS: a sink
        sink = torch.full_like(u, MAX_ATOMS)
        mark = lambda x, m: on.scatter_(1, torch.where(m, x, sink), True)  # noqa: E731
        mark(u, live), mark(v, live)
        du = depth.gather(1, u.clamp(min=0))
        dv = depth.gather(1, v.clamp(min=0))
        for _ in range(MAX_ATOMS):
            live = live & (u != v)
            if not bool(live.any()):
                break
            up_u, up_v = live & (du >= dv), live & (dv >= du)
            u = torch.where(up_u, parent_of.gather(1, u.clamp(min=0)), u)
            v = torch.where(up_v, parent_of.gather(1, v.clamp(min=0)), v)
            du, dv = du - up_u.long(), dv - up_v.long()
            live = live & (u >= 0) & (v >= 0)
            mark(u, live), mark(v, live)
        return on[:, :MAX_ATOMS]

    def broken(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[B] bool (or [k] for the rows ``rows`` [B] bool): finished rows whose molecule breaks what only
        the whole of it shows, which no mask could refuse step by step: an aromatic atom on no ring (RDKit:
        "non-ring atom marked aromatic"; two aromatic neighbours are not enough, as in
        c1ccccc1[nH]c1ccccc1). GrammarAE.decode decodes such rows again, as those a mask cornered."""
        pick = (lambda v: v) if rows is None else (lambda v: v[rows])  # noqa: E731
        atoms = torch.arange(MAX_ATOMS, device=self.dev)[None, :] < pick(self.n_atoms)[:, None]
        return (pick(self.aromatic) & atoms & ~self.on_a_ring(rows)).any(1)

    # ------------------------------------------------------------------ the mask
    def mask(self, machine) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, R] bool masks of the three tiers: ring structure, valence/aromaticity, Kekule parity.

        Each row's choice is among its LHS's rules, so only the columns of the LHSs on top of some stack are
        computed (a section per LHS group, SECTIONS: one no row needs costs nothing); the others stay True."""
        t, B = self.t, self.B
        lhs = machine.top()
        level, tag = self._top(machine)
        ok = torch.ones(B, t.grammar.n_rules, dtype=torch.bool, device=self.dev)
        soft, kek = torch.ones_like(ok), torch.ones_like(ok)
        present = torch.bincount(t.section[lhs], minlength=len(SECTIONS)).tolist()
        self._memo = {}          # what several sections use, computed once a step (_once)
        for s in range(1, len(SECTIONS)):
            if present[s]:
                getattr(self, "_mask_" + SECTIONS[s])(machine, lhs, level, tag, ok, soft, kek)
        return ok, soft, kek

    def _once(self, name, f):
        """``f()``, computed once per mask call (the sections share it)."""
        if name not in self._memo:
            self._memo[name] = f()
        return self._memo[name]

    def _n_open(self):
        return self._once("n_open", lambda: (self.open_atom >= 0).sum(1))

    def _cur_budget(self):
        """(free budget of the current atom, whether it is unbudgeted: a bracket atom before its symbol, or none)."""
        return self._once("cur_budget", lambda: (self._at(self.free, self.cur),
                                                 self._at(self.bracket, self.cur) | (self.cur < 0)))

    def _mask_branched_atom(self, machine, lhs, level, tag, ok, soft, kek):
        t = self.t
        n_open, ahead = self._n_open(), self._once("ahead", lambda: self._ahead(lhs))
        # with nothing after it, the atom's ring bonds can only close rings, so it takes some exactly when
        # rings are open; a ring its parent-to-be opened cannot close on it (the pair is bonded), so then it
        # needs branches, whose atoms can
        nothing_after = ahead == 0
        pp = self._from_atom(level)
        parent_opened = (self.open_atom == pp[:, None]) & (self.open_atom >= 0)
        # ... and two rings one atom opened cannot both close on one atom (a double bond by ring closures)
        oa = self.open_atom
        twice = ((oa[:, :, None] == oa[:, None, :]) & (oa[:, :, None] >= 0)).sum((1, 2)) > (oa >= 0).sum(1)
        blocked = parent_opened.any(1) | twice
        ok[:, t.r_ba_atom] = ~(nothing_after & (n_open > 0))
        ok[:, t.r_ba["rb"]] = ~nothing_after | ((n_open > 0) & ~blocked)
        # an aromatic parent-to-be short of aromatic neighbours needs this atom aromatic, which needs a
        # second bond: a successor, ring bonds or branches
        pp_short = self._at(self.aromatic, pp) & (pp >= 0) & (self._deficit(pp) > self._at(self.to_come, pp) - 1)
        soft[:, t.r_ba_atom] = ~pp_short | self._successor(machine, level)

    def _mask_element(self, machine, lhs, level, tag, ok, soft, kek):
        """The element of a new atom (organic subset), the bracket symbol, and the rules leading to them."""
        t = self.t
        n_open, ahead = self._n_open(), self._once("ahead", lambda: self._ahead(lhs))
        cur_free, _ = self._cur_budget()
        parent = self._from_atom(self.next_level)
        c_in = torch.where(parent >= 0, self.pending_in.clamp(min=1), torch.zeros_like(parent))
        must_close = (ahead == 0) & (n_open > 0)
        rings = torch.where(must_close, n_open, self.has_rb.long())
        need = c_in + self.has_next + self.has_bb.long() + rings
        # an aromatic atom needs two aromatic neighbours: its parent (if aromatic) and bonds to come
        # (ring bonds and branches can be several); an aromatic parent short of them may need this atom
        # to be aromatic too
        parent_here = torch.where(in_bracket_now := (tag == TAG_BRACKET), self.bracket_parent, parent)
        p_arom = self._at(self.aromatic, parent_here) & (parent_here >= 0)
        # (inside brackets the atom exists already: its promises were kept when '[' made it)
        has_next = torch.where(in_bracket_now, self.br_next, self.has_next)
        more_later = torch.where(torch.where(in_bracket_now, self.br_more, self.has_rb | self.has_bb), 2, 0)
        aromatic_ok = (p_arom.long() + has_next + more_later) >= 2
        # the molecule's last atom: its ring bonds close the open rings, and only aromatic openers give it
        # aromatic neighbours; an aromatic opener short of them needs it aromatic
        opener_all = self.open_atom
        take_o = self._take(opener_all)
        op_arom = take_o(self.aromatic) & (opener_all >= 0)
        op_short = op_arom & (self.arom_deficit_of(opener_all, take_o) > take_o(self.to_come) - 1)
        aromatic_ok = torch.where(must_close, (p_arom.long() + op_arom.sum(1)) >= 2, aromatic_ok)
        # an aromatic organic atom has at most MAX_DEGREE neighbours (c and n three: sp2)
        degree = (parent_here >= 0).long() + self.has_next + self.has_bb.long() + rings
        p_short = p_arom & (self._deficit(parent_here) > self._at(self.to_come, parent_here) - 1)
        p_short |= must_close & op_short.any(1)
        cols = t.element_cols
        arom_col = t.el_aromatic[None, :]
        elem_ok = (t.el_budget[None, :] >= need[:, None]) & (~arom_col | aromatic_ok[:, None])
        elem_ok &= arom_col | ~p_short[:, None]
        elem_ok &= ~arom_col | (degree[:, None] <= t.el_max_degree[None, :])
        # inside brackets: the symbol's valence (plus what a charge still to come could add) must cover
        # the bonds promised; then explicit H, the charge and its digits, as they are chosen
        charge_later = (self.counts.index_select(1, t.charge_later_lhs).sum(1) > 0).long()
        bracket_free = cur_free - BRACKET_BUDGET           # minus the bonds promised, before the symbol
        sym_ok = (bracket_free[:, None] + t.el_budget[None, :] + t.el_charge_gain[None, :] * charge_later[:, None]) >= 0
        # (an aromatic bracket atom, [nH] or [n+], lies on a ring as any other: two aromatic neighbours)
        sym_ok &= (arom_col | ~p_short[:, None]) & (~arom_col | aromatic_ok[:, None])
        elem_ok = torch.where(in_bracket_now[:, None], sym_ok, elem_ok)
        soft[:, cols] = elem_ok
        ali, aro = slice(0, t.n_ali), slice(t.n_ali, None)           # aliphatic elements come first
        for r in (t.r_atom_ali, t.r_sym_ali):
            soft[:, r] = elem_ok[:, ali].any(1)
        for r in (t.r_atom_aro, t.r_sym_aro):
            soft[:, r] = elem_ok[:, aro].any(1)

        # Kekule parity (third tier): an atom that does not join its parent's aromatic system (aliphatic,
        # or bonded by a bond written '-') takes the system's last bond to come; the system is then
        # finished and must hold an even number of atoms that need a double bond (an exocyclic double
        # bond on a c parent frees it from needing one)
        slots, odd, wild = self._once("systems", self._systems)
        e = torch.where(in_bracket_now, self.bracket_in, self.pending_in)
        last = p_arom & ~self._system_of(wild, parent_here) & (self._system_of(slots, parent_here) == 1)
        pidx = parent_here.clamp(min=0)[:, None]
        flip = (e == 2) & self._needs_now(pidx).squeeze(1)
        finish_odd = last & ((self._system_of(odd, parent_here) == 1) ^ flip)
        dash = torch.where(in_bracket_now, self.bracket_dash, self.pending_dash)
        joins = arom_col & ~dash[:, None]
        bad_col = finish_odd[:, None] & ~joins
        # the molecule's last atom closes every open ring: the systems it touches are then finished together
        last_bad = self._last_atom_finishes_odd(slots, odd, wild, parent_here, dash, n_open, op_arom, cols)
        bad_col |= must_close[:, None] & last_bad & ~(in_bracket_now[:, None] & arom_col)  # a bracket atom is wild
        kek[:, cols] = ~bad_col
        # a rule that leads to an element is allowed by this tier if some element passes both tiers (an
        # element that passes each tier alone, but not both, would corner the next step)
        both = elem_ok & ~bad_col
        for r in (t.r_atom_ali, t.r_sym_ali):
            kek[:, r] = both[:, ali].any(1)
        for r in (t.r_atom_aro, t.r_sym_aro):
            kek[:, r] = both[:, aro].any(1)
        # '[' only where some bracket symbol will pass: the aromaticity rules and the parity, as they will
        # stand at the symbol (a bracket atom's budget can be met by its H and charge; it is exempt from the
        # last atom's check, being wild)
        br_soft = (arom_col | ~p_short[:, None]) & (~arom_col | aromatic_ok[:, None])
        soft[:, t.r_atom_bracket] = br_soft.any(1) | in_bracket_now
        kek[:, t.r_atom_bracket] = (br_soft & ~(finish_odd[:, None] & ~joins)).any(1) | in_bracket_now

    def _more_bonds(self):
        """(another ring bond or branch fits the current atom's budget and degree, the current atom is
        aromatic and short of bonds to come)."""
        t = self.t
        cur_free, cur_unbudgeted = self._cur_budget()
        room = ~(self._at(self.aromatic, self.cur) & ~self._at(self.br_arom, self.cur)) | \
            (self._at(self.deg, self.cur) < t.kind_max_degree[self._at(self.elem_kind, self.cur)])
        short = self._deficit(self.cur) > self._at(self.to_come, self.cur)
        return ((cur_free >= 1) | cur_unbudgeted) & room, short

    def _mask_ring_bonds(self, machine, lhs, level, tag, ok, soft, kek):
        """How many ring bonds: each costs budget; with nothing after, exactly as many as rings are open."""
        t = self.t
        n_open, last = self._n_open(), self._once("ahead", lambda: self._ahead(lhs)) == 0
        p = self.counts[:, t.lhs["ringbond"]]
        ok[:, t.r_rb_more] = ~last | (n_open > p + 1)
        ok[:, t.r_rb_one] = ~last | (n_open == p + 1)
        fits, short = self._once("more", self._more_bonds)
        soft[:, t.r_rb_more] = fits
        # an aromatic atom stops taking ring bonds / branches only with enough bonds to come
        soft[:, t.r_rb_one] = ~short | (self.counts[:, t.lhs["BB"]] > 0)

    def _mask_branches(self, machine, lhs, level, tag, ok, soft, kek):
        fits, short = self._once("more", self._more_bonds)
        soft[:, self.t.r_bb_more] = fits
        soft[:, self.t.r_bb_one] = ~short

    def _mask_bond(self, machine, lhs, level, tag, ok, soft, kek):
        """Bond orders: within the budget of the atom the bond leaves from."""
        t = self.t
        src = torch.where(tag == TAG_RING, self.cur, self._from_atom(level))
        src_free = self._at(self.free, src)
        src_unbudgeted = self._at(self.bracket, src) | (src < 0)
        orders = t.bond_orders
        soft[:, t.bond_cols] = ((orders[None, :] - 1) <= src_free[:, None]) | src_unbudgeted[:, None]

    def _bracket_budget(self):
        """For the bracket atom being written: (its free budget, what its charge kind can add: now, and once a
        charge is still possible)."""
        t = self.t
        cur_free, cur_unbudgeted = self._cur_budget()
        kind_c = self.charge_kind
        gain_any = torch.where(kind_c > 0, 8, torch.where(kind_c == -1, 1, 0))
        gain = gain_any * (self.counts.index_select(1, t.charge_now_lhs).sum(1) > 0).long()
        free_b = torch.where(cur_unbudgeted, torch.full_like(cur_free, BRACKET_BUDGET), cur_free)
        return free_b, gain, gain_any

    def _mask_bracket(self, machine, lhs, level, tag, ok, soft, kek):
        """Explicit H and charge of a bracket atom (its symbol is known by then)."""
        t = self.t
        free_b, gain, gain_any = self._once("bracket", self._bracket_budget)
        kind_c = self.charge_kind
        h_ok = free_b - 1 + gain >= 0
        for r in t.r_h:
            soft[:, r] = h_ok
        soft[:, t.r_bac_chiral] = free_b >= 0
        for r in t.r_bac_more:
            soft[:, r] = free_b + gain_any >= 0
        soft[:, t.r_bah["h"]] = free_b - 1 >= 0
        soft[:, t.r_bah["hc"]] = free_b - 1 + gain_any >= 0
        soft[:, t.r_bah["c"]] = free_b + gain_any >= 0
        one = torch.ones_like(kind_c)
        for r in t.r_charge_one:
            soft[:, r] = free_b + _charge_delta(kind_c, one * int(t.charge_sign[r])) >= 0
        digits = t.digit_values[None, :]
        for r in t.r_charge_digit:   # the best digit for it
            soft[:, r] = free_b + _charge_delta(kind_c[:, None], digits * int(t.charge_sign[r])).amax(1) >= 0

    def _mask_digit(self, machine, lhs, level, tag, ok, soft, kek):
        """A digit: of an explicit H count or a charge (the bracket atom's budget), or of a ring bond."""
        t = self.t
        digit_cols = t.digit_cols
        free_b, gain, _ = self._once("bracket", self._bracket_budget)
        kind_c = self.charge_kind
        digits = t.digit_values[None, :]
        sign = self.charge_sign[:, None]
        extra = _charge_delta(kind_c[:, None], sign * digits) - _charge_delta(kind_c, self.charge_sign)[:, None]
        h_digit_ok = (free_b[:, None] - (digits - 1) + gain[:, None]) >= 0
        c_digit_ok = (free_b[:, None] + extra) >= 0
        digit_ctx = torch.where((tag == TAG_HCOUNT)[:, None], h_digit_ok,
                                torch.where((tag == TAG_CHARGE)[:, None], c_digit_ok, torch.ones_like(h_digit_ok)))

        # ring digits
        ring = (tag == TAG_RING)[:, None]
        ahead = self._once("ahead", lambda: self._ahead(lhs))
        cur_free, cur_unbudgeted = self._cur_budget()
        opener = self.open_atom[:, 1:]                               # [B, 8] for digits 1..8
        is_open = opener >= 0
        order = self.open_order[:, 1:]
        rb = self.ring_bond[:, None]
        same = opener == self.cur[:, None]
        take_o = self._take(opener)
        bonded = take_o(self.bonded) & is_open
        agree = (rb == 0) | (order == 0) | (rb == order)
        cost = torch.where(rb > 0, rb, order.clamp(min=1))
        cur_pays = ((cost - 1) <= cur_free[:, None]) | cur_unbudgeted[:, None]
        opener_free = take_o(self.free)
        opener_pays = (rb <= 1) | (order > 0) | ((rb - 1) <= opener_free) | take_o(self.bracket)
        close_ok = is_open & ~same & ~bonded & agree
        pays = cur_pays & opener_pays
        # a closure between an aromatic and an aliphatic atom gives the aromatic one no aromatic neighbour
        o_arom = take_o(self.aromatic) & is_open
        c_arom = self._at(self.aromatic, self.cur)
        o_short = o_arom & (self.arom_deficit_of(opener, take_o) > take_o(self.to_come) - 1)
        c_short = c_arom & (self._deficit(self.cur) > self._at(self.to_come, self.cur) - 1)
        pays &= ~(o_short & ~c_arom[:, None]) & ~(c_short[:, None] & ~o_arom)
        open_ok = ~is_open & (ahead > 0)[:, None]
        ok[:, digit_cols] = torch.where(ring, (close_ok | open_ok), True)
        soft[:, digit_cols] = torch.where(ring, (~is_open | pays), digit_ctx)

        # Kekule parity of ring closures: closing by an implicit bond between two aromatic atoms joins
        # their systems (or uses two bonds of one); any other closure takes one bond of each aromatic end's
        # system. A system left with no bond to come must hold an even number of atoms needing a double bond.
        slots, odd, wild = self._once("systems", self._systems)
        explicit = (rb > 0) | (order > 0)
        take_x = self._take(self.cur[:, None])
        x_sys = take_x(self.comp)
        o_sys = take_o(self.comp)
        x_lab, o_lab = x_sys.clamp(min=0), o_sys.clamp(min=0)      # their systems' labels
        both = c_arom[:, None] & o_arom
        same = both & (x_sys == o_sys)
        double = both & explicit & (cost >= 2)             # a Kekule bond written out: not checked
        dash_ring = self.ring_dash[:, None] | self.open_dash[:, 1:]
        joined = both & (~dash_ring | same) & ~double
        s_x, s_o = slots.gather(1, x_lab), slots.gather(1, o_lab)
        odd_x, odd_o = odd.gather(1, x_lab) == 1, odd.gather(1, o_lab) == 1
        wild_x, wild_o = wild.gather(1, x_lab), wild.gather(1, o_lab)
        s_after = torch.where(same, s_x - 2, s_x + s_o - 2)
        odd_after = torch.where(same, odd_x, odd_x ^ odd_o)
        bad = joined & ~wild_x & ~wild_o & (s_after == 0) & odd_after
        apart = ~joined & ~double
        flip_x = (cost == 2) & ~o_arom & self._needs_now(take_x)
        flip_o = (cost == 2) & ~c_arom[:, None] & self._needs_now(take_o)
        bad |= apart & c_arom[:, None] & ~wild_x & (s_x == 1) & (odd_x ^ flip_x)
        bad |= apart & o_arom & ~wild_o & (s_o == 1) & (odd_o ^ flip_o)
        kek[:, digit_cols] = torch.where(ring, ~(is_open & bad), True)

    # ------------------------------------------------------------------ the update
    def update(self, machine, rule: torch.Tensor) -> None:
        """Record the chosen rules; call before the machine pops and pushes."""
        t, rows = self.t, self.rows
        lhs = machine.top()
        level, tag = self._top(machine)
        active = machine.sp > 0
        is_kind = t.kind_table[rule] & active[:, None]
        kind = {k: is_kind[:, j] for j, k in enumerate(t.kind_names)}

        # branched_atom: the promises of the atom about to be made
        sp = machine.sp
        successor = self._successor(machine, level)
        ba = kind["ba"]
        self.has_next = torch.where(ba, successor.long(), self.has_next)
        self.has_rb = torch.where(ba, t.has_rb[rule], self.has_rb)
        self.has_bb = torch.where(ba, t.has_bb[rule], self.has_bb)
        self.next_level = torch.where(ba, level, self.next_level)

        # a new atom: an organic element (outside brackets) or a bracket atom
        new = (kind["element"] & (tag != TAG_BRACKET)) | kind["bracket"]
        if bool(new.any()):
            a = self.n_atoms.clamp(max=MAX_ATOMS - 1)
            parent = self._from_atom(self.next_level)
            c_in = torch.where(parent >= 0, self.pending_in.clamp(min=1), torch.zeros_like(parent))
            reserved = self.has_next + self.has_bb.long() + self.has_rb.long()
            budget = torch.where(kind["bracket"], torch.full_like(c_in, BRACKET_BUDGET), t.budget[rule])
            self._put(self.free, a, torch.where(new, budget - c_in - reserved, self._g(self.free, a)))
            self._put(self.bracket, a, torch.where(new, kind["bracket"], self._g(self.bracket, a)))
            has_parent = new & (parent >= 0)
            pidx = parent.clamp(min=0)
            self._add(self.free, pidx, -(torch.where(has_parent, c_in - 1, torch.zeros_like(c_in))))
            self.n_hi = min(max(self.n_hi, int(self.n_atoms.max()) + 1), MAX_ATOMS)
            self.bonded[:, :self.n_hi] &= ~new[:, None]
            self._put(self.bonded, pidx, self._g(self.bonded, pidx) | has_parent)
            self._put(self.to_come, a, torch.where(new, reserved, self._g(self.to_come, a)))
            self._put(self.arom_nbrs, a, torch.where(new, torch.zeros_like(c_in), self._g(self.arom_nbrs, a)))
            organic = new & ~kind["bracket"]
            # Kekule parity: the new atom's kind, degree, and the aromatic system it joins
            e = self.pending_in
            p_arom = self._g(self.aromatic, pidx) & (parent >= 0)
            arom_new = organic & t.aromatic[rule]
            joins = arom_new & p_arom & ~self.pending_dash
            self._put(self.elem_kind, a, torch.where(new, torch.where(organic, t.arom_kind[rule], 0), self._g(self.elem_kind, a)))
            self._put(self.deg, a, torch.where(new, (parent >= 0).long() + reserved, self._g(self.deg, a)))
            self._put(self.comp, a, torch.where(new, torch.where(arom_new, torch.where(joins, self._g(self.comp, pidx), a), -1),
                                             self._g(self.comp, a)))
            written_double = arom_new & p_arom & (e >= 2)
            self._put(self.wild, a, torch.where(new, written_double, self._g(self.wild, a)))
            self._put(self.br_arom, a, self._g(self.br_arom, a) & ~new)
            self._put(self.h, a, torch.where(new, 0, self._g(self.h, a)))
            self._put(self.q, a, torch.where(new, 0, self._g(self.q, a)))
            self._put(self.wild, pidx, self._g(self.wild, pidx) | written_double)
            self._put(self.exo, a, torch.where(new, arom_new & ~p_arom & (parent >= 0) & (e == 2), self._g(self.exo, a)))
            self._put(self.exo, pidx, self._g(self.exo, pidx) | (organic & ~t.aromatic[rule] & p_arom & (e == 2)))
            self.bracket_in = torch.where(kind["bracket"], e, self.bracket_in)
            self.bracket_dash = torch.where(kind["bracket"], self.pending_dash, self.bracket_dash)
            self._put(self.aromatic, a, torch.where(new, organic & t.aromatic[rule], self._g(self.aromatic, a)))
            self._link(rows, a, parent, organic)        # a bracket atom links when its symbol is known
            self.bracket_parent = torch.where(kind["bracket"], parent, self.bracket_parent)
            self._put(self.parent_of, a, torch.where(new, parent, self._g(self.parent_of, a)))
            self._put(self.depth, a, torch.where(new, torch.where(parent >= 0, self._g(self.depth, pidx) + 1, 0),
                                              self._g(self.depth, a)))
            self.br_next = torch.where(kind["bracket"], self.has_next, self.br_next)
            self.br_more = torch.where(kind["bracket"], self.has_rb | self.has_bb, self.br_more)
            self.cur = torch.where(new, a, self.cur)
            lv = self.next_level.clamp(0, MAX_LEVELS - 1)
            self._put(self.last_at_level, lv, torch.where(new, a, self._g(self.last_at_level, lv)))
            self.n_atoms += new.long()
            self.pending_in = torch.where(new, torch.zeros_like(c_in), self.pending_in)
            self.pending_dash &= ~new
            self.has_next = torch.where(new, torch.zeros_like(c_in), self.has_next)
            self.has_rb &= ~new
            self.has_bb &= ~new

        # a bracket atom's symbol, explicit H and charge set its budget (nothing to do on a step where no
        # row writes one: a test on the host, as for the blocks below)
        cidx = self.cur.clamp(min=0)
        sym = kind["element"] & (tag == TAG_BRACKET)
        h_digit = kind["digit"] & (tag == TAG_HCOUNT)
        c_digit = kind["digit"] & (tag == TAG_CHARGE)
        if bool((sym | kind["h"] | h_digit | kind["charge"] | c_digit).any()):
            self._add(self.free, cidx, torch.where(sym, t.budget[rule] - BRACKET_BUDGET, torch.zeros_like(cidx)))
            self._put(self.bracket, cidx, self._g(self.bracket, cidx) & ~sym)
            self.charge_kind = torch.where(sym, t.charge_kind[rule], self.charge_kind)
            self._put(self.aromatic, cidx, self._g(self.aromatic, cidx) | (sym & t.aromatic[rule]))
            self._link(rows, self.cur, self.bracket_parent, sym)
            # an aromatic bracket atom joins its parent's aromatic system (its H and charge decide whether it
            # needs a double bond); an aliphatic one written with '=' to an aromatic parent is exocyclic to it
            bp = self.bracket_parent
            bpi = bp.clamp(min=0)
            bp_arom = self._g(self.aromatic, bpi) & (bp >= 0)
            aro_sym = sym & t.aromatic[rule]
            joins_b = aro_sym & bp_arom & ~self.bracket_dash
            self._put(self.comp, cidx, torch.where(aro_sym, torch.where(joins_b, self._g(self.comp, bpi), cidx), self._g(self.comp, cidx)))
            self._put(self.br_arom, cidx, self._g(self.br_arom, cidx) | aro_sym)
            self._put(self.elem_kind, cidx, torch.where(sym, t.arom_kind[rule], self._g(self.elem_kind, cidx)))
            self._put(self.exo, bpi, self._g(self.exo, bpi) | (sym & ~t.aromatic[rule] & bp_arom & (self.bracket_in == 2)))
            # O=[n+]1...: an N-oxide
            self._put(self.exo, cidx, self._g(self.exo, cidx) | (aro_sym & ~bp_arom & (bp >= 0) & (self.bracket_in == 2)))
            self._add(self.free, cidx, -kind["h"].long())
            self._add(self.free, cidx, -(torch.where(h_digit, t.digit[rule] - 1, torch.zeros_like(cidx))))
            self._add(self.h, cidx, kind["h"].long() + torch.where(h_digit, t.digit[rule] - 1, torch.zeros_like(cidx)))
            kc = self.charge_kind
            sign = t.charge_sign[rule]
            self._add(self.free, cidx, torch.where(kind["charge"], _charge_delta(kc, sign), torch.zeros_like(cidx)))
            self.charge_sign = torch.where(kind["charge"], sign, self.charge_sign)
            q = self.charge_sign * t.digit[rule]
            self._put(self.q, cidx, torch.where(kind["charge"], sign, torch.where(c_digit, q, self._g(self.q, cidx))))
            self._add(self.free, cidx, torch.where(c_digit, _charge_delta(kc, q) - _charge_delta(kc, self.charge_sign),
                                                 torch.zeros_like(cidx)))
            self._put(self.bracket, cidx, self._g(self.bracket, cidx) | kind["charge_two"])   # charges of two digits: not budgeted

        # one more ring bond or branch promised by the current atom
        more = kind["rb_more"] | kind["bb_more"]
        self._add(self.free, cidx, -more.long())
        self._add(self.to_come, cidx, more.long())
        self._add(self.deg, cidx, more.long())

        # a branch opens a new level: its first atom bonds to the owner
        br = kind["branch"]
        nl = (level + 1).clamp(max=MAX_LEVELS - 1)
        self._put(self.last_at_level, nl, torch.where(br, torch.full_like(nl, -1), self._g(self.last_at_level, nl)))

        # bonds: a chain/branch bond waits for its atom, a ring bond for its digit
        o = t.bond_order[rule]
        self.pending_in = torch.where(kind["bond"] & (tag == TAG_EDGE), o, self.pending_in)
        self.ring_bond = torch.where(kind["bond"] & (tag == TAG_RING), o, self.ring_bond)
        self.pending_dash = torch.where(kind["bond"] & (tag == TAG_EDGE), t.dash[rule], self.pending_dash)
        self.ring_dash = torch.where(kind["bond"] & (tag == TAG_RING), t.dash[rule], self.ring_dash)

        # ring digits: close an open ring or open a new one
        dig = kind["digit"] & (tag == TAG_RING)
        if bool(dig.any()):
            d = t.digit[rule].clamp(min=0)
            opener = self._g(self.open_atom, d)
            order = self._g(self.open_order, d)
            closing = dig & (opener >= 0)
            opening = dig & (opener < 0)
            rb = self.ring_bond
            cost = torch.where(rb > 0, rb, order.clamp(min=1))
            oidx = opener.clamp(min=0)
            self._add(self.free, cidx, -(torch.where(closing, cost - 1, torch.zeros_like(cost))))
            self._add(self.free, oidx, -(torch.where(closing & (rb > 1) & (order == 0), rb - 1, torch.zeros_like(rb))))
            self._put(self.bonded, oidx, self._g(self.bonded, oidx) | closing)
            # Kekule parity: an implicit (or written double) closure between aromatic atoms joins systems
            x_arom, o_arom = self._g(self.aromatic, cidx), self._g(self.aromatic, oidx) & (opener >= 0)
            explicit = (rb > 0) | (order > 0)
            both = closing & x_arom & o_arom
            written_double = both & explicit & (cost >= 2)
            dash_d = self.ring_dash | self._g(self.open_dash, d)
            merge = both & (~dash_d | written_double)
            self._put(self.wild, cidx, self._g(self.wild, cidx) | written_double)
            self._put(self.wild, oidx, self._g(self.wild, oidx) | written_double)
            self._put(self.exo, cidx, self._g(self.exo, cidx) | (closing & (cost == 2) & x_arom & ~o_arom))
            self._put(self.exo, oidx, self._g(self.exo, oidx) | (closing & (cost == 2) & o_arom & ~x_arom))
            old_sys, new_sys = self._g(self.comp, oidx), self._g(self.comp, cidx)
            comp = self.comp[:, :self.width]
            comp.copy_(torch.where(merge[:, None] & (comp == old_sys[:, None]) & (comp >= 0), new_sys[:, None], comp))
            self._add(self.to_come, cidx, -closing.long())   # the closer's ring bond is made
            k = self.n_closures.clamp(max=MAX_CLOSURES - 1)
            self.closures[rows, k] = torch.where(closing[:, None], torch.stack([self.cur, opener], 1),
                                                 self.closures[rows, k])
            self.n_closures += closing.long()
            self._link(rows, self.cur, opener, closing)  # and the opener's
            self._add(self.free, cidx, -(torch.where(opening, rb.clamp(min=1) - 1, torch.zeros_like(rb))))
            self._put(self.open_atom, d, torch.where(closing, torch.full_like(opener, -1),
                                                  torch.where(opening, self.cur, opener)))
            self._put(self.open_order, d, torch.where(closing, torch.zeros_like(order),
                                                   torch.where(opening, rb, order)))
            self._put(self.open_dash, d, torch.where(closing, False, torch.where(opening, self.ring_dash, self._g(self.open_dash, d))))
            self.ring_bond = torch.where(dig, torch.zeros_like(rb), self.ring_bond)
            self.ring_dash &= ~dig

        # the stack beside the machine's: pop, then push the rule's non-terminals with level and tag
        self.counts[rows, lhs] -= active.long()
        self.counts += t.pushes[rule] * active.long()[:, None]
        base = (sp - active.long())
        width = t.level_inc.shape[1]
        new_tag = torch.where(t.tag[rule] >= 0, t.tag[rule], tag[:, None])
        new_attr = (level[:, None] + t.level_inc[rule]) * TAGS + new_tag
        idx = (base[:, None] + torch.arange(width, device=self.dev)[None, :]).clamp(max=self.attr.shape[1] - 1)
        self.attr.scatter_(1, idx, new_attr)


def _charge_delta(kind, q):
    """What a charge q does to a bracket atom's valence, by the element's kind (SmilesSemantics.charge_kind):
    -q for B (-1), -|q| for C (0); for N, O, S, P and halogens (kind e, their valence electrons) the ion has
    e - q electrons: 8 - (e - q) bonds while e - q >= 4 (+q: [NH4+], [O-]), else e - q (N+2 is B-like,
    three bonds: +0 on N's three; RDKit refuses C[NH3+2])."""
    few = (kind > 0) & (kind - q < 4)
    return torch.where(few, 2 * kind - 8 - q,
                       torch.where(kind > 0, q, torch.where(kind == -1, -q, -q.abs())))


_SEMANTICS: dict = {}   # the layer of each grammar (its tables), built once


def semantics_for(grammar: Grammar) -> SmilesSemantics | None:
    """The semantic layer of a grammar: SMILES grammars have one, others (expressions) none."""
    if grammar.sha256 not in _SEMANTICS:
        try:
            _SEMANTICS[grammar.sha256] = SmilesSemantics(grammar)
        except ValueError:
            _SEMANTICS[grammar.sha256] = None
    return _SEMANTICS[grammar.sha256]


@torch.no_grad()
def _replay(grammar: Grammar, rules: torch.Tensor):
    """The stack machine stepped along true derivations ``rules`` [B, T] (padded with the padding rule):
    ([B, T, R] bool, what the three semantic tiers allow at each step -- all rules once a stack is empty --
    and the machine at the end)."""
    from .decoding import StackMachine

    r = rules.long()
    B, T = r.shape
    machine = StackMachine(grammar, B, T, r.device, semantics=semantics_for(grammar))
    out = torch.ones(B, T, grammar.n_rules, dtype=torch.bool, device=r.device)
    for step in range(T):
        if not bool((machine.sp > 0).any()):
            break
        ok, soft, kek = machine.semantic_state.mask(machine)
        out[:, step] = ok & soft & kek
        machine.force(r[:, step])
    return out, machine


def derivation_masks(grammar: Grammar, rules: torch.Tensor) -> torch.Tensor:
    """[N, T, R] bool: the rules the decoder may choose at each step of each true derivation ``rules``
    [N, T] (padded with the padding rule): the grammar's decoding mask of the step's left-hand side and all
    three semantic tiers, as StackMachine.choose applies them (a real molecule's derivation is never
    cornered, so every tier holds; padding steps allow the padding rule only). For training under the
    masks (SD-VAE's masked loss): ``masked_nll(..., allowed=)``."""
    r = rules.long()
    lhs = torch.as_tensor(grammar.rule_lhs, device=r.device)[r]
    return _replay(grammar, r)[0] & torch.as_tensor(grammar.decoding_mask, device=r.device)[lhs]


@torch.no_grad()
def admitted(grammar: Grammar, rules: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """[N] bool: whether the semantic masks allow every rule of each true derivation ``rules`` [N, T]
    (padded with the padding rule) and the finished molecule passes :meth:`SemanticState.broken`. A real
    molecule that is not admitted is a bug in the masks."""
    out = []
    # batches of similar lengths: each stops at its longest derivation, not at the longest of all
    order = (rules != grammar.padding_index).sum(1).argsort()
    rules = rules[order]
    for i in range(0, len(rules), batch):
        r = rules[i:i + batch].long()
        masks, machine = _replay(grammar, r)
        ok = masks.gather(2, r[..., None]).squeeze(2).all(1)   # (steps after a stack empties allow all)
        out.append(ok & ~machine.semantic_state.broken())
    if not out:
        return torch.zeros(0, dtype=torch.bool)
    return torch.empty_like(order, dtype=torch.bool).scatter_(0, order, torch.cat(out))
