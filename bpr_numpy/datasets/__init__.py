"""Data for bpr_numpy: loaders, id maps, train/test splits and synthetic data.

Everything produces an :class:`Interactions`: a users x items CSR matrix
(float32, sorted unique column indices, only kept pairs stored) plus the
raw ids of its rows and columns, optional per-pair ratings/timestamps, side
tables, and a :class:`LoadSummary` counting everything read, merged and
dropped.

Loaders
    :func:`load_movielens_100k` (with the official ``u1``..``u5``/``ua``/``ub``
    splits), :func:`load_movielens` (100k/1M/10M/20M/25M/latest, detected
    from the files), :func:`load_delimited` (any delimited file, string or
    integer ids), :func:`load_lightgcn` / :func:`load_adjacency_list` (the
    ``user item item ...`` format of the LightGCN/NGCF benchmarks) and
    :func:`fetch_movielens` (verified download into a cache), and
    :func:`from_dataframe` (the columns of a pandas DataFrame, ids of any type). Directories
    and zip archives both work; nothing is extracted. :func:`detect_release`
    says which kind of data a folder or archive holds.
Id spaces
    Train and test must share ``user_ids``/``item_ids`` to be comparable:
    splits and paired loaders guarantee it; :func:`align` and
    :meth:`Interactions.reindex` fix it for data loaded separately.
Splits
    :func:`split_random`, :func:`split_leave_k_out` (seeded).
Synthetic data
    :func:`synthetic`, :func:`synthetic_small`, :func:`synthetic_benchmark`.

Importing this package is cheap: scipy and numba are imported, and the
numba parsers compiled (cached on disk), only when first used.
"""

from ._dataframe import from_dataframe
from ._delimited import load_adjacency_list, load_delimited, load_lightgcn
from ._detect import RELEASES, detect_release, release_files
from ._download import MOVIELENS_ARCHIVES, DatasetDownloadError, data_home, fetch_movielens
from ._id_space import align
from ._interactions import Interactions, LoadSummary
from ._movielens import ML100K_GENRES, ML100K_SPLITS, load_movielens, load_movielens_100k
from ._splits import split_leave_k_out, split_random
from ._synthetic import SYNTHETIC_PRESETS, PlantedTruth, synthetic, synthetic_benchmark, synthetic_small

__all__ = [
    "Interactions",
    "LoadSummary",
    "align",
    "load_movielens_100k",
    "load_movielens",
    "load_delimited",
    "from_dataframe",
    "load_lightgcn",
    "load_adjacency_list",
    "fetch_movielens",
    "detect_release",
    "release_files",
    "RELEASES",
    "data_home",
    "DatasetDownloadError",
    "MOVIELENS_ARCHIVES",
    "ML100K_SPLITS",
    "ML100K_GENRES",
    "split_random",
    "split_leave_k_out",
    "synthetic",
    "synthetic_small",
    "synthetic_benchmark",
    "PlantedTruth",
    "SYNTHETIC_PRESETS",
]
