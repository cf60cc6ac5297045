"""Smoke test of an installed wheel (not the source tree): train, save, load, recommend, gradcheck.

Run by ``.ci/run`` with the interpreter of a fresh virtual environment holding only the wheel
and its dependencies, from a directory outside the repository, so that ``import bpr_numpy``
can only find the installed copy.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import bpr_numpy
from bpr_numpy import BPR, datasets, gradcheck, metrics

package = Path(bpr_numpy.__file__).resolve().parent
assert "site-packages" in package.parts, f"bpr_numpy imported from {package}, not from the installed wheel"
assert (package / "py.typed").is_file(), "the wheel lacks py.typed"

rng = np.random.default_rng(0)
taste = rng.normal(size=(200, 4)) @ rng.normal(size=(4, 120))
liked = taste > np.quantile(taste, 0.85, axis=1, keepdims=True)
held = liked & (rng.random(liked.shape) < 0.2)
train, test = sp.csr_matrix((liked & ~held).astype(np.float32)), sp.csr_matrix(held.astype(np.float32))

model = BPR(factors=8, epochs=20, threads=1, random_state=0).fit(train)
auc = metrics.auc(model, train, test)
assert auc > 0.8, f"held-out AUC {auc:.3f}: the installed model did not learn"
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "model.npz"
    model.save(path)
    loaded = BPR.load(path)
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    items, scores = loaded.recommend(0, 5)
    assert len(items) == 5 and not train[0, items].toarray().any(), "recommend returned a liked item"
    # The command line of the installed console script.
    data = Path(folder) / "pairs.csv"
    users, cols = train.nonzero()
    data.write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in zip(users, cols)))
    out = Path(folder) / "cli.npz"
    script = Path(sys.executable).parent / "bpr-numpy"
    subprocess.run([str(script), "train", "--data", str(data), "--epochs", "2", "--threads", "1", "--quiet",
                    "--save", str(out)], check=True, capture_output=True)
    assert out.is_file(), "bpr-numpy train wrote no model"
result = gradcheck(factors=4, random_state=0)  # the built-in gradient against finite differences
assert result.passed, result
assert datasets.synthetic_small().matrix.nnz > 0
print(f"wheel smoke test passed: bpr_numpy {bpr_numpy.__version__} from {package}; held-out AUC {auc:.3f}; "
      f"gradcheck max error {result.max_error:.2e}")
