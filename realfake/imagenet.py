"""ImageNet class lists from packaged files (no downloads): wnids, distinct names, IN-10/IN-100 subsets.

wnids come from timm (``timm/data/_info/imagenet_synsets.txt``, the 1000 ILSVRC-2012 classes in
label order), human-readable names from open_clip (``open_clip.IMAGENET_CLASSNAMES``), which has
two duplicated names; :func:`distinct_names` disambiguates them with timm's WordNet lemmas, because
a prompt "photo of missile" must not mean two classes.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path

#: ImageNette (Howard 2019): the 10 classes of IN-10, taken from the IN-1K train/val files.
IN10_WNIDS = (
    "n01440764 n02102040 n02979186 n03000684 n03028079 n03394916 n03417042 n03425413 n03445777 n03888257"
).split()

#: ImageNet-100 of CMC (Tian et al. 2020, github.com/HobbitLong/CMC issue 21), in the list's order.
IN100_WNIDS = (
    "n02869837 n01749939 n02488291 n02107142 n13037406 n02091831 n04517823 n04589890 n03062245 n01773797 "
    "n01735189 n07831146 n07753275 n03085013 n04485082 n02105505 n01983481 n02788148 n03530642 n04435653 "
    "n02086910 n02859443 n13040303 n03594734 n02085620 n02099849 n01558993 n04493381 n02109047 n04111531 "
    "n02877765 n04429376 n02009229 n01978455 n02106550 n01820546 n01692333 n07714571 n02974003 n02114855 "
    "n03785016 n03764736 n03775546 n02087046 n07836838 n04099969 n04592741 n03891251 n02701002 n03379051 "
    "n02259212 n07715103 n03947888 n04026417 n02326432 n03637318 n01980166 n02113799 n02086240 n03903868 "
    "n02483362 n04127249 n02089973 n03017168 n02093428 n02804414 n02396427 n04418357 n02172182 n01729322 "
    "n02113978 n03787032 n02089867 n02119022 n03777754 n04238763 n02231487 n03032252 n02138441 n02104029 "
    "n03837869 n03494278 n04136333 n03794056 n03492542 n02018207 n04067472 n03930630 n03584829 n02123045 "
    "n04229816 n02100583 n03642806 n04336792 n03259280 n02116738 n02108089 n03424325 n01855672 n02090622"
).split()

#: Subset name (dataset option ``subset``) -> its wnids; None = all 1000.
SUBSETS: dict[str, tuple[str, ...] | None] = {
    "in1k": None,
    "in10": tuple(IN10_WNIDS),
    "in100": tuple(IN100_WNIDS),
}


def _timm_info(name: str) -> str:
    import timm

    return (Path(timm.__file__).parent / "data" / "_info" / name).read_text()


def distinct_names(names: list[str], wnids: list[str], lemmas: dict[str, str]) -> list[str]:
    """``names`` with every duplicated name replaced by the first lemma of its synset when that
    differs, and any name still duplicated suffixed with its wnid. Unique names are unchanged."""
    counts = Counter(names)
    out = [
        lemmas.get(wnid, name).split(",")[0].strip() if counts[name] > 1 else name
        for name, wnid in zip(names, wnids, strict=True)
    ]
    counts = Counter(out)
    return [f"{name} ({wnid})" if counts[name] > 1 else name for name, wnid in zip(out, wnids, strict=True)]


@cache
def imagenet_classes() -> dict[str, str]:
    """``wnid -> distinct human-readable name`` for the 1000 ILSVRC-2012 classes, in label order."""
    from open_clip import IMAGENET_CLASSNAMES

    wnids = _timm_info("imagenet_synsets.txt").split()
    lemmas = dict(line.split("\t", 1) for line in _timm_info("imagenet_synset_to_lemma.txt").splitlines())
    names = distinct_names(list(IMAGENET_CLASSNAMES), wnids, lemmas)
    return dict(zip(wnids, names, strict=True))
