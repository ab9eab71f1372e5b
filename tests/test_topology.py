"""Partition shapes (``lab.topology``): exactly which directed links each one cuts, for 3, 5
and 7 nodes, plus properties over arbitrary node sets (Hypothesis)."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab import topology as T
from lab.topology import Grid, LinkLatency

SIZES = [3, 5, 7]


def names(n: int) -> list[str]:
    return [f"n{i}" for i in range(1, n + 1)]


def sees(cuts: frozenset[tuple[str, str]], a: str, b: str) -> bool:
    return (a, b) not in cuts and (b, a) not in cuts


# --------------------------------------------------------------------------- basics


def test_ordered_sorts_naturally_and_drops_duplicates() -> None:
    assert T.ordered(["n10", "n2", "n1", "n2"]) == ["n1", "n2", "n10"]


@pytest.mark.parametrize("n", SIZES)
def test_all_links_is_every_ordered_pair(n: int) -> None:
    links = T.all_links(names(n))
    assert len(links) == n * (n - 1)
    assert all(a != b for a, b in links)


def test_majority() -> None:
    assert [T.majority(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 2, 3, 3, 4, 4]


# --------------------------------------------------------------------------- isolate


@pytest.mark.parametrize("n", SIZES)
def test_isolate_cuts_both_directions_of_every_link_of_the_node(n: int) -> None:
    ns = names(n)
    cuts = T.isolate("n2", ns)
    others = [x for x in ns if x != "n2"]
    assert cuts == {("n2", x) for x in others} | {(x, "n2") for x in others}
    assert len(cuts) == 2 * (n - 1)
    hears = T.hears(cuts, ns)
    assert hears["n2"] == {"n2"}
    assert all(hears[x] == set(others) for x in others)


def test_isolate_of_a_stranger_is_an_error() -> None:
    with pytest.raises(ValueError, match="n9"):
        T.isolate("n9", names(3))


@pytest.mark.parametrize("n", SIZES)
def test_random_isolate_isolates_one_node_chosen_by_the_seed(n: int) -> None:
    cuts = T.random_isolate(names(n), Random(4))
    assert len(cuts) == 2 * (n - 1)
    (victim,) = {x for x in names(n) if all(x in link for link in cuts)}
    assert cuts == T.isolate(victim, names(n))
    assert cuts == T.random_isolate(names(n), Random(4))


# --------------------------------------------------------------------------- halves


@pytest.mark.parametrize(("n", "minority", "expected"), [
    (3, ["n1"], 4), (5, ["n1", "n2"], 12), (7, ["n1", "n2", "n3"], 24)])
def test_halves_is_a_symmetric_minority_majority_split(n: int, minority: list[str],
                                                       expected: int) -> None:
    ns = names(n)
    cuts = T.halves(ns)
    majority = [x for x in ns if x not in minority]
    assert T.bisect(ns) == (minority, majority)
    assert len(cuts) == expected == 2 * len(minority) * len(majority)
    assert cuts == T.one_way(minority, majority) | T.one_way(majority, minority)
    assert T.is_symmetric(cuts)
    hears = T.hears(cuts, ns)
    assert all(hears[x] == set(minority) for x in minority)
    assert all(hears[x] == set(majority) for x in majority)


def test_halves_of_five_is_exactly_the_twelve_cross_links() -> None:
    assert T.halves(names(5)) == {
        ("n1", "n3"), ("n1", "n4"), ("n1", "n5"), ("n2", "n3"), ("n2", "n4"), ("n2", "n5"),
        ("n3", "n1"), ("n4", "n1"), ("n5", "n1"), ("n3", "n2"), ("n4", "n2"), ("n5", "n2")}


@pytest.mark.parametrize("n", SIZES)
def test_random_halves_splits_minority_and_majority_as_the_seed_says(n: int) -> None:
    ns = names(n)
    cuts = T.random_halves(ns, Random(11))
    assert len(cuts) == 2 * (n // 2) * (n - n // 2)
    assert T.is_symmetric(cuts)
    groups = {frozenset(v) for v in T.hears(cuts, ns).values()}
    assert sorted(len(g) for g in groups) == [n // 2, n - n // 2]
    assert cuts == T.random_halves(list(reversed(ns)), Random(11))
    assert len({T.random_halves(ns, Random(seed)) for seed in range(40)}) > 1


# --------------------------------------------------------------------------- majority ring


@pytest.mark.parametrize("n", SIZES)
def test_majority_ring_every_node_hears_a_different_majority(n: int) -> None:
    ns = names(n)
    cuts = T.majority_ring(ns)
    hears = T.hears(cuts, ns)
    for x, heard in hears.items():
        assert x in heard
        assert len(heard) == T.majority(n)
    assert len(set(hears.values())) == n  # no two nodes hear the same majority
    assert len(cuts) == n * (n - T.majority(n))


def test_majority_ring_of_five_sees_ring_neighbours_both_ways() -> None:
    cuts = T.majority_ring(names(5))
    assert T.is_symmetric(cuts)
    hears = T.hears(cuts, names(5))
    assert hears["n1"] == {"n5", "n1", "n2"}
    assert hears["n3"] == {"n2", "n3", "n4"}


@pytest.mark.parametrize("n", [3, 7])
def test_majority_ring_with_an_even_majority_is_one_way_as_jepsens(n: int) -> None:
    assert not T.is_symmetric(T.majority_ring(names(n)))


def test_majority_ring_of_three_is_a_one_way_cycle() -> None:
    assert T.majority_ring(names(3)) == {("n3", "n2"), ("n1", "n3"), ("n2", "n1")}


@pytest.mark.parametrize("n", SIZES)
def test_majority_ring_shuffled_by_the_seed_keeps_its_properties(n: int) -> None:
    ns = names(n)
    cuts = T.majority_ring(ns, Random(3))
    assert cuts == T.majority_ring(ns, Random(3))
    hears = T.hears(cuts, ns)
    assert all(len(v) == T.majority(n) for v in hears.values())
    assert len(set(hears.values())) == n


def test_majority_ring_needs_three_nodes() -> None:
    with pytest.raises(ValueError):
        T.majority_ring(names(2))


# --------------------------------------------------------------------------- bridge


@pytest.mark.parametrize(("n", "left", "middle", "right", "expected"), [
    (3, ["n1"], "n2", ["n3"], 2),
    (5, ["n1", "n2"], "n3", ["n4", "n5"], 8),
    (7, ["n1", "n2", "n3"], "n4", ["n5", "n6", "n7"], 18)])
def test_bridge_joins_two_sides_through_one_node(n: int, left: list[str], middle: str,
                                                 right: list[str], expected: int) -> None:
    ns = names(n)
    cuts = T.bridge(ns)
    assert len(cuts) == expected
    assert T.untouched(cuts, ns) == [middle]
    assert T.is_symmetric(cuts)
    assert all(sees(cuts, middle, x) for x in ns)  # the bridge reaches everybody
    assert all(not sees(cuts, a, b) and (a, b) in cuts and (b, a) in cuts
               for a in left for b in right)  # the sides cannot reach each other
    assert all(sees(cuts, a, b) for side in (left, right) for a in side for b in side)


@pytest.mark.parametrize("n", SIZES)
def test_bridge_shuffled_by_the_seed_has_one_bridge_node(n: int) -> None:
    ns = names(n)
    cuts = T.bridge(ns, Random(9))
    (middle,) = T.untouched(cuts, ns)
    assert all(sees(cuts, middle, x) for x in ns)
    assert cuts == T.bridge(ns, Random(9))


# --------------------------------------------------------------------------- one-way and leader


@pytest.mark.parametrize("n", SIZES)
def test_one_way_cuts_only_one_direction(n: int) -> None:
    ns = names(n)
    src, dst = ns[:1], ns[1:]
    cuts = T.one_way(src, dst)
    assert cuts == {("n1", x) for x in dst}
    assert not T.is_symmetric(cuts)
    assert T.reverse(cuts).isdisjoint(cuts)
    assert T.symmetric(cuts) == cuts | T.reverse(cuts)


def test_one_way_never_cuts_a_node_from_itself() -> None:
    assert T.one_way(["n1", "n2"], ["n2", "n3"]) == {("n1", "n2"), ("n1", "n3"), ("n2", "n3")}


@pytest.mark.parametrize("n", SIZES)
def test_leader_can_send_but_not_receive(n: int) -> None:
    ns = names(n)
    cuts = T.leader_cannot_receive("n2", ns)
    assert cuts == {(x, "n2") for x in ns if x != "n2"}
    hears = T.hears(cuts, ns)
    assert hears["n2"] == {"n2"}
    assert all("n2" in hears[x] for x in ns)


@pytest.mark.parametrize("n", SIZES)
def test_leader_can_receive_but_not_send(n: int) -> None:
    ns = names(n)
    cuts = T.leader_cannot_send("n2", ns)
    assert cuts == {("n2", x) for x in ns if x != "n2"}
    assert cuts == T.reverse(T.leader_cannot_receive("n2", ns))
    hears = T.hears(cuts, ns)
    assert hears["n2"] == set(ns)
    assert all(hears[x] == set(ns) - {"n2"} for x in ns if x != "n2")


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("n", SIZES)
def test_complement_keeps_only_what_the_cuts_removed(n: int) -> None:
    ns = names(n)
    cuts = T.isolate("n1", ns)
    rest = T.complement(cuts, ns)
    assert rest.isdisjoint(cuts)
    assert rest | cuts == T.all_links(ns)
    assert T.complement(rest, ns) == cuts


def test_components_cut_every_link_between_groups() -> None:
    cuts = T.components([["n1"], ["n2", "n3"], ["n4"]])
    hears = T.hears(cuts, names(4))
    assert hears == {"n1": {"n1"}, "n2": {"n2", "n3"}, "n3": {"n2", "n3"}, "n4": {"n4"}}


def test_components_refuse_overlapping_groups() -> None:
    with pytest.raises(ValueError, match="n2"):
        T.components([["n1", "n2"], ["n2", "n3"]])


# --------------------------------------------------------------------------- grid


def test_grid_of_three_sites_has_fast_local_and_slow_remote_links() -> None:
    ns = names(5)
    grid = Grid.build(ns, Random(1), (2, 2, 1))
    assert grid.sites == (("n1", "n2"), ("n3", "n4"), ("n5",))
    assert set(grid.links) == T.all_links(ns)
    for (a, b), lat in grid.links.items():
        if grid.site_of(a) == grid.site_of(b):
            assert lat == LinkLatency(0, 0)
        else:
            assert 30 <= lat.latency_ms <= 80
            assert lat.jitter_ms == round(lat.latency_ms * 0.1)
            assert grid.links[(b, a)] == lat  # one WAN path per pair of sites
            # every link between the same two sites is in the same class
            assert all(grid.links[(x, y)] == lat for x in grid.sites[grid.site_of(a)]
                       for y in grid.sites[grid.site_of(b)])
    classes = grid.classes()
    assert LinkLatency(0, 0) in classes
    assert classes[LinkLatency(0, 0)] == {("n1", "n2"), ("n2", "n1"), ("n3", "n4"), ("n4", "n3")}
    assert sum(len(v) for v in classes.values()) == 20
    assert grid == Grid.build(ns, Random(1), (2, 2, 1))


def test_grid_shuffled_sites_follow_the_seed() -> None:
    a = Grid.build(names(7), Random(5), (3, 2, 2), shuffle=True)
    b = Grid.build(names(7), Random(5), (3, 2, 2), shuffle=True)
    assert a == b
    assert sorted(x for s in a.sites for x in s) == sorted(names(7))
    assert [len(s) for s in a.sites] == [3, 2, 2]


def test_grid_sizes_must_split_the_nodes() -> None:
    with pytest.raises(ValueError, match="sizes"):
        Grid.build(names(5), Random(0), (2, 2))


# --------------------------------------------------------------------------- properties

node_sets = st.lists(st.sampled_from([f"n{i}" for i in range(1, 12)] + ["a", "b", "zz"]),
                     min_size=3, max_size=9, unique=True)


def shapes(ns: list[str], seed: int) -> dict[str, frozenset[tuple[str, str]]]:
    return {
        "isolate": T.isolate(ns[0], ns),
        "random_isolate": T.random_isolate(ns, Random(seed)),
        "halves": T.halves(ns),
        "random_halves": T.random_halves(ns, Random(seed)),
        "majority_ring": T.majority_ring(ns, Random(seed)),
        "bridge": T.bridge(ns, Random(seed)),
        "one_way": T.one_way(ns[:2], ns[1:]),
        "leader_cannot_receive": T.leader_cannot_receive(ns[-1], ns),
        "leader_cannot_send": T.leader_cannot_send(ns[-1], ns),
        "symmetric": T.symmetric(T.one_way(ns[:2], ns[1:])),
    }


SYMMETRIC = {"isolate", "random_isolate", "halves", "random_halves", "bridge", "symmetric"}


@given(node_sets, st.integers(0, 2**32))
def test_no_shape_cuts_a_node_from_itself_or_names_a_stranger(ns: list[str], seed: int) -> None:
    for name, cuts in shapes(ns, seed).items():
        assert all(a != b for a, b in cuts), name
        assert cuts <= T.all_links(ns), name


@given(node_sets, st.integers(0, 2**32))
def test_symmetric_shapes_are_closed_under_reversal(ns: list[str], seed: int) -> None:
    for name, cuts in shapes(ns, seed).items():
        if name in SYMMETRIC:
            assert T.reverse(cuts) == cuts, name
    if T.majority(len(ns)) % 2 == 1:
        assert T.is_symmetric(T.majority_ring(ns, Random(seed)))


@given(node_sets, st.integers(0, 2**32), st.randoms(use_true_random=False))
def test_same_seed_same_shapes_whatever_the_input_order(ns: list[str], seed: int,
                                                        shuffler: Random) -> None:
    shuffled = list(ns)
    shuffler.shuffle(shuffled)
    assert shapes(ns, seed) == shapes(list(ns), seed)
    for name in ("random_isolate", "random_halves", "majority_ring", "bridge", "halves"):
        assert shapes(shuffled, seed)[name] == shapes(ns, seed)[name], name


@given(node_sets, st.integers(0, 2**32))
def test_majority_ring_and_bridge_properties_hold_for_any_nodes(ns: list[str],
                                                                seed: int) -> None:
    n = len(ns)
    hears = T.hears(T.majority_ring(ns, Random(seed)), ns)
    assert all(len(v) >= T.majority(n) and x in v for x, v in hears.items())
    assert len(set(hears.values())) == n
    cuts = T.bridge(ns, Random(seed))
    (middle,) = T.untouched(cuts, ns)
    groups = {frozenset(v) for x, v in T.hears(cuts, ns).items() if x != middle}
    assert len(groups) == 2 and all(middle in g for g in groups)
    a, b = groups
    assert all((x, y) in cuts for x in a - {middle} for y in b - {middle})
