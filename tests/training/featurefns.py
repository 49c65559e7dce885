"""An entrypoint of the feature-input job test: trains on the joined frame a feature service gave the job."""

from __future__ import annotations

from matih_lite import training


def churn(config):
    import pyarrow.parquet as pq
    from sklearn.linear_model import LogisticRegression

    frame = pq.read_table(training.input_path("features")).to_pandas()
    known = frame.dropna(subset=["conv_rate", "trips"])
    X = known[["conv_rate", "trips"]].astype("float64")
    model = LogisticRegression().fit(X, known["churned"])
    training.report({"rows": float(len(frame)), "train_rows": float(len(known))})
    training.log_model(model)
