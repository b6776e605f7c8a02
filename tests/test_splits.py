"""Patient-level splits: no patient in two splits, stratified, deterministic."""
import pandas as pd

from mammogan_tf.data.splits import assign_folds, assign_splits, patient_strata


def _table():
    rows = []
    for p in range(50):
        kind = "mass" if p < 10 else ("calcification" if p < 20 else "normal")
        for image in range(2):
            rows.append({"patient_id": f"p{p:02d}", "image_id": f"p{p:02d}-{image}",
                         "lesion_type": kind if image == 0 else "normal"})
    return pd.DataFrame(rows)


def test_splits_are_patient_level_stratified_and_deterministic():
    table = _table()
    assignment = assign_splits(table, (0.6, 0.2, 0.2), seed=4)
    assert assignment == assign_splits(table, (0.6, 0.2, 0.2), seed=4)
    assert assignment != assign_splits(table, (0.6, 0.2, 0.2), seed=5)
    assert set(assignment) == set(table["patient_id"])
    per_image = table["patient_id"].map(assignment)
    assert (per_image.groupby(table["patient_id"]).nunique() == 1).all()
    strata = patient_strata(table)
    counts = pd.crosstab(strata, pd.Series(assignment))
    assert counts.loc["mass"].tolist() == [2, 6, 2]  # columns test, train, val
    assert counts.loc["normal"].tolist() == [6, 18, 6]
    assert strata["p00"] == "mass" and strata["p30"] == "normal"


def test_folds_balance_each_class():
    table = _table()
    folds = assign_folds(table, 5, seed=0)
    assert sorted(set(folds.values())) == [f"fold{i}" for i in range(5)]
    strata = patient_strata(table)
    per_fold = pd.crosstab(strata, pd.Series(folds))
    assert (per_fold.loc["mass"] == 2).all() and (per_fold.loc["normal"] == 6).all()

