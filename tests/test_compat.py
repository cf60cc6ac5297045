"""Model files written by bpr_numpy 0.1.0 (before the redesign) load and answer as they did.

``tests/data/model-0.1.0*.npz`` were saved by commit c355215 (a plain model with raw ids and a
side-feature model, 40 users x 30 items); ``model-0.1.0.json`` holds what they answered then.
"""

import json
from pathlib import Path

import numpy as np

from bpr_numpy import BPR

DATA = Path(__file__).resolve().parent / "data"
EXPECTED = json.loads((DATA / "model-0.1.0.json").read_text())


def test_a_plain_model_file_of_0_1_0_loads_with_its_parameters_ids_and_rankings():
    model = BPR.load(DATA / "model-0.1.0.npz")
    params = {k: (np.dtype(v).name if isinstance(v, type) else v) for k, v in model.get_params().items()}
    # The parameters added since take their defaults.
    assert params == {**EXPECTED["plain"]["params"], "solver": "kernel", "batch_size": 64,
                      "init": "normal", "n_negatives": 1}
    assert model.item_bias is False and not model.item_biases.any()
    assert model.user_ids[3] == "u3" and model.item_ids[0] == 100
    assert model.recommend(np.arange(5), n=5)[0].tolist() == EXPECTED["plain"]["items"]


def test_a_side_feature_model_file_of_0_1_0_loads_and_trains_on():
    model = BPR.load(DATA / "model-0.1.0-features.npz")
    assert model.item_bias is True and model.item_embeddings is not None
    assert float(model.item_biases.astype(np.float64).sum()) == EXPECTED["features"]["bias_sum"]
    assert model.recommend(np.arange(5), n=5)[0].tolist() == EXPECTED["features"]["items"]
    items = model.user_items
    model.partial_fit(items, epochs=1)
    assert len(model.history_) == 4 and np.isfinite(model.item_factors).all()
