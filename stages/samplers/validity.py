"""Which digits are still possible: the item-code table as a constraint on decoding.

A token v is allowed at position j of a partial code iff some real item has v at j together
with every digit already filled (and is not excluded for the row's user). With int64 code keys
(`radix`) that is a count: for every position set T the items are sorted by their digits on T,
so the items with given digits on T and v at j are one run found by binary search, and
`digit_counts` answers [R, V] counts with memory R·V, whatever the catalogue size. Without
int64 keys (codebooks too large to pack), an item-match mask [R, N] is built in row chunks so
that R·N·n stays below CHUNK.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from gdr_cli.errors import GdrError

CHUNK = 1 << 24
"""Upper bound on rows · items · digits handled at once."""


class CodeTable:
    """codes: [N, n] int64 item codes (row = item id); vocab_sizes: codebook size per position."""

    def __init__(self, codes: Tensor, vocab_sizes: list[int]):
        self.codes = codes.long()
        self.n_items, self.n_digits = codes.shape
        self.vocab_sizes = list(vocab_sizes)
        self.vmax = max(vocab_sizes)
        self._reps: Tensor | None = None
        self._group_key: Tensor | None = None
        self._rep_of: Tensor | None = None
        self._group_size: Tensor | None = None
        self.memo: dict = {}  # per-table results samplers reuse across calls (e.g. the first step's candidates)
        radix = torch.tensor([1, *vocab_sizes[:-1]], dtype=torch.float64).cumprod(0)
        self.radix = radix.long().to(codes.device) if float(radix[-1]) * vocab_sizes[-1] < 2**62 else None
        if self.radix is not None:  # one int64 key per code: item lookup by binary search
            self.keys, self.key_items = (self.codes * self.radix).sum(dim=1).sort()
            sets = (
                torch.arange(2**self.n_digits, device=codes.device)[:, None]
                >> torch.arange(self.n_digits, device=codes.device)
            ) & 1
            partial = (self.codes[None] * self.radix * sets[:, None, :]).sum(
                dim=-1
            )  # [2^n, N] key of the digits on set T
            self.part_keys, self.part_items = partial.sort(dim=1)  # items sorted by their digits on each set T

    def _row_chunk(self) -> int:
        return max(1, CHUNK // max(1, self.n_items * self.n_digits))

    def match(self, tokens: Tensor) -> Tensor:
        """Items consistent with the filled digits. tokens: [R, n] (-1 = free) -> [R, N] bool."""
        out = []
        for part in tokens.split(self._row_chunk()):
            eq = (part[:, None, :] == self.codes[None]) | (part[:, None, :] < 0)  # [r, N, n]
            out.append(eq.all(dim=-1))
        return torch.cat(out) if out else torch.zeros(0, self.n_items, dtype=torch.bool, device=tokens.device)

    def pairs(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """The (row, item) pairs where the item has every filled digit of the row -> (rows [M], items [M]).

        With int64 keys, the items matching a row are one contiguous run of the items sorted by
        their digits on the row's filled set (binary search per distinct set, ≤ 2^n of them), so the
        cost follows the number of pairs, not rows × catalogue.
        """
        if self.radix is None:
            return self.match(tokens).nonzero(as_tuple=True)
        return self._run_pairs(*self._runs(tokens))

    def _run_pairs(self, sets: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """The (row, item) pairs of each row's run (`_runs`) -> (rows [M], items [M])."""
        count = hi - lo
        rows = torch.repeat_interleave(torch.arange(len(lo), device=lo.device), count)
        within = torch.arange(len(rows), device=lo.device) - torch.repeat_interleave(count.cumsum(0) - count, count)
        return rows, self.part_items[sets[rows], lo[rows] + within]

    def _runs(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Each row's run of matching items in part_keys[its filled set] -> (set [R], lo [R], hi [R])."""
        sets = bits(tokens >= 0)  # [R]
        key = (tokens.clamp(min=0) * self.radix).sum(dim=1)  # [R]
        lo, hi = torch.zeros_like(key), torch.zeros_like(key)
        for t in sets.unique().tolist():  # distinct filled-position sets, not rows
            at = sets == t
            lo[at] = torch.searchsorted(self.part_keys[t], key[at])
            hi[at] = torch.searchsorted(self.part_keys[t], key[at], right=True)
        return sets, lo, hi

    def pair_counts(self, tokens: Tensor) -> Tensor:
        """How many items have every filled digit of each row: tokens [R, n] -> [R] int64 (no pairs built)."""
        if self.radix is None:
            return torch.cat(
                [self.match(part).sum(dim=1) for part in tokens.split(self._row_chunk())] + [tokens.new_zeros(0)]
            )
        _, lo, hi = self._runs(tokens)
        return hi - lo

    def allowed(self, tokens: Tensor, pairs: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Allowed token per position. tokens: [R, n] (and optionally their `pairs`) -> [R, n, V] bool."""
        rows, items = self.pairs(tokens) if pairs is None else pairs
        ok = torch.zeros(tokens.shape[0], self.n_digits, self.vmax, dtype=torch.bool, device=tokens.device)
        ok[rows[:, None], torch.arange(self.n_digits, device=tokens.device), self.codes[items]] = True
        return ok

    def allowed_if_few(self, tokens: Tensor) -> Tensor | None:
        """`allowed(tokens)` [R, n, V] bool when the rows' (row, item) pairs number at most R·V (after the
        first digits a beam matches a handful of items: one scatter instead of a binary search per
        (row, position, digit)), else None (then `digit_counts` keeps memory at R·V whatever the catalogue)."""
        if self.radix is None:
            return None
        runs = self._runs(tokens)
        if int((runs[2] - runs[1]).sum()) > tokens.shape[0] * self.vmax:
            return None
        return self.allowed(tokens, self._run_pairs(*runs))

    def digit_counts(self, tokens: Tensor, j: int, excluded: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """How many allowed items have each digit at position j and the row's other filled digits.

        tokens: [R, n] (-1 = free; position j is read as free); excluded: (row [E], item [E]) pairs
        of items not allowed for a row, or None -> [R, V] int64. Memory R·V (plus E·n), not R·N:
        one binary search per (row, digit) in the items sorted by their digits on (filled ∪ {j}).
        """
        r, v, dev = tokens.shape[0], self.vocab_sizes[j], tokens.device
        other = tokens.clone()
        other[:, j] = -1
        if self.radix is None:  # no int64 keys: count over a chunked item-match mask
            counts = torch.zeros(r, self.vmax, dtype=torch.long, device=dev)
            for lo in range(0, r, self._row_chunk()):
                match = self.match(other[lo : lo + self._row_chunk()])
                if excluded is not None:
                    at = (excluded[0] >= lo) & (excluded[0] < lo + len(match))
                    match[excluded[0][at] - lo, excluded[1][at]] = False
                counts[lo : lo + len(match)].scatter_add_(1, self.codes[:, j].expand(len(match), -1), match.long())
            return counts
        sets = bits(other >= 0) | (1 << j)  # [R] position set of each query
        query = (other.clamp(min=0) * self.radix).sum(dim=1)[:, None] + torch.arange(v, device=dev) * self.radix[
            j
        ]  # [R, v]
        counts = torch.zeros(r, self.vmax, dtype=torch.long, device=dev)
        for t in sets.unique().tolist():  # distinct position sets (≤ 2^n), each a sorted key table
            at = (sets == t).nonzero().squeeze(1)
            keys = self.part_keys[t]
            counts[at, :v] = torch.searchsorted(keys, query[at], right=True) - torch.searchsorted(keys, query[at])
        if excluded is not None and len(excluded[0]):  # excluded items with the row's other digits: not counted
            row, item = excluded
            code = self.codes[item]  # [E, n]
            fits = ((other[row] < 0) | (other[row] == code)).all(dim=1)
            counts.index_put_((row[fits], code[fits, j]), torch.full_like(row[fits], -1), accumulate=True)
        return counts

    def allowed_at(self, match: Tensor, j: int) -> Tensor:
        """Allowed tokens at position j given an item-match mask [R, N] -> [R, V] bool."""
        counts = torch.zeros(match.shape[0], self.vmax, device=match.device)
        counts.scatter_add_(1, self.codes[:, j].expand(match.shape[0], -1), match.float())
        return counts > 0

    def restrict(self, logp: Tensor, tokens: Tensor, pairs: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Renormalise log-probs over the allowed tokens. logp: [R, n, V], tokens: [R, n] -> [R, n, V]."""
        ok = self.allowed(tokens, pairs)
        out = torch.log_softmax(logp.masked_fill(~ok, float("-inf")), dim=-1)
        return torch.where(ok, out, torch.full_like(out, float("-inf")))

    def restricted_digits(self, logp: Tensor, rows: Tensor, items: Tensor) -> Tensor:
        """`restrict` read only where it is needed: the renormalised log-prob of each pair's item digits.

        logp: [R, n, V]; (rows, items): [M] pairs from `pairs` -> [M, n]. The allowed tokens of
        (row, j) are the digits its paired items have at j, so the normaliser is a log-sum-exp over
        the distinct (row, j, digit) triples of the pairs: the cost follows M, not R·n·V.
        """
        r, n, v = logp.shape
        flat = logp.reshape(-1)
        at = (rows[:, None] * n + torch.arange(n, device=logp.device)) * v + self.codes[items]  # [M, n]
        if 4 * at.numel() >= flat.numel():  # many pairs (e.g. all-masked rows): a dense mask is cheaper
            ok = torch.zeros(r * n * v, dtype=torch.bool, device=logp.device)
            ok[at.reshape(-1)] = True
            return torch.log_softmax(logp.masked_fill(~ok.view(r, n, v), float("-inf")), dim=-1).reshape(-1)[at]
        uniq = torch.unique(at)  # [U] distinct allowed (row, j, digit)
        value, group = flat[uniq], uniq // v
        top = torch.full((r * n,), float("-inf"), device=logp.device).scatter_reduce(0, group, value, "amax")
        total = torch.zeros(r * n, device=logp.device).index_add_(0, group, (value - top[group]).exp())
        norm = top + total.log()  # [R*n] log of the allowed mass (-inf where nothing is allowed)
        return flat[at] - norm[at // v]

    def item_of(self, tokens: Tensor) -> Tensor:
        """Item id of each complete code, -1 where no item has it. tokens: [R, n] -> [R] int64."""
        if self.radix is not None:
            key = (tokens.clamp(min=0) * self.radix).sum(dim=1)  # [R]
            pos = torch.searchsorted(self.keys, key).clamp(max=self.n_items - 1)
            hit = (self.keys[pos] == key) & (tokens >= 0).all(dim=1)
            return torch.where(hit, self.key_items[pos], torch.full_like(key, -1))
        out = []
        for part in tokens.split(self._row_chunk()):
            eq = (part[:, None, :] == self.codes[None]).all(dim=-1)  # [r, N]
            out.append(
                torch.where(eq.any(dim=1), eq.float().argmax(dim=1), torch.full_like(eq[:, 0], -1, dtype=torch.long))
            )
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=tokens.device)

    def representatives(self) -> Tensor:
        """[2^n, N] bool: item c is the first item with its digits on position set T (bit mask T).

        Lets a beam enumerate one candidate per distinct partial code instead of one per item.
        """
        if self._reps is None:
            self._build_groups()
        return self._reps  # type: ignore[return-value]

    def group_key(self) -> Tensor:
        """[2^n, N] int64: a key of the set of items that share item c's digits on position set T.

        Two partial codes with the same key can complete to exactly the same items (a key is a
        sum of fixed random 62-bit weights of the set's members, so unequal sets collide with
        negligible probability); beams reaching them by different fill orders are one candidate.
        """
        if self._group_key is None:
            self._build_groups()
        return self._group_key  # type: ignore[return-value]

    def rep_of(self) -> Tensor:
        """[2^n, N] int64: the first item (lowest id) with item c's digits on position set T."""
        if self._rep_of is None:
            self._build_groups()
        return self._rep_of  # type: ignore[return-value]

    def group_size(self) -> Tensor:
        """[2^n, N] int64: how many items share item c's digits on position set T."""
        if self._group_size is None:
            self._build_groups()
        return self._group_size  # type: ignore[return-value]

    def _build_groups(self) -> None:
        """For every position set T, group items by their digits on T: first member, size and set key."""
        n, ids, dev = self.n_digits, torch.arange(self.n_items, device=self.codes.device), self.codes.device
        weight = torch.randint(0, 2**62, (self.n_items,), generator=torch.Generator().manual_seed(0)).to(dev)
        reps = torch.zeros(2**n, self.n_items, dtype=torch.bool, device=dev)
        keys = torch.zeros(2**n, self.n_items, dtype=torch.long, device=dev)
        rep_of = torch.zeros(2**n, self.n_items, dtype=torch.long, device=dev)
        size = torch.zeros(2**n, self.n_items, dtype=torch.long, device=dev)
        for t in range(2**n):  # once per table, 2^n ≤ 256 position sets
            if self.radix is not None:  # groups = runs of equal keys in the sorted partial keys: O(N), no row sort
                keys_t, items_t = self.part_keys[t], self.part_items[t]
                start = torch.ones_like(keys_t, dtype=torch.bool)
                start[1:] = keys_t[1:] != keys_t[:-1]
                inverse = torch.empty_like(items_t).scatter_(
                    0, items_t, start.long().cumsum(0) - 1
                )  # group of each item
                counts = torch.bincount(inverse)
            else:
                keep = torch.tensor([(t >> j) & 1 for j in range(n)], dtype=torch.bool, device=dev)
                _, inverse, counts = torch.unique(self.codes * keep, dim=0, return_inverse=True, return_counts=True)
            first = torch.full((len(counts),), self.n_items, device=dev).scatter_reduce(0, inverse, ids, reduce="amin")
            reps[t, first] = True
            rep_of[t], size[t] = first[inverse], counts[inverse]
            keys[t] = torch.zeros(len(counts), dtype=torch.long, device=dev).index_add_(0, inverse, weight)[inverse]
        self._reps, self._group_key, self._rep_of, self._group_size = reps, keys, rep_of, size

    def parse_prefix(self, prefix: object) -> Tensor:
        """Digits fixed in advance: a dict {position: digit} or a list with -1 for free -> [n] int64.

        An out-of-range digit, or a prefix no item has, is a GdrError.
        """
        n = self.n_digits
        fixed = torch.full((n,), -1, dtype=torch.long)
        if prefix is None:
            return fixed.to(self.codes.device)
        if isinstance(prefix, dict):
            items = list(prefix.items())
        elif isinstance(prefix, list | tuple):
            if len(prefix) != n:
                raise GdrError(
                    f"prefix has {len(prefix)} digits but codes have {n}", fix="give one value per digit, -1 for free"
                )
            items = list(enumerate(prefix))
        else:
            raise GdrError(f"bad prefix {prefix!r}", fix='give {"0": 17} or a list like [17, -1, -1, -1]')
        for key, value in items:
            try:
                j, v = int(key), int(value)
            except (TypeError, ValueError):
                raise GdrError(
                    f"bad prefix entry {key!r}: {value!r}", fix="positions and digits are integers"
                ) from None
            if not 0 <= j < n:
                raise GdrError(f"prefix position {j} out of range", fix=f"positions are 0..{n - 1}")
            if v != -1 and not 0 <= v < self.vocab_sizes[j]:
                raise GdrError(
                    f"prefix digit {v} at position {j} out of range",
                    fix=f"digits there are 0..{self.vocab_sizes[j] - 1}",
                )
            fixed[j] = v
        fixed = fixed.to(self.codes.device)
        if not int(self.pair_counts(fixed[None])[0]):
            shown = {j: int(v) for j, v in enumerate(fixed.tolist()) if v >= 0}
            raise GdrError(
                f"no item has the prefix {shown}",
                fix="fix digits that some item's code has (see the ID set's codes.parquet)",
            )
        return fixed


def subsets(n: int, size: int, device: torch.device | None = None) -> Tensor:
    """All position sets of `size` among n positions -> [P, n] bool (P = C(n, size))."""
    rows = [[j in s for j in range(n)] for s in itertools.combinations(range(n), size)]
    return torch.tensor(rows, dtype=torch.bool, device=device).view(-1, n)


def bits(mask: Tensor) -> Tensor:
    """Bool position sets [..., n] -> int64 bit masks [...]."""
    return (mask.long() << torch.arange(mask.shape[-1], device=mask.device)).sum(dim=-1)
